"""`python -m minirt.bench gpu` (CUDA): minirt against Hugging Face transformers and the roofline.

One run measures every side on the same GPU, on a Qwen3-0.6B-shaped model (random bf16 weights
written as a Hugging Face checkpoint; nothing downloaded):
(a) decode tokens/s at batch 1..256: minirt with CUDA graphs, minirt eager, transformers
    `generate` (sdpa), and the compiled loop a user would write instead: transformers' static
    cache with a one-token step under torch.compile(mode="reduce-overhead") (CUDA graphs);
(b) offline throughput on 256 requests of random lengths: minirt vs transformers padded batches,
    and minirt's prompt steps with the piecewise graphs and without;
(c) the attention kernels against the copy bandwidth and SDPA's flash backend;
(d) a roofline table: decode step time vs (weight + KV bytes) / measured bandwidth;
plus a torch.profiler kernel table of one decode step, eager and graphed (notebook 05).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from tqdm.auto import tqdm

from minirt.bench.cli import add_out
from minirt.bench.roofline import ceilings, qwen3_06b_checkpoint
from minirt.bench.timing import gpu_device
from minirt.results import load_results, write_results
from minirt.workload import Workload, uniform

BATCHES = (1, 8, 32, 64, 128, 256)
PROMPT_LEN, NEW_TOKENS = 128, 256
# Eager systems step at 15-110 ms (host-bound): their per-step rate is measured over 64 new
# tokens instead, so the whole run stays within its 8 minutes. The (T(N) - T(1)) method makes
# the rate independent of N except for the slightly shorter contexts.
SLOW_NEW_TOKENS = 64


def _wall(fn: Callable[[], Any]) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def decode_rate(generate: Callable[[int], Any], batch: int, new_tokens: int) -> dict[str, float]:
    """Decode tokens/s the same way for every system: (T(N) - T(1)) covers N - 1 decode steps
    of the whole batch, so the prompt's prefill and the first token cancel out."""
    generate(2)  # warm-up (compilation, graphs' first replay, allocator)
    t1 = _wall(lambda: generate(1))
    tn = _wall(lambda: generate(new_tokens))
    step_s = (tn - t1) / (new_tokens - 1)
    return {"step_ms": step_s * 1e3, "tokens_per_s": batch / step_s, "total_s": tn}


def minirt_decode(llm, batch: int, graphs: bool) -> dict[str, Any]:
    from minirt import SamplingParams

    prompts = torch.randint(0, 256, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(1))

    def generate(n: int):
        p = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
        llm.generate(prompts.tolist(), p, use_tqdm=False)
        llm.block_manager.evict()  # every run starts cold: no prefix-cache hits across runs

    with nullcontext() if graphs else llm.runner.without_graphs():
        new = NEW_TOKENS if graphs else SLOW_NEW_TOKENS
        row = decode_rate(generate, batch, new)
    system = "minirt-graphs" if graphs else "minirt-eager"
    return {"name": "decode", "system": system, "batch": batch, "prompt_len": PROMPT_LEN,
            "new_tokens": new, **row}  # fmt: skip


def hf_decode(model, batch: int) -> dict[str, Any]:
    """transformers `generate` (eager, sdpa attention)."""
    ids = torch.randint(0, 256, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(1))
    ids = ids.cuda()

    def generate(n: int):
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, pad_token_id=0)  # fmt: skip

    row = decode_rate(generate, batch, SLOW_NEW_TOKENS)
    return {"name": "decode", "system": "hf-eager", "batch": batch, "prompt_len": PROMPT_LEN,
            "new_tokens": SLOW_NEW_TOKENS, **row}  # fmt: skip


def compiled_loop_decode(model, batch: int, mode: str = "reduce-overhead") -> dict[str, Any]:
    """The fast alternative a user would write (gpt-fast style): transformers' `StaticCache` and
    a one-token step under `torch.compile(mode="reduce-overhead", fullgraph=True)`, i.e. one CUDA
    graph per step. The prompt is prefilled eagerly; each step marks a new graph step and clones
    the token it returns (the graph's output buffer is reused by the next replay)."""
    from transformers import StaticCache

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (batch, PROMPT_LEN), generator=gen).to(model.device)
    cache = StaticCache(config=model.config, max_cache_len=PROMPT_LEN + NEW_TOKENS + 8)

    def forward(tokens, positions):
        out = model(input_ids=tokens, cache_position=positions, past_key_values=cache)
        return out.logits[:, -1].argmax(-1, keepdim=True)

    step = torch.compile(forward, mode=mode, fullgraph=True)

    @torch.no_grad()
    def generate(n: int) -> torch.Tensor:
        cache.reset()
        tokens = [forward(ids, torch.arange(PROMPT_LEN, device=ids.device))]
        for i in range(n - 1):
            torch.compiler.cudagraph_mark_step_begin()
            positions = torch.tensor([PROMPT_LEN + i], device=ids.device)
            tokens.append(step(tokens[-1], positions).clone())
        return torch.cat(tokens, dim=1)

    # compiles (and captures) before the timed runs, and checks the loop against `generate`
    ours = generate(8)
    theirs = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                            min_new_tokens=8, do_sample=False, pad_token_id=0)  # fmt: skip
    same = bool(torch.equal(ours, theirs[:, PROMPT_LEN:]))
    row = decode_rate(generate, batch, NEW_TOKENS)
    return {"name": "decode", "system": "hf-compiled-loop", "batch": batch,
            "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
            "greedy_equal_to_generate": same, **row}  # fmt: skip


def _compiled_or_error(model, batch: int) -> dict[str, Any]:
    try:
        return compiled_loop_decode(model, batch)
    except Exception as e:  # torch.compile is not guaranteed on every version pair
        return {"name": "decode", "system": "hf-compiled-loop", "batch": batch,
                "error": f"{type(e).__name__}: {str(e)[:300]}"}  # fmt: skip


PROMPT_SHAPES = ((1, 64), (4, 64), (1, 300), (16, 128), (8, 256), (1, 1024))


def prompt_steps(llm, reps: int = 5) -> list[dict[str, Any]]:
    """Prompt-only generate (one eager-shaped step: max_tokens=1) of n prompts of L tokens,
    median wall ms, with the piecewise graphs and with every kernel launched from Python."""
    from minirt import SamplingParams

    gen = torch.Generator().manual_seed(3)
    p = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    rows = []
    for mode in ("piecewise", "eager"):
        with nullcontext() if mode == "piecewise" else llm.runner.without_graphs():
            for n, length in PROMPT_SHAPES:
                prompts = torch.randint(0, 256, (n, length), generator=gen).tolist()
                times = []
                for _ in range(reps + 1):  # the first: warm-up
                    llm.block_manager.evict()
                    t = time.perf_counter()
                    llm.generate(prompts, p, use_tqdm=False)
                    if llm.device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append((time.perf_counter() - t) * 1e3)
                times = sorted(times[1:])
                rows.append({"name": "prompt_step", "mode": mode, "prompts": n,
                             "prompt_len": length, "ms": times[reps // 2],
                             "ms_min": times[0]})  # fmt: skip
    return rows


def minirt_offline(llm, work: Workload) -> dict[str, Any]:
    """The workload once, the prefix cache emptied first: an engine that ran these prompts
    before would skip their prefill (on the H100 that read 20,100 tokens/s for 19,100)."""
    prompts, params = work.prompts, work.params
    llm.block_manager.evict()
    secs = _wall(lambda: llm.generate(prompts, params, use_tqdm=False))
    out = sum(work.output_lens)
    return {"name": "offline", "system": "minirt-graphs", "requests": len(prompts),
            "input_tokens": work.num_prompt_tokens, "output_tokens": out, "seconds": secs,
            "output_tokens_per_s": out / secs,
            "cached_prompt_tokens": llm.last_stats.num_cached_tokens,
            "num_preemptions": llm.last_stats.num_preemptions}  # fmt: skip


def hf_offline(
    model, workload: Workload, batch: int = 64, deadline: float = float("inf")
) -> dict[str, Any]:
    """Padded batches (left padding), each run until its longest request is done; past
    `deadline` (time.perf_counter) no new batch starts and the row covers the batches run."""
    work = list(zip(workload.prompts, workload.output_lens, strict=True))
    secs, done = 0.0, []
    for i in tqdm(range(0, len(work), batch), desc="hf offline", leave=False):
        if done and time.perf_counter() > deadline:
            break
        chunk = work[i : i + batch]
        done += chunk
        width = max(len(p) for p, _ in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (p, _) in enumerate(chunk):
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        new = max(m for _, m in chunk)
        kw = dict(input_ids=ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=new,
                  min_new_tokens=new, do_sample=False, pad_token_id=0)  # fmt: skip
        secs += _wall(lambda kw=kw: model.generate(**kw))
    out = sum(m for _, m in done)
    return {"name": "offline", "system": f"hf-eager (padded batches of {batch})",
            "requests": len(done), "input_tokens": sum(len(p) for p, _ in done),
            "output_tokens": out, "seconds": secs, "output_tokens_per_s": out / secs}  # fmt: skip


def roofline_rows(decode_rows, weight_bytes: int, kv_per_token: int, copy_gbps: float):
    rows = []
    mean_ctx = PROMPT_LEN + NEW_TOKENS / 2
    for r in decode_rows:
        if r["system"] != "minirt-graphs":
            continue
        kv = r["batch"] * mean_ctx * kv_per_token
        floor_ms = (weight_bytes + kv) / (copy_gbps * 1e6)
        rows.append({"name": "roofline", "batch": r["batch"], "step_ms": r["step_ms"],
                     "weight_bytes": weight_bytes, "kv_bytes": kv, "floor_ms": floor_ms,
                     "fraction_of_floor": floor_ms / r["step_ms"]})  # fmt: skip
    return rows


def profile_step(llm, batch: int, graphs: bool, top: int = 12) -> dict[str, Any]:
    """torch.profiler over a few decode steps: which kernels run, how many launches, how long."""
    from torch.profiler import ProfilerActivity, profile

    from minirt import SamplingParams

    prompts = torch.randint(0, 256, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(2))
    p = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)
    with nullcontext() if graphs else llm.runner.without_graphs():
        llm.generate(prompts.tolist(), p, use_tqdm=False)  # warm-up
        llm.block_manager.evict()
        try:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                llm.generate(prompts.tolist(), p, use_tqdm=False)
        finally:
            llm.block_manager.evict()
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    kernels.sort(key=lambda e: -e.device_time_total)
    return {"name": "profile", "mode": "graphs" if graphs else "eager", "batch": batch,
            "steps": 9, "num_kernel_launches": sum(e.count for e in kernels),
            "kernel_time_ms": sum(e.device_time_total for e in kernels) / 1e3,
            "kernels": [{"name": e.key[:120], "count": e.count,
                         "cuda_us": e.device_time_total} for e in kernels[:top]]}  # fmt: skip


def measure(
    hf_compile_batches=(1, 64),
    progress: bool = True,
    compile_deadline_s: float = 360,
    offline_deadline_s: float = 420,
) -> list[dict[str, Any]]:
    from transformers import AutoModelForCausalLM

    from minirt import LLM
    from minirt.bench import kernels
    from minirt.kv import kv_cache_bytes_per_token

    started = time.perf_counter()
    rows = ceilings()
    copy_gbps = rows[0]["gb_per_s"]
    rows += kernels.measure(copy_gbps)
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        llm = LLM(folder, device="cuda", gpu_memory_utilization=0.6, max_num_batched_tokens=8192)
        decode = []
        for bs in tqdm(BATCHES, desc="minirt decode", disable=not progress):
            decode += [minirt_decode(llm, bs, graphs=True), minirt_decode(llm, bs, graphs=False)]
        rows += [profile_step(llm, 1, graphs=False), profile_step(llm, 1, graphs=True)]
        rows += prompt_steps(llm)
        work = uniform(num_requests=256, lo=100, hi=1024, seed=0)
        rows.append(minirt_offline(llm, work))
        weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
        kv_tok = kv_cache_bytes_per_token(llm.model_config, torch.bfloat16)
        del llm
        torch.cuda.empty_cache()

        hf = (
            AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.bfloat16, attn_implementation="sdpa"
            )
            .cuda()
            .eval()
        )
        for bs in tqdm(BATCHES, desc="hf decode", disable=not progress):
            decode.append(hf_decode(hf, bs))
        for bs in hf_compile_batches:  # compiling takes minutes, and may not work at all
            if time.perf_counter() - started > compile_deadline_s:
                decode.append({"name": "decode", "system": "hf-compiled-loop", "batch": bs,
                               "error": "skipped: the run's 8-minute budget"})  # fmt: skip
                continue
            decode.append(_compiled_or_error(hf, bs))
        # last, and cut to the batches that fit the budget (eager transformers at ~500 tok/s
        # takes ~280 s for all 256 requests on the H100)
        rows.append(hf_offline(hf, work, deadline=started + offline_deadline_s))
    rows += decode
    rows += roofline_rows(decode, weight_bytes, kv_tok, copy_gbps)
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    lines = []
    by = {(r.get("system"), r.get("batch")): r for r in rows if r["name"] == "decode"}
    for bs in BATCHES:
        cells = [f"batch {bs:>3}"]
        for system in ("minirt-graphs", "minirt-eager", "hf-eager", "hf-compiled-loop"):
            r = by.get((system, bs))
            if r and "tokens_per_s" in r:
                cells.append(f"{system} {r['tokens_per_s']:9.0f} tok/s")
        lines.append("  ".join(cells))
    for r in rows:
        if r["name"] == "prompt_step":
            lines.append(f"prompt step {r['mode']:>9} {r['prompts']:>2} x {r['prompt_len']:>4}: "
                         f"{r['ms']:.2f} ms")  # fmt: skip
        if r["name"] == "offline":
            lines.append(f"offline {r['system']}: {r['output_tokens_per_s']:.0f} output tok/s "
                         f"({r['seconds']:.1f} s)")  # fmt: skip
        elif r["name"] in ("decode_attention_kernel", "prefill_attention_kernel", "roofline"):
            lines.append(str({k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in r.items()}))  # fmt: skip
    return "\n".join(lines)


def run_hf_compile(out_dir, command: str, batches=(1, 64)) -> Any:
    """The compiled loop alone (transformers' static cache + torch.compile, topic "hf-compile"):
    compiling takes minutes, more than `gpu`'s 8-minute budget may leave after the baselines."""
    from transformers import AutoModelForCausalLM

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                                  attn_implementation="sdpa")  # fmt: skip
        hf = hf.cuda().eval()
        rows += [_compiled_or_error(hf, bs) for bs in batches]
    config = {"gpu": torch.cuda.get_device_name(), "model": "qwen3-0.6b shape, random bf16",
              "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS}  # fmt: skip
    return write_results("hf-compile", gpu_device(), rows, out_dir, command, config=config)


def run(out_dir, command: str) -> Any:
    name = torch.cuda.get_device_name()
    device = gpu_device()
    results = measure()
    config = {"gpu": name, "model": "qwen3-0.6b shape, random bf16", "prompt_len": PROMPT_LEN,
              "new_tokens": NEW_TOKENS, "batches": list(BATCHES)}  # fmt: skip
    return write_results("gpu", device, results, out_dir, command, config=config)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "gpu",
        help="(CUDA) minirt vs transformers: decode, offline throughput, kernels, roofline",
        description="Decode tokens/s at batch 1-256 (minirt with and without CUDA graphs, "
        "transformers eager and compiled), offline throughput on 256 random requests, the "
        "attention kernels against the copy bandwidth and SDPA flash, and a roofline table, on "
        "a Qwen3-0.6B-shaped model with random weights. Writes OUT/<gpu>/gpu-<date>.json.",
    )
    add_out(p)
    p.add_argument(
        "--hf-compile-only",
        action="store_true",
        help="only the compiled loop: transformers static cache + torch.compile "
        "(OUT/<gpu>/hf-compile-*.json)",
    )


def main(args, command: str) -> Any:
    if args.hf_compile_only:
        path = run_hf_compile(args.out, command)
        for row in load_results(path)["results"]:
            print(row)
    else:
        path = run(args.out, command)
        print(summary(load_results(path)["results"]))
    return path
