"""`python -m minirt.bench sched`: vLLM-like vs SGLang-like scheduling on shared-prefix workloads.

Every configuration runs every workload of `minirt.workload.standard` in one process, on
the same engine size: throughput, TTFT and TPOT p50/p99, the prefix-cache hit rate beside the
offline optimum (`minirt.tools.prefix`), and the per-step CPU / device time split from the trace.
CPU: the embedded model (`bench/results/cpu/sched-<date>.json`); CUDA: the Qwen3-0.6B shape with
random bf16 weights. Targets (issue 10): on the shared-prefix workloads radix + LPM reaches >= 1.5x
the throughput of FCFS without a prefix cache, with a hit rate within 5 points of the optimum.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from minirt.bench.cli import add_no_progress, add_out, progress
from minirt.results import DEFAULT_OUT, load_results, write_results
from minirt.tools.prefix import optimal_hit_rate
from minirt.workload import Workload, standard

TOPIC = "sched"

# name -> engine arguments; "baseline" is FCFS without a prefix cache.
# name -> engine arguments. "baseline" is FCFS without a prefix cache, decode-first; "radix-lpm"
# changes only the cache and the order (the target), the presets change everything.
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {"prefix_cache": None, "schedule_policy": "fcfs"},
    "baseline-prefill-first": {"prefix_cache": None, "batch_priority": "prefill-first"},
    "vllm": {"preset": "vllm"},
    "radix-lpm": {"prefix_cache": "radix", "schedule_policy": "lpm"},
    "radix-fcfs": {"prefix_cache": "radix", "schedule_policy": "fcfs"},
    "radix-dfs-weight": {"prefix_cache": "radix", "schedule_policy": "dfs-weight"},
    "sglang": {"preset": "sglang"},
    "sglang-no-overlap": {"preset": "sglang", "overlap_schedule": False},
}
SHARED = ("few_shot", "multi_turn", "branching")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def measure(llm, work: Workload, repeats: int = 1) -> dict[str, Any]:
    """`work` on `llm` from an empty cache, `repeats` times; the fastest run's numbers (other
    programs on a shared machine only ever slow a run down)."""
    from minirt import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=work.max_tokens, ignore_eos=True)
    best = None
    for _ in range(repeats):
        llm.block_manager.evict()  # every run starts from an empty prefix cache
        # As vLLM's engine does once it has started: the heap so far (model, pool, graphs, the
        # workload) leaves the garbage collector's scans. Without it a full collection in the
        # middle of a 0.3 s run walked ~300k objects (50-160 ms, more than a prefill step) at
        # a random moment; the radix configurations, which allocate more, took more of them.
        gc.collect()
        gc.freeze()
        try:
            t, cpu = time.perf_counter(), time.process_time()
            llm.generate(work.prompts, params, use_tqdm=False)
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        finally:
            gc.unfreeze()
        if best is None or wall < best[0]:
            best = (wall, cpu, llm.last_stats, list(llm.recorder.events))
    return _row(work, *best)


def _row(work: Workload, wall: float, process_s: float, stats, events) -> dict[str, Any]:
    steps = [e for e in events if e["type"] == "step"]
    reqs = [e for e in events if e["type"] == "request"]
    ttft = [r["first_token_s"] * 1e3 for r in reqs]
    tpot = [(r["finish_s"] - r["first_token_s"]) * 1e3 / max(1, r["num_output_tokens"] - 1)
            for r in reqs]  # fmt: skip
    cpu, device = sum(e["cpu_ms"] for e in steps), sum(e["device_ms"] for e in steps)
    return {
        "wall_s": wall,
        "process_s": process_s,  # CPU time of this process (threads summed)
        "output_tokens_per_s": stats.num_generated_tokens / wall,
        "requests_per_s": len(work.prompts) / wall,
        "ttft_ms_p50": _pct(ttft, 0.5), "ttft_ms_p99": _pct(ttft, 0.99),
        "tpot_ms_p50": _pct(tpot, 0.5), "tpot_ms_p99": _pct(tpot, 0.99),
        "hit_rate": stats.prefix_cache_hit_rate,
        "num_steps": stats.num_steps, "num_preemptions": stats.num_preemptions,
        "cpu_ms": cpu, "device_ms": device,
        # the share of the host's work the device did not wait for: 0 without overlap, -> 1
        # when every step's CPU part ran under the previous step's device part
        "cpu_hidden": max(0.0, (cpu + device - wall * 1e3) / max(cpu, 1e-9)),
    }  # fmt: skip


def run_all(model, engine: dict, workloads: list[Workload], configs=CONFIGS, progress=True,
            warmup=True, repeats=1, reuse=False) -> list[dict[str, Any]]:  # fmt: skip
    """Each configuration on each workload, from an empty cache: a fresh engine per pair, or
    (`reuse`, CUDA: building one captures its graphs) one per configuration, evicted between."""
    from minirt import LLM

    rows = []
    bar = tqdm(total=len(configs) * len(workloads), desc="sched", disable=not progress)
    for name in configs:
        llm = None
        for work in workloads:
            if llm is None:
                llm = LLM(model, trace=True, **engine, **configs[name])
                if warmup:  # first calls allocate and pick kernels: keep them out of the numbers
                    llm.generate(work.prompts[:2], use_tqdm=False)
            row = {"workload": work.name, "config": name, **measure(llm, work, repeats)}
            row["optimal_hit_rate"] = optimal_hit_rate(work.prompts)
            row["engine"] = {k: v for k, v in llm.config.to_dict().items() if k in _KNOBS}
            rows.append(row)
            bar.update()
            if not reuse:
                llm = None
                _release_device_memory()
        del llm
        _release_device_memory()
    bar.close()
    order = {w.name: i for i, w in enumerate(workloads)}  # rows by workload, then config
    rows.sort(key=lambda r: order[r["workload"]])
    base = {r["workload"]: r["output_tokens_per_s"] for r in rows if r["config"] == "baseline"}
    for r in rows:  # None when the run had no baseline configuration
        b = base.get(r["workload"])
        r["speedup_vs_baseline"] = r["output_tokens_per_s"] / b if b else None
    return rows


def _release_device_memory() -> None:
    """CUDA: the next engine sizes its pool from free memory; give the last one's back first."""
    import gc

    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


_KNOBS = ("prefix_cache", "schedule_policy", "batch_priority", "overlap_schedule",
          "enable_chunked_prefill", "max_num_batched_tokens", "block_size")  # fmt: skip


def run_cpu(out_dir=DEFAULT_OUT, command: str | None = None, progress: bool = True) -> Path:
    import torch

    engine = {"device": "cpu", "kv_cache_bytes": 512 * 16 * 8192, "max_num_batched_tokens": 512}
    works = standard(scale=1, vocab=256)
    # One thread: the embedded model's matrices are tiny, and on a shared machine OpenMP threads
    # waiting for each other made runs many times slower and their ratios noisy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = run_all(None, engine, works, progress=progress, repeats=2)
    finally:
        torch.set_num_threads(threads)
    config = {"model": "embedded target", "engine": engine, "torch_threads": 1,
              "workloads": [w.to_dict() for w in works]}  # fmt: skip
    return write_results(TOPIC, "cpu", rows, out_dir, command, config=config)


def run_cuda(out_dir=DEFAULT_OUT, command: str | None = None, progress: bool = True) -> Path:
    import torch

    from minirt.bench.roofline import qwen3_06b_checkpoint
    from minirt.bench.timing import gpu_device

    engine = {"device": "cuda", "gpu_memory_utilization": 0.6, "max_num_batched_tokens": 8192}
    works = standard(scale=8, vocab=151936, length=4)
    with tempfile.TemporaryDirectory() as folder:
        qwen3_06b_checkpoint(folder)
        rows = run_all(folder, engine, works, progress=progress, repeats=4, reuse=True)
    torch.cuda.empty_cache()
    config = {"model": "qwen3-0.6b shape, random bf16", "gpu": torch.cuda.get_device_name(),
              "engine": engine, "repeats": 4,
              "workloads": [w.to_dict() for w in works]}  # fmt: skip
    return write_results(TOPIC, gpu_device(), rows, out_dir, command, config=config)


def summary(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'workload':<11} {'config':<18} {'tok/s':>8} {'x base':>7} {'hit':>6} "
             f"{'optimum':>7} {'TTFT p50':>9} {'TPOT p50':>9} {'cpu hidden':>10}"]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r['workload']:<11} {r['config']:<18} {r['output_tokens_per_s']:>8.1f} "
            f"{r['speedup_vs_baseline']:>6.2f}x {r['hit_rate']:>6.1%} "
            f"{r['optimal_hit_rate']:>7.1%} {r['ttft_ms_p50']:>7.0f}ms {r['tpot_ms_p50']:>7.1f}ms "
            f"{r['cpu_hidden']:>10.0%}"
        )
    return "\n".join(lines)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "sched",
        help="vLLM-like vs SGLang-like scheduling (prefix caches, policies, overlap) by workload",
        description="Each preset (FCFS without a cache, vllm, sglang, and free combinations) on "
        "few-shot, multi-turn, branching and no-sharing workloads: throughput, TTFT/TPOT p50/p99, "
        "hit rate vs the offline optimum, CPU/device time split. CPU: the embedded model, "
        "OUT/cpu/sched-<date>.json; CUDA: Qwen3-0.6B shape, OUT/<gpu>/sched-<date>.json.",
    )
    add_out(p)
    p.add_argument("--cpu", action="store_true", help="the CPU run even when CUDA is present")
    add_no_progress(p)


def main(args, command: str) -> Path:
    """The CPU run unless a GPU is there (and --cpu not given)."""
    import torch

    run = run_cpu if args.cpu or not torch.cuda.is_available() else run_cuda
    path = run(args.out, command, progress=progress(args))
    print(summary(load_results(path)["results"]))
    return path
