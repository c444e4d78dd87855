"""Finding hot spots: profile a decode step live, then read the H100's committed profile.

`profile_decode` runs the engine under torch.profiler (on whatever device it has) and returns
its busiest operators. The other helpers read committed JSON (`bench/results/h100/`): the kernel
table of a decode step eager vs graphed, the launch overhead graphs remove, Nsight Compute
metrics of the attention kernels, the launch-configuration sweeps, and `checklist`, which ties
each CUDA optimisation to one of those measurements. Notebook 05 (profiling) is built on them.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

KEY_NCU_METRICS = (
    "Duration", "DRAM Throughput", "Compute (SM) Throughput", "L2 Hit Rate",
    "Registers Per Thread", "Theoretical Occupancy", "Achieved Occupancy",
    "Block Limit Registers", "Block Limit Shared Mem", "Waves Per SM",
)  # fmt: skip


def profile_decode(llm, batch: int = 1, new_tokens: int = 4, top: int = 8) -> dict[str, Any]:
    """torch.profiler over `new_tokens` steps of a batch; the `top` operators by self time."""
    from torch.profiler import ProfilerActivity, profile

    from minirt import SamplingParams

    prompts = [[65 + i % 26] * 32 for i in range(batch)]
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    llm.block_manager.evict()
    cuda = llm.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        llm.generate(prompts, params, use_tqdm=False)
    llm.block_manager.evict()
    events = [e for e in prof.key_averages() if e.key.startswith(("aten::", "_", "void", "nvjet"))]
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events.sort(key=lambda e: -getattr(e, attr))
    total = sum(getattr(e, attr) for e in events)
    rows = [{"op": e.key[:48], "calls": e.count, "self_us": getattr(e, attr),
             "share": getattr(e, attr) / total} for e in events[:top]]  # fmt: skip
    return {"steps": new_tokens, "total_us": total, "rows": rows}


def _rows(record: dict | None, name: str) -> list[dict[str, Any]]:
    return [] if record is None else [r for r in record["results"] if r["name"] == name]


def kernel_table(gpu: dict | None, mode: str = "graphs", top: int = 10) -> list[dict[str, Any]]:
    """The kernels of a few decode steps at batch 1 (torch.profiler on the H100), per step."""
    for p in _rows(gpu, "profile"):
        if p["mode"] == mode:
            steps = p["steps"]
            return [{"kernel": k["name"][:44], "calls/step": k["count"] / steps,
                     "us/step": k["cuda_us"] / steps} for k in p["kernels"][:top]]  # fmt: skip
    return []


def launch_overhead(gpu: dict | None) -> list[dict[str, Any]]:
    """Decode step time eager vs replayed from a CUDA graph, per batch size."""
    by = {(r["system"], r["batch"]): r for r in _rows(gpu, "decode") if "step_ms" in r}
    out = []
    for (system, batch), r in sorted(by.items(), key=lambda kv: kv[0][1]):
        eager = by.get(("minirt-eager", batch))
        if system == "minirt-graphs" and eager:
            out.append({"batch": batch, "eager_ms": eager["step_ms"], "graphs_ms": r["step_ms"],
                        "speedup": eager["step_ms"] / r["step_ms"]})  # fmt: skip
    return out


def ncu_metrics(ncu: dict | None, metrics=KEY_NCU_METRICS) -> list[dict[str, Any]]:
    """One row per metric, one column per kernel."""
    table: dict[str, dict[str, Any]] = {}
    for r in _rows(ncu, "ncu_metric"):
        if r["metric"] in metrics:
            row = table.setdefault(r["metric"], {"metric": r["metric"], "unit": r["unit"]})
            row[r["kernel"]] = r["value"]
    return [table[m] for m in metrics if m in table]


STALL_PREFIX, STALL_SUFFIX = "smsp__average_warps_issue_stalled_", "_per_issue_active.ratio"


def warp_stalls(ncu: dict | None, kernel: str, top: int = 6) -> list[dict[str, Any]]:
    """What `kernel`'s warps waited for, largest first: for each stall reason, the warps stalled
    on it per issued instruction (Nsight Compute's Warp State Statistics). "long scoreboard" is
    a wait for global memory, "barrier" for __syncthreads, "math pipe throttle" a busy unit."""
    rows = [
        {"stall reason": r["metric"][len(STALL_PREFIX) : -len(STALL_SUFFIX)].replace("_", " "),
         "warps per issue": r["value"]}
        for r in _rows(ncu, "ncu_metric")
        if r["kernel"] == kernel and r["metric"].startswith(STALL_PREFIX)
        and r["metric"].endswith(STALL_SUFFIX) and isinstance(r["value"], float)
    ]  # fmt: skip
    total = sum(r["warps per issue"] for r in rows)
    for r in rows:
        r["share"] = r["warps per issue"] / total if total else 0.0
    return sorted(rows, key=lambda r: -r["warps per issue"])[:top]


def tuning(record: dict | None, name: str, **shape: int) -> list[dict[str, Any]]:
    """Every launch configuration tried for kernel row `name` at `shape` (e.g. batch=64)."""
    for r in _rows(record, name):
        if all(r.get(k) == v for k, v in shape.items()):
            return [c for c in r["configs"] if "ms" in c]
    return []


def _ncu(ncu, kernel: str, metric: str):
    for r in _rows(ncu, "ncu_metric"):
        if r["kernel"] == kernel and r["metric"] == metric:
            return r["value"]
    return None


def checklist(gpu: dict | None, ncu: dict | None) -> list[dict[str, str]]:
    """Each optimisation, where to see it, and what the committed H100 run measured."""
    if gpu is None:
        return []
    dec = {(r["batch"], r["context"]): r for r in _rows(gpu, "decode_attention_kernel")}
    pre = {r["seq_len"]: r for r in _rows(gpu, "prefill_attention_kernel")}
    lo = {r["batch"]: r for r in launch_overhead(gpu)}
    graphs = next((p for p in _rows(gpu, "profile") if p["mode"] == "graphs"), None)
    d, p = dec.get((64, 4096)), pre.get(4096)
    items = [
        ("coalescing", "decode attention reads each token's K/V head as one 256-byte row",
         d and f"{d['gb_per_s']:.0f} GB/s = {d['fraction_of_copy']:.0%} of a plain copy"),
        ("occupancy", "ncu: achieved occupancy vs DRAM throughput, decode kernel",
         ncu and f"{_ncu(ncu, '_decode_split_kernel', 'Achieved Occupancy')} % occupancy (limited "
         f"by {_ncu(ncu, '_decode_split_kernel', 'Registers Per Thread'):.0f} registers/thread) "
         f"already gives {_ncu(ncu, '_decode_split_kernel', 'DRAM Throughput')} % of DRAM peak"),
        ("shared-memory tiling", "prefill: a BLOCK_M x BLOCK_N tile reuses each K/V load",
         p and f"{p['tflop_per_s']:.0f} TFLOP/s at 4k = {p['ratio']:.2f}x SDPA flash "
         f"(best tile {p['best_config']['block_m']}x{p['best_config']['block_n']})"),
        ("split-K", "decode at batch 1: cut the context so all SMs read",
         dec.get((1, 4096)) and f"batch 1 x 4096: {dec[(1, 4096)]['ms'] * 1e3:.0f} us"),
        ("fusion", "launches per decode step (qkv / gate-up packed, norm+residual, qk-norm+RoPE)",
         graphs and f"{graphs['num_kernel_launches'] / graphs['steps']:.0f} kernels per step"),
        ("CUDA graphs", "batch-1 decode step, eager vs replayed",
         1 in lo and f"{lo[1]['eager_ms']:.1f} ms -> {lo[1]['graphs_ms']:.2f} ms "
         f"({lo[1]['speedup']:.0f}x)"),
    ]  # fmt: skip
    return [{"optimisation": a, "where": b, "measured (H100)": c or "not in this run"}
            for a, b, c in items]  # fmt: skip


def plot_kernel_time(gpu: dict, top: int = 8):
    """Kernel time per decode step at batch 1, by kernel: where the GPU time goes."""
    rows = kernel_table(gpu, "graphs", top)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh([r["kernel"][:36] for r in rows][::-1], [r["us/step"] for r in rows][::-1])
    ax.set_xlabel("GPU time per decode step (µs), batch 1, H100")
    ax.set_title("Where a graphed decode step spends its time")
    fig.tight_layout()
    return fig
