"""`python -m minirt.bench moe`: what the MoE all-to-all costs, and grouped vs per-expert GEMMs.

CPU (no GPU, or --cpu): `all_to_all` rows time gloo's all_to_all_single between 2 and 4 local
processes against message size (fit with `minirt.tools.moe.fit_link`), and `ep_block` rows time
the phases of the expert-parallel block (route, dispatch, experts, combine) with one or two
micro-batches and BF16-sized or FP8 dispatch. Writes `<out>/cpu/moe-<date>.json`.
CUDA: `grouped_gemm` rows time Qwen3-30B-A3B's expert GEMMs (128 experts, top-8, hidden 2048,
expert width 768, bf16) for 16-4096 tokens: the Triton grouped GEMM (several tiles), a loop of
per-expert cuBLAS matmuls, torch._grouped_mm where this torch has it, and the fp32 reference;
`nccl_all_to_all` rows repeat the message-size sweep over NCCL when there are >= 2 GPUs.
Writes `<out>/<gpu>/moe-<date>.json`. Notebook 12 reads both.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist

from minirt.bench.cli import add_no_progress, add_out, int_list, progress
from minirt.bench.timing import cuda_median_ms
from minirt.moe.demo import Recipe, ep_worker
from minirt.moe.launch import run_ranks

SIZES = tuple(4**i * 1024 for i in range(8))  # 1 KiB .. 16 MiB sent by each rank
GPU_SIZES = tuple(4**i * 65536 for i in range(8))  # 64 KiB .. 1 GiB
EP_RECIPE = Recipe(hidden=256, intermediate=128, num_experts=16, top_k=4, num_tokens=256,
                   shared_intermediate=128, skew=0.25)  # fmt: skip
TOKENS = (16, 64, 256, 1024, 4096)
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): the first five were the first H100 run's
# (Triton's default 4 warps, 3 stages); the rest stream wider, deeper weight tiles (decode) or
# use larger tiles with 8 warps (prefill). At most ~150 KB of shared memory each.
TILES = ((16, 64, 64, 4, 3), (32, 64, 64, 4, 3), (64, 64, 32, 4, 3), (64, 128, 32, 4, 3),
         (128, 128, 32, 4, 3), (16, 128, 128, 4, 4), (16, 256, 64, 4, 4), (32, 128, 128, 4, 4),
         (64, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3))  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def all_to_all_worker(rank: int, world_size: int, sizes, reps: int, device: str = "cpu"):
    """Median seconds of all_to_all_single for each size (bytes this rank sends in total, an
    equal share to every rank, itself included)."""
    dev = torch.device(f"cuda:{rank}" if device == "cuda" else "cpu")
    out = []
    for size in sizes:
        n = max(world_size, size // 4 // world_size * world_size)  # fp32 values, even splits
        send, recv = torch.ones(n, device=dev), torch.empty(n, device=dev)
        dist.all_to_all_single(recv, send)  # warm-up: connections, buffers
        times = []
        for _ in range(reps):
            dist.barrier()
            _sync(dev)
            t = time.perf_counter()
            dist.all_to_all_single(recv, send)
            _sync(dev)
            times.append(time.perf_counter() - t)
        out.append(statistics.median(times))
    return out


def all_to_all_rows(worlds, sizes, reps: int, backend: str = "gloo") -> list[dict[str, Any]]:
    rows = []
    device = "cuda" if backend == "nccl" else "cpu"
    for world in worlds:
        per_rank = run_ranks(all_to_all_worker, world, (sizes, reps, device), backend=backend)
        for i, size in enumerate(sizes):
            s = max(r[i] for r in per_rank)  # the slowest rank ends the collective
            off_rank = size * (world - 1) / world  # what leaves each rank
            rows.append({"experiment": f"{backend}_all_to_all" if backend != "gloo"
                         else "all_to_all", "backend": backend, "world_size": world,
                         "bytes_per_rank": size, "ms": s * 1e3,
                         "gb_s": off_rank / s / 1e9})  # fmt: skip
    return rows


def ep_block_rows(worlds, reps: int = 5, recipe: Recipe = EP_RECIPE,
                  backend: str = "gloo") -> list[dict[str, Any]]:  # fmt: skip
    """Phase intervals of the expert-parallel block on every rank (its fastest repetition).

    A rank that finishes its experts early waits in the combine for the busiest one: with a
    skewed router the waiting shows up as combine time on the lightly loaded ranks.
    """
    rows = []
    # On GPUs also untimed phases: timing each phase waits for the device, overlap included.
    timings = (True, False) if backend == "nccl" else (True,)
    for world, mb, fp8, phase_times in itertools.product(worlds, (1, 2), (False, True), timings):
        opts = {"micro_batches": mb, "fp8_dispatch": fp8, "reps": reps, "gemm": "loop",
                "phase_times": phase_times}  # fmt: skip
        if backend == "nccl":  # rank r on GPU r, bf16, the Triton grouped GEMM
            opts |= {"device": "cuda", "dtype": torch.bfloat16, "gemm": "triton"}
        runs = run_ranks(ep_worker, world, (recipe, opts), backend=backend)
        stats = [r["stats"] for r in runs]
        rows.append({"experiment": "ep_block", "backend": backend,
                     "world_size": world, "micro_batches": mb,
                     "fp8_dispatch": fp8, "phase_times": phase_times,
                     "total_ms": max(max(p["end_ms"] for p in s["phases"])
                                     for s in stats),
                     "recv_rows": [sum(s["recv_rows"]) for s in stats],
                     "dispatch_bytes": [s["dispatch_bytes"] for s in stats],
                     "phases": [s["phases"] for s in stats]})  # fmt: skip
    return rows


def run_cpu(out_dir, command: str, worlds=(2, 4), sizes=SIZES, reps: int = 20,
            ep_reps: int = 5) -> Any:  # fmt: skip
    from minirt.results import write_results

    rows = all_to_all_rows(worlds, sizes, reps)
    rows += ep_block_rows(worlds, ep_reps)
    config = {"backend": "gloo over 127.0.0.1", "threads_per_rank": 1, "reps": reps,
              "ep_recipe": EP_RECIPE.to_dict(),
              "all_to_all": "median over reps of the slowest rank; bytes_per_rank: what each "
              "rank sends in total (an equal share to every rank, itself included); gb_s: the "
              "bytes leaving a rank / time"}  # fmt: skip
    return write_results("moe", "cpu", rows, out_dir, command, config=config)


# --------------------------------------------------------------------------------- CUDA part
def _torch_grouped_mm():
    """torch._grouped_mm (bf16, Hopper) when this torch has it, else None."""
    fn = getattr(torch, "_grouped_mm", None)
    if fn is None:
        return None
    return lambda x, w, offsets: fn(x, w, offs=offsets[1:].to(torch.int32))


def grouped_gemm_rows(tokens=TOKENS, reps: int = 20, tiles=TILES) -> list[dict[str, Any]]:
    """Qwen3-30B-A3B's two expert GEMMs (gate_up: 2048 -> 1536, down: 768 -> 2048) over the rows
    of `t` tokens routed uniformly at random to 8 of 128 experts, by each method."""
    from minirt.config import PRESETS
    from minirt.kernels.grouped_gemm import grouped_gemm, grouped_gemm_loop, grouped_gemm_ref
    from minirt.moe import sort_by_expert

    cfg, k, dev = PRESETS["qwen3-30b-a3b"], 8, torch.device("cuda")
    e, h, inter = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
    g = torch.Generator(device=dev).manual_seed(0)
    # Hugging Face layout ([E, out, in]) read through a transposed view, as minirt.moe does
    weights = {"gate_up": torch.randn(e, 2 * inter, h, device=dev, generator=g).bfloat16(),
               "down": torch.randn(e, h, inter, device=dev, generator=g).bfloat16()}  # fmt: skip
    methods = {}  # Triton first, the fp32 reference last: a failing call can't spoil the rest
    for bm, bn, bk, warps, stages in tiles:
        methods[f"triton_{bm}x{bn}x{bk}_w{warps}s{stages}"] = (
            lambda x, w, o, c=(bm, bn, bk, warps, stages): grouped_gemm(x, w, o, *c)
        )
    methods["loop"] = grouped_gemm_loop
    if (grouped_mm := _torch_grouped_mm()) is not None:
        methods["torch_grouped_mm"] = grouped_mm
    methods["ref"] = grouped_gemm_ref
    rows = []
    for t in tokens:
        logits = torch.randn(t, e, device=dev, generator=g)
        experts = torch.topk(logits, k, dim=-1).indices.reshape(-1)  # [t * k]
        order, offsets = sort_by_expert(experts, e)
        active = int((offsets[1:] > offsets[:-1]).sum())
        for name, w_hf in weights.items():
            w = w_hf.transpose(1, 2)  # [E, K, N] view
            x = torch.randn(t * k, w.shape[1], device=dev, generator=g).bfloat16()
            ref = grouped_gemm_ref(x, w, offsets).float()
            for method, fn in methods.items():
                row = {"experiment": "grouped_gemm", "gemm": name, "tokens": t, "rows": t * k,
                       "active_experts": active, "method": method, "K": w.shape[1],
                       "N": w.shape[2]}  # fmt: skip
                try:
                    out = fn(x, w, offsets).float()
                    row["rel_err"] = ((out - ref).norm() / ref.norm()).item()
                    row["ms"] = cuda_median_ms(lambda fn=fn, x=x, w=w, o=offsets: fn(x, w, o),
                                        reps if method != "ref" else 3)  # fmt: skip
                except Exception as exc:  # an unsupported layout or torch: record, go on
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                    rows.append(row)
                    continue
                flops = 2 * t * k * w.shape[1] * w.shape[2]
                wbytes = active * w.shape[1] * w.shape[2] * 2
                row.update(tflops=flops / row["ms"] / 1e9,
                           weight_gb_s=wbytes / row["ms"] / 1e6)  # fmt: skip
                rows.append(row)
    return rows


def block_rows(tokens=TOKENS, reps: int = 10) -> list[dict[str, Any]]:
    """The whole MoEBlock at Qwen3-30B-A3B's shape (route, sort, gather, both GEMMs, combine)."""
    from minirt.config import PRESETS
    from minirt.moe import MoEBlock

    torch.manual_seed(0)
    with torch.device("cuda"):  # initialise on the GPU: 2.4 GB of fp32 experts
        block = MoEBlock.from_config(PRESETS["qwen3-30b-a3b"]).bfloat16()
    rows = []
    for t in tokens:
        x = torch.randn(t, block.gate.in_features, device="cuda").bfloat16()
        with torch.no_grad():
            for gemm in ("triton", "loop"):
                ms = cuda_median_ms(lambda gemm=gemm, x=x: block(x, gemm=gemm), reps)
                rows.append({"experiment": "moe_block", "tokens": t, "gemm": gemm, "ms": ms})
    return rows


def run_cuda(out_dir, command: str, progress: bool = True) -> Any:
    from minirt.bench.timing import gpu_device
    from minirt.results import write_results

    rows = grouped_gemm_rows()
    rows += block_rows()
    n = torch.cuda.device_count()
    if n >= 2:
        worlds = sorted({2, n})
        rows += all_to_all_rows(worlds, GPU_SIZES, reps=20, backend="nccl")
        rows += ep_block_rows(worlds, reps=5, recipe=Recipe(2048, 768, 128, 8, 1024),
                              backend="nccl")  # fmt: skip
    config = {"gpu": torch.cuda.get_device_name(), "gpus": n, "dtype": "bfloat16",
              "shapes": "Qwen3-30B-A3B: 128 experts, top-8, hidden 2048, expert width 768; "
              "tokens routed by random logits (near-uniform load)",
              "timing": "CUDA events, median of reps; ms per call"}  # fmt: skip
    return write_results("moe", gpu_device(), rows, out_dir, command, config=config)


def summary(rows: list[dict[str, Any]]) -> str:
    lines = []
    a2a = [r for r in rows if r["experiment"].endswith("all_to_all")]
    if a2a:
        lines.append(f"{'backend':>8} {'ranks':>5} {'bytes/rank':>11} {'ms':>9} {'GB/s':>7}")
        lines += [f"{r['backend']:>8} {r['world_size']:>5} {r['bytes_per_rank']:>11} "
                  f"{r['ms']:>9.3f} {r['gb_s']:>7.2f}" for r in a2a]  # fmt: skip
    for r in (r for r in rows if r["experiment"] == "ep_block"):
        busy = [sum(p["end_ms"] - p["start_ms"] for p in ph if p["phase"] == "experts")
                for ph in r["phases"]]  # fmt: skip
        lines.append(f"ep_block ranks={r['world_size']} micro_batches={r['micro_batches']} "
                     f"fp8={r['fp8_dispatch']!s:5}: {r['total_ms']:6.2f} ms; rows per rank "
                     f"{r['recv_rows']}, experts ms per rank "
                     f"{[round(b, 1) for b in busy]}")  # fmt: skip
    gg = [r for r in rows if r["experiment"] == "grouped_gemm" and "ms" in r]
    for t in sorted({r["tokens"] for r in gg}):
        for name in ("gate_up", "down"):
            mine = {r["method"]: r["ms"] for r in gg if r["tokens"] == t and r["gemm"] == name}
            best = min((m for m in mine if m.startswith("triton")), key=mine.get, default=None)
            if best and "loop" in mine:
                lines.append(
                    f"tokens {t:>5} {name:>7}: {best} {mine[best]:.3f} ms, loop "
                    f"{mine['loop']:.3f} ms ({mine['loop'] / mine[best]:.1f}x)"
                )
    return "\n".join(lines)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "moe",
        help="MoE all-to-all vs message size (gloo on CPU; NCCL) and grouped expert GEMMs (CUDA)",
        description="Without a GPU (or with --cpu): gloo all_to_all_single between 2 and 4 local "
        "processes against message size, and the phases of the expert-parallel MoE block; "
        "writes OUT/cpu/moe-<date>.json. With CUDA: Qwen3-30B-A3B expert GEMMs (Triton grouped "
        "GEMM, per-expert loop, torch._grouped_mm, reference) for 16-4096 tokens, and NCCL "
        "all-to-all when there are >= 2 GPUs; writes OUT/<gpu>/moe-<date>.json.",
    )
    add_out(p)
    p.add_argument("--cpu", action="store_true", help="the CPU part even when CUDA is present")
    p.add_argument("--worlds", type=int_list, default=(2, 4), help="process counts (default: 2,4)")
    add_no_progress(p)


def main(args, command: str) -> Any:
    from minirt.results import load_results

    if args.cpu or not torch.cuda.is_available():
        path = run_cpu(args.out, command, worlds=args.worlds)
    else:
        path = run_cuda(args.out, command, progress=progress(args))
    print(summary(load_results(path)["results"]))
    return path
