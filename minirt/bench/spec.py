"""`python -m minirt.bench spec` (CUDA): what a verify costs, and what speculation buys end to end.

Two experiments, one JSON file (`<out>/<gpu>/spec-<date>.json`):
- `cost_curve`: the time of one forward over `batch` sequences x `tokens` new tokens each
  (logits at every row, as a verify needs them) after `context_len` tokens of context — eager
  (`ms`, host launches included) and replayed from a CUDA graph (`gpu_ms`, the GPU alone; and
  `gpu_ms_expanded`, the same tokens as batch x tokens one-token rows, as the engine verifies)
  — for the Qwen3-0.6B-shaped target (random bf16 weights: time does not depend on their
  values) and for the embedded target and draft. `minirt.tools.spec.CostCurve.from_rows` reads
  these rows.
- `end_to_end`: generated tokens/s of the embedded pair, greedy, for each batch size, without
  speculation (k = 0; eager, and with CUDA graphs) and with k draft tokens, beside the acceptance
  rate and tokens per step the engine counted.
Targets (issue 7): >= 1.8x tokens/s at batch 1 over the same engine without speculation; the
batch where speculation stops paying, predicted by the cost model within one power of two.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from minirt.bench.cli import add_no_progress, add_out, progress
from minirt.sched import Row
from minirt.spec.decoder import _expand

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WORKLOADS = ("closed", "steady", "decode")
PAIR_BATCHES = (*BATCHES, 512)  # the trained pair still gains at 256 when the batch stays full
TOKENS = tuple(range(1, 10))


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _wall_ms(fn, reps: int) -> float:
    """Median wall time of fn() to the end of its GPU work: small models are bound by the host's
    launches, which CUDA events between two launches would not see."""
    fn()
    _sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def cost_curve(llm, model: str, batches=BATCHES, tokens=TOKENS, context_len: int = 256,
               reps: int = 10, progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """One eager forward per (batch, tokens) over sequences with `context_len` cached tokens."""
    runner, bm = llm.runner, llm.block_manager
    g = torch.Generator().manual_seed(0)
    rows = []
    cases = [(b, t) for b in batches for t in tokens]
    for b, t in tqdm(cases, desc=f"cost curve {model}", disable=not progress):
        seqs = []
        for i in range(b):
            ids = torch.randint(0, 256, (context_len + t,), generator=g).tolist()
            bm.allocate(-1 - i, [], context_len + t)  # no cache hits, no hashes
            seqs.append(Row(-1 - i, ids, context_len, t))
        batch = seqs
        wide = [r for s in seqs for r in _expand(s.seq_id, s.token_ids, context_len, t, True)]
        try:
            ms = _wall_ms(lambda batch=batch: runner.logits(batch), reps)
            gpu = torch.cuda.is_available()
            gpu_ms = _graph_ms(runner, batch, reps) if gpu else None
            gpu_ms_expanded = _graph_ms(runner, wide, reps) if gpu else None
        finally:
            for s in seqs:
                bm.free(s.seq_id)
        rows.append({"experiment": "cost_curve", "model": model, "batch": b, "tokens": t,
                     "context_len": context_len, "ms": ms, "gpu_ms": gpu_ms,
                     "gpu_ms_expanded": gpu_ms_expanded})  # fmt: skip
    return rows


@torch.inference_mode()
def _graph_ms(runner, batch: list[Row], reps: int) -> float:
    """The same forward's GPU time alone: captured once in a CUDA graph, replayed `reps` times
    between two CUDA events (no Python, no launch gaps: what the memory and the SMs cost)."""
    ids, pos, meta = runner.prepare(batch)
    model = runner.model
    model.compute_logits(model(ids, pos, meta))  # warm up: compile, pick cuBLAS kernels
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.compute_logits(model(ids, pos, meta))
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    del graph
    return start.elapsed_time(end) / reps


def prompts(n: int, length: int = 64) -> list[str]:
    """n snippets of Python source that ships with every Python (the embedded models were
    trained on code and prose; random bytes would be unfair to any draft)."""
    text = Path(json.__file__).read_text() + Path(tempfile.__file__).read_text()
    step = max(1, (len(text) - length) // n)
    return [text[i * step : i * step + length] for i in range(n)]


def end_to_end(batches=BATCHES, ks=(2, 4, 6), max_tokens: int = 128, device: str = "cuda",
               progress: bool = True, pair: tuple[str, str] = ("target", "draft"),
               name: str = "embedded", steady_load: int = 4,
               kv_cache_bytes: int = 8 * 2**30,
               workloads=None) -> list[dict[str, Any]]:  # fmt: skip
    """Generated tokens/s of each system at each batch size, on two workloads:
    - "closed": `batch` requests at once; the batch ends with its slowest sequence. Speculation
      makes sequences finish at different steps, so the last steps run a thinning batch.
    - "steady" (CUDA-graph systems only): `steady_load` x `batch` requests through `batch` slots
      (max_num_seqs = batch), so a finished sequence's slot is refilled at once and the batch
      stays full until the queue drains: what a server at that concurrency sees.
    """
    from minirt import LLM, SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    workloads = WORKLOADS if workloads is None else workloads
    systems = [(0, False), (max(ks), False)] if "closed" in workloads else []  # (k, graphs)
    if device == "cuda":
        systems += [(0, True)] + [(k, True) for k in ks]
    rows = []
    for k, graphs in tqdm(systems, desc="end to end", disable=not progress):
        spec = dict(speculative_model=pair[1], num_speculative_tokens=k) if k else {}
        kv = kv_cache_bytes if device == "cuda" else 2**30
        llm = LLM(pair[0], device=device, kv_cache_bytes=kv, enforce_eager=not graphs,
                  max_num_seqs=max(batches), **spec)  # fmt: skip
        llm.generate(prompts(4), SamplingParams(max_tokens=16), use_tqdm=False)  # warm-up
        runs = [("closed", 1, 2)] if "closed" in workloads else []
        runs += [("steady", steady_load, 1)] if graphs and "steady" in workloads else []
        if (
            graphs and "decode" in workloads
        ):  # the steps where the whole batch decodes: what the cost model predicts
            for b in batches:
                row = full_batch_decode(
                    llm, prompts(b), dataclasses.replace(params, max_tokens=256)
                )
                rows.append({"experiment": "end_to_end", "pair": name, "workload": "decode",
                             "batch": b, "requests": b, "k": k, "cuda_graphs": graphs,
                             **row})  # fmt: skip
        for (workload, load, reps), b in ((w, b) for w in runs for b in batches):
            llm.config.max_num_seqs = b  # b slots (the scheduler reads it every step)
            stats = []
            for _ in range(reps):  # the faster of two: the first may meet a compile or GC pause
                _sync()
                llm.generate(prompts(b * load), params, use_tqdm=False)
                stats.append(llm.last_stats)
            s = min(stats, key=lambda x: x.elapsed_s)
            rows.append({
                "experiment": "end_to_end", "pair": name, "workload": workload, "batch": b,
                "requests": b * load, "k": k, "cuda_graphs": graphs,
                "tokens_per_s": s.num_generated_tokens / s.elapsed_s,
                "acceptance_rate": s.acceptance_rate if k else None,
                "tokens_per_step": s.num_generated_tokens / b / max(1, s.num_steps - 1),
                "num_steps": s.num_steps, "elapsed_s": s.elapsed_s,
                "generated_tokens": s.num_generated_tokens,
            })  # fmt: skip
        del llm
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


TEMPERATURES = (0.0, 0.7, 1.0)


def alpha_sweep(pair: tuple[str, str] = ("target", "draft"), name: str = "embedded", k: int = 4,
                temperatures=TEMPERATURES, requests: int = 8, max_tokens: int = 128,
                device: str = "cuda", curve_rows=(), progress: bool = True,
                kv_cache_bytes: int = 2**30) -> list[dict[str, Any]]:  # fmt: skip
    """Batch-1 tokens/s with k draft tokens over the same engine without, at each sampling
    temperature. Exact rejection sampling keeps the target's distribution whatever the
    temperature, but the draft's guesses agree less often as both spread out: the per-token α
    falls, and the speedup with it. Each point carries α and, where the run measured the pair's
    cost curves (`curve_rows`: the target's and the draft's, models "<name>-target" and
    "<name>-draft"), the cost model's prediction at that α (`minirt.tools.spec.speedup`).
    `requests` prompts run one at a time (max_num_seqs = 1), each seeded."""
    from minirt import LLM, SamplingParams
    from minirt.tools.spec import alpha_from_acceptance_rate, host_overhead, speedup

    graphs = device == "cuda"
    curves = _curves(curve_rows, name, "gpu_ms_expanded" if graphs else "ms")  # as it verifies
    engines = {}
    for kk in (0, k):
        spec = dict(speculative_model=pair[1], num_speculative_tokens=kk) if kk else {}
        engines[kk] = LLM(pair[0], device=device, kv_cache_bytes=kv_cache_bytes, max_num_seqs=1,
                          enforce_eager=not graphs, **spec)  # fmt: skip
        engines[kk].generate(prompts(2), SamplingParams(max_tokens=8), use_tqdm=False)  # warm-up
    rows = []
    for temperature in tqdm(temperatures, desc="alpha sweep", disable=not progress):
        tps, stats = {}, {}
        for kk, llm in engines.items():
            params = [SamplingParams(temperature=temperature, max_tokens=max_tokens,
                                     ignore_eos=True, seed=i) for i in range(requests)]  # fmt: skip
            _sync()
            llm.generate(prompts(requests), params, use_tqdm=False)
            stats[kk] = llm.last_stats
            tps[kk] = stats[kk].num_generated_tokens / stats[kk].elapsed_s
        rate = stats[k].acceptance_rate
        alpha = alpha_from_acceptance_rate(rate, k)
        predicted = None
        if curves is not None:
            host = host_overhead(curves[0], {1: 1e3 / tps[0]}) if graphs else 0.0
            predicted = speedup(alpha, k, 1, *curves, host_ms=host)
        rows.append({"experiment": "alpha_sweep", "pair": name, "batch": 1, "k": k,
                     "temperature": temperature, "requests": requests, "cuda_graphs": graphs,
                     "acceptance_rate": rate, "alpha": alpha, "tokens_per_s": tps[k],
                     "plain_tokens_per_s": tps[0], "speedup": tps[k] / tps[0],
                     "predicted_speedup": predicted})  # fmt: skip
    del engines
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def _curves(rows, name: str, key: str):
    """(target, draft) CostCurves of pair `name` from cost_curve rows, timed by `key`; None when
    the rows lack either."""
    from minirt.tools.spec import CostCurve

    out = []
    for role in ("target", "draft"):
        model = f"{name}-{role}"
        mine = [{"batch": r["batch"], "tokens": r["tokens"], "ms": r[key]} for r in rows
                if r.get("experiment") == "cost_curve" and r["model"] == model]  # fmt: skip
        if not mine:
            return None
        out.append(CostCurve.from_rows(mine, f"{name}-{role}"))
    return tuple(out)


def full_batch_decode(llm, texts: list[str] | list[list[int]], params) -> dict[str, Any]:
    """Tokens/s over the steps in which every one of the len(texts) sequences decodes: all
    prompts are in, none has finished, no prompt chunk shares the step. Prefill steps, the tail
    of a batch thinning out and admissions are left out. Drives the engine step by step."""
    from minirt.sched import Sequence

    ids = [t if isinstance(t, list) else llm.tokenizer.encode(t) for t in texts]  # text or ids
    seqs = [Sequence(-1 - i, x, params) for i, x in enumerate(ids)]
    # Room for every decode's k lookahead slots *and* the prompts still waiting: with the default
    # budget, 512 decodes x (1 + 4) slots take all 2,048 tokens and the last prompts would wait
    # until others finish (the batch would never be full).
    budget = llm.config.max_num_batched_tokens
    llm.config.max_num_batched_tokens = budget + len(seqs) * (1 + llm.config.num_speculative_tokens)
    try:
        for seq in seqs:
            llm.scheduler.add(seq)
        tokens = steps = 0
        seconds, drafted0, accepted0 = 0.0, *llm._spec_counts()
        t = time.perf_counter()
        while llm.scheduler.has_unfinished():
            before = [len(s.output_token_ids) for s in seqs]
            full = min(before) > 0 and all(s.finish_reason is None for s in seqs)
            finished = llm.step()
            now = time.perf_counter()  # step() ends by reading the sampled tokens: GPU work is done
            if full and not finished:
                tokens += sum(len(s.output_token_ids) for s in seqs) - sum(before)
                steps, seconds = steps + 1, seconds + now - t
            t = now
    finally:
        llm.config.max_num_batched_tokens = budget
    drafted, accepted = llm._spec_counts()
    drafted, accepted = drafted - drafted0, accepted - accepted0
    if not steps:  # never the whole batch decoding at once (e.g. the pool or budget split it)
        return {"tokens_per_s": None, "tokens_per_step": None, "acceptance_rate": None,
                "num_steps": 0, "elapsed_s": 0.0, "generated_tokens": 0}  # fmt: skip
    return {"tokens_per_s": tokens / seconds, "tokens_per_step": tokens / len(seqs) / steps,
            "acceptance_rate": accepted / drafted if drafted else None, "num_steps": steps,
            "elapsed_s": seconds, "generated_tokens": tokens}  # fmt: skip


def run_pair(target: str, draft: str, out_dir, command: str, progress: bool = True,
             decode_only: bool = False) -> Path:  # fmt: skip
    """A trained pair of model folders (`python -m minirt.model.train target --size gpu-target`
    and `draft --size gpu-draft`): their cost curves and end-to-end tokens/s, as pair "gpu"."""
    from minirt import LLM
    from minirt.bench.timing import gpu_device
    from minirt.results import write_results

    rows, cards = [], {}
    for role, folder in (("target", target), ("draft", draft)):
        if not decode_only:
            llm = LLM(folder, device="cuda", enforce_eager=True, kv_cache_bytes=24 * 2**30)
            rows += cost_curve(llm, f"gpu-{role}", PAIR_BATCHES, reps=5, progress=progress)
            del llm
            torch.cuda.empty_cache()
        info = json.loads((Path(folder) / "training.json").read_text())
        cards[role] = {k: info.get(k) for k in ("size", "params", "command", "steps", "seconds",
                                                "last_loss", "evals", "device")}  # fmt: skip
        cards[role]["steps"] = info["args"]["steps"]
    rows += end_to_end(PAIR_BATCHES, ks=(2, 4), pair=(target, draft), name="gpu",
                       progress=progress, kv_cache_bytes=24 * 2**30,
                       workloads=("decode",) if decode_only else WORKLOADS)  # fmt: skip
    rows += alpha_sweep((target, draft), "gpu", curve_rows=rows, progress=progress,
                        kv_cache_bytes=4 * 2**30)  # fmt: skip
    config = {"gpu": torch.cuda.get_device_name(), "pair": cards,
              "end_to_end": "gpu pair, greedy, 64-character prompts of Python source, 128 new "
              "tokens each, ignore_eos; closed: batch requests at once; steady: 4 x batch "
              "requests through batch slots"}  # fmt: skip
    return write_results("spec", gpu_device(), rows, out_dir, command, config=config)


def run(out_dir, command: str, progress: bool = True) -> Path:
    from minirt import LLM
    from minirt.bench.roofline import qwen3_06b_checkpoint
    from minirt.bench.timing import gpu_device
    from minirt.results import write_results

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        llm = LLM(folder, device="cuda", enforce_eager=True, gpu_memory_utilization=0.5)
        rows += cost_curve(llm, "qwen3-0.6b", progress=progress)
        del llm
        torch.cuda.empty_cache()
    for name in ("target", "draft"):
        llm = LLM(name, device="cuda", enforce_eager=True, kv_cache_bytes=2**30)
        rows += cost_curve(llm, f"embedded-{name}", progress=progress)
        del llm
    rows += end_to_end(progress=progress)
    rows += alpha_sweep(curve_rows=rows, progress=progress)
    config = {
        "gpu": torch.cuda.get_device_name(),
        "cost_curve": "one forward, logits at every row, bf16, Triton kernels, context 256 "
        "tokens per sequence; ms: eager, wall time to the end of the GPU work (what the engine "
        "pays today); gpu_ms: the same forward replayed from a CUDA graph (the GPU alone)",
        "end_to_end": "embedded target + draft, greedy, 64-character prompts of Python source, "
        "128 new tokens each, ignore_eos; tokens_per_step excludes the prefill step; closed: "
        "batch requests at once; steady: 4 x batch requests through batch slots",
    }
    return write_results("spec", gpu_device(), rows, out_dir, command, config=config)


def summary(rows: list[dict[str, Any]]) -> str:
    """End-to-end tokens/s by batch: each system, and speculation's speedup over k = 0 (with
    CUDA graphs or without, as the row)."""
    e2e = [r for r in rows if r["experiment"] == "end_to_end" and r["tokens_per_s"]]

    def key(r):  # runs before the steady workload existed were all closed
        return r.get("workload", "closed"), r["batch"], r["cuda_graphs"]

    base = {key(r): r["tokens_per_s"] for r in e2e if r["k"] == 0}
    lines = [f"{'load':>6} {'batch':>5} {'k':>2} {'graphs':>6} {'tok/s':>9} {'vs k=0':>8} "
             f"{'alpha':>6}"]  # fmt: skip
    for r in e2e:
        alpha = f"{r['acceptance_rate']:.2f}" if r["acceptance_rate"] is not None else "-"
        x = r["tokens_per_s"] / base[key(r)]
        lines.append(f"{key(r)[0]:>6} {r['batch']:>5} {r['k']:>2} {r['cuda_graphs']!s:>6} "
                     f"{r['tokens_per_s']:>9.0f} {x:>7.2f}x {alpha:>6}")  # fmt: skip
    return "\n".join(lines)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "spec",
        help="(CUDA) speculative decoding: verify cost curves, tokens/s with and without",
        description="The cost of one forward over batch x tokens (1-256 x 1-9) for the "
        "Qwen3-0.6B-shaped target and the embedded pair, and end-to-end greedy tokens/s of the "
        "embedded pair with k = 0, 2, 4, 6 draft tokens. Writes OUT/<gpu>/spec-<date>.json.",
    )
    add_out(p)
    add_no_progress(p)
    p.add_argument(
        "--pair",
        nargs=2,
        metavar=("TARGET", "DRAFT"),
        help="instead: a trained target and draft folder (python -m minirt.model.train target "
        "--size gpu-target, draft --size gpu-draft): their curves and tokens/s as pair 'gpu'",
    )
    p.add_argument(
        "--decode-only",
        action="store_true",
        help="with --pair: only the full-batch decode workload",
    )


def main(args, command: str) -> Path:
    from minirt.results import load_results

    if args.pair:
        path = run_pair(
            *args.pair, args.out, command, progress=progress(args), decode_only=args.decode_only
        )
    else:
        path = run(args.out, command, progress=progress(args))
    print(summary(load_results(path)["results"]))
    return path
