"""The attention kernels against what the hardware allows, measured in the same run (CUDA).

Decode attention reads each sequence's KV once: its GB/s is compared with a plain HBM copy's.
Prefill attention is compute-bound: its TFLOP/s is compared with torch SDPA's flash backend
(FlashAttention-2) on the same shapes, causal, bf16. A few launch configurations are tried and
all are kept, so the notebooks can show what tuning bought. Notebooks 04 and 05 read the rows.
`python -m minirt.bench kernels` runs them alone (the gpu topic runs them too).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from triton.testing import do_bench

from minirt.bench.cli import add_out
from minirt.bench.roofline import ceilings
from minirt.bench.timing import gpu_device
from minirt.kernels.decode_attention import decode_attention
from minirt.kernels.prefill_attention import prefill_attention
from minirt.results import load_results, write_results

HEADS, KV_HEADS, HEAD_DIM, BLOCK_SIZE = 16, 8, 128, 16  # Qwen3-0.6B's attention
DECODE_CONFIGS = [  # (block_n, num_warps, num_stages)
    (64, 4, 2), (32, 4, 2), (128, 4, 2), (64, 8, 2), (64, 4, 3), (128, 8, 3),
]  # fmt: skip
PREFILL_CONFIGS = [  # (block_m, block_n, num_warps, num_stages)
    (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 4),
    (64, 128, 4, 3),
]  # fmt: skip


def paged_inputs(num_seqs: int, ctx: int, q_len: int, dtype=torch.bfloat16, seed: int = 0):
    """A pool holding `num_seqs` sequences of `ctx` tokens in shuffled blocks; q for q_len each."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    per_seq = -(-ctx // BLOCK_SIZE)
    num_blocks = num_seqs * per_seq
    shape = (num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(shape, generator=g, device="cuda", dtype=dtype)
    v_cache = torch.randn(shape, generator=g, device="cuda", dtype=dtype)
    perm = torch.randperm(num_blocks, generator=g, device="cuda").to(torch.int32)
    tables = perm.view(num_seqs, per_seq)  # a sequence's blocks are scattered across the pool
    q = torch.randn(num_seqs * q_len, HEADS, HEAD_DIM, generator=g, device="cuda", dtype=dtype)
    ctx_lens = torch.full((num_seqs,), ctx, dtype=torch.int32, device="cuda")
    starts = torch.arange(0, num_seqs * q_len + 1, q_len, dtype=torch.int32, device="cuda")
    return q, k_cache, v_cache, tables, ctx_lens, starts


def decode_rows(copy_gbps: float, shapes=((1, 4096), (64, 1024), (64, 4096), (256, 1024))):
    rows = []
    for batch, ctx in shapes:
        q, kc, vc, tables, lens, _ = paged_inputs(batch, ctx, 1)
        kv_bytes = 2 * batch * ctx * KV_HEADS * HEAD_DIM * kc.element_size()
        tried = []
        for block_n, warps, stages in DECODE_CONFIGS:
            ms = do_bench(partial(decode_attention, q, kc, vc, tables, lens, HEAD_DIM**-0.5, ctx,
                                 block_n=block_n, num_warps=warps, num_stages=stages))  # fmt: skip
            tried.append({"block_n": block_n, "num_warps": warps, "num_stages": stages, "ms": ms})
        best = min(tried, key=lambda t: t["ms"])
        gbps = kv_bytes / best["ms"] / 1e6
        rows.append({"name": "decode_attention_kernel", "batch": batch, "context": ctx,
                     "kv_bytes": kv_bytes, "ms": best["ms"], "gb_per_s": gbps,
                     "copy_gb_per_s": copy_gbps, "fraction_of_copy": gbps / copy_gbps,
                     "best_config": {k: v for k, v in best.items() if k != "ms"},
                     "configs": tried})  # fmt: skip
        del q, kc, vc
    return rows


def _sdpa_flash_ms(batch: int, seq: int) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    q, k, v = (
        torch.randn(batch, HEADS, seq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        for _ in range(3)
    )  # fmt: skip  (K/V expanded to all heads: same FLOPs as GQA)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return do_bench(partial(sdpa, q, k, v, is_causal=True))


def prefill_rows(seq_lens=(1024, 2048, 4096, 8192), tokens: int = 16384):
    rows = []
    for seq in seq_lens:
        batch = max(1, tokens // seq)
        q, kc, vc, tables, lens, starts = paged_inputs(batch, seq, seq)
        flop = 4 * batch * HEADS * seq * seq * HEAD_DIM / 2  # QK^T and PV, causal half
        tried = []
        for bm, bn, warps, stages in PREFILL_CONFIGS:
            try:
                ms = do_bench(partial(prefill_attention, q, kc, vc, tables, lens, starts,
                                     HEAD_DIM**-0.5, seq, seq, block_m=bm, block_n=bn,
                                     num_warps=warps, num_stages=stages))  # fmt: skip
            except Exception as e:  # e.g. out of shared memory for this tile shape
                tried.append({"block_m": bm, "block_n": bn, "num_warps": warps,
                              "num_stages": stages, "error": str(e)[:200]})  # fmt: skip
                continue
            tried.append({"block_m": bm, "block_n": bn, "num_warps": warps,
                          "num_stages": stages, "ms": ms})  # fmt: skip
        best = min((t for t in tried if "ms" in t), key=lambda t: t["ms"])
        sdpa_ms = _sdpa_flash_ms(batch, seq)
        ours, theirs = flop / best["ms"] / 1e9, flop / sdpa_ms / 1e9
        rows.append({"name": "prefill_attention_kernel", "seq_len": seq, "batch": batch,
                     "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "ms": best["ms"],
                     "tflop_per_s": ours, "sdpa_flash_ms": sdpa_ms,
                     "sdpa_flash_tflop_per_s": theirs, "ratio": ours / theirs,
                     "best_config": {k: v for k, v in best.items() if k != "ms"},
                     "configs": tried})  # fmt: skip
        del q, kc, vc
    return rows


def measure(copy_gbps: float) -> list[dict[str, Any]]:
    return decode_rows(copy_gbps) + prefill_rows()


def run_once(which: str) -> None:
    """One launch of each kernel at the benchmark's headline shape: a target for Nsight Compute."""
    if which in ("decode", "both"):
        q, kc, vc, tables, lens, _ = paged_inputs(64, 4096, 1)
        decode_attention(q, kc, vc, tables, lens, HEAD_DIM**-0.5, 4096)
    if which in ("prefill", "both"):
        q, kc, vc, tables, lens, starts = paged_inputs(4, 4096, 4096)
        prefill_attention(q, kc, vc, tables, lens, starts, HEAD_DIM**-0.5, 4096, 4096)
    torch.cuda.synchronize()


def run(out_dir, command: str) -> Any:
    """The copy ceiling and every kernel row, written as OUT/<gpu>/kernels-<date>.json."""
    rows = ceilings()
    rows += measure(rows[0]["gb_per_s"])
    config = {"gpu": torch.cuda.get_device_name(), "dtype": "bfloat16", "heads": HEADS,
              "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "block_size": BLOCK_SIZE}  # fmt: skip
    return write_results("kernels", gpu_device(), rows, out_dir, command, config=config)


def summary(rows: list[dict[str, Any]]) -> str:
    """The kernel rows, one dict a line (floats to 3 places), as the gpu topic prints them."""
    names = ("decode_attention_kernel", "prefill_attention_kernel")
    rounded = [
        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
        for r in rows
        if r["name"] in names
    ]
    return "\n".join(str(r) for r in rounded)


def add_parser(topics) -> None:
    p = topics.add_parser(
        "kernels",
        help="(CUDA) the attention kernels alone: decode GB/s vs copy, prefill vs SDPA flash",
        description="The part (c) of the gpu benchmark on its own, with every launch "
        "configuration tried. --once runs one launch per kernel and writes nothing (a target "
        "for Nsight Compute: ncu --kernel-name regex:decode python -m minirt.bench kernels "
        "--once decode).",
    )
    add_out(p)
    p.add_argument("--once", choices=["decode", "prefill", "both"], default=None)


def main(args, command: str) -> Any:
    if args.once:
        run_once(args.once)
        return None
    path = run(args.out, command)
    print(summary(load_results(path)["results"]))
    return path
