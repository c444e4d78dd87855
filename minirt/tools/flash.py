"""FlashAttention on the CPU: the naive spec, online softmax, tiles, and the bytes it saves.

Attention never needs the [S, S] score matrix: a running max `m` and sum `l` per query row, folded
in one K/V tile at a time, give the same output (the invariant tests/tools/test_flash.py checks).
`hbm_traffic` counts memory bytes as the FlashAttention paper does; `attention_kernel_table` sets
committed H100 kernel numbers beside the measured peak. Notebook 04 (FlashAttention, Hopper).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

# Published H100 figures (FlashAttention-3, Shah et al. 2024), NOT ours: percentages are of the
# datasheet's 989 TFLOP/s dense fp16/bf16; FP8 has a datasheet peak of 1,979 TFLOP/s.
H100_DATASHEET_TFLOPS = {"bf16": 989.0, "fp8": 1979.0}
PUBLISHED_H100 = [
    {"kernel": "FlashAttention-2 (published)", "dtype": "bf16", "tflop_per_s": 0.35 * 989.0},
    {"kernel": "FlashAttention-3 (published)", "dtype": "bf16", "tflop_per_s": 740.0},
    {"kernel": "FlashAttention-3 (published)", "dtype": "fp8", "tflop_per_s": 1200.0},
]
PUBLISHED_SOURCE = "Shah et al. 2024, FlashAttention-3 (arXiv:2407.08608)"


def _causal_offset(s_q: int, s_k: int, causal: bool) -> int:
    """Query i sees keys j <= i + offset: the queries are the last s_q of the s_k positions."""
    if causal and s_q > s_k:
        raise ValueError(f"causal attention needs s_q <= s_k, got {s_q} queries and {s_k} keys")
    return s_k - s_q


def naive_attention(
    q: torch.Tensor,  # [..., s_q, d]
    k: torch.Tensor,  # [..., s_k, d]
    v: torch.Tensor,  # [..., s_k, d]
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:  # [..., s_q, d]
    """The spec: softmax(q k^T * scale) v, with the whole [s_q, s_k] score matrix in memory."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    offset = _causal_offset(q.shape[-2], k.shape[-2], causal)
    s = (q @ k.transpose(-1, -2)) * scale  # [..., s_q, s_k]: what FlashAttention never stores
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(offset + 1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def online_softmax_steps(scores_row: torch.Tensor, block: int) -> list[dict[str, Any]]:
    """Fold one row of scores into (m, l) `block` entries at a time, as a kernel does.

    After each step m = max of the scores seen, l = sum of exp(score - m) over them. When a block
    raises the max, the old sum was taken against the old max and is multiplied by
    rescale = exp(m_old - m_new) <= 1. At the end l * exp(m) is the softmax denominator.
    """
    m, l, steps = -math.inf, 0.0, []
    for start in range(0, scores_row.numel(), block):
        x = scores_row[start : start + block].double()
        m_new = max(m, float(x.max()))
        rescale = math.exp(m - m_new) if m_new > -math.inf else 1.0  # exp(-inf) = 0 at step 0
        if m_new > -math.inf:  # a row's masked (-inf) prefix adds nothing
            l = l * rescale + float(torch.exp(x - m_new).sum())
        keys = f"{start}..{start + x.numel() - 1}"
        steps.append({"step": len(steps), "keys": keys, "block_max": float(x.max()),
                      "m": m_new, "rescale": rescale, "l": l})  # fmt: skip
        m = m_new
    return steps


@dataclass
class TileEvent:
    """What the kernel did with one (query tile, key tile) pair."""

    q_tile: int
    k_tile: int
    kind: str  # "full" (no mask needed), "masked" (on the diagonal), "skipped" (all in future)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tiled_attention(
    q: torch.Tensor,  # [..., s_q, d]
    k: torch.Tensor,  # [..., s_k, d]
    v: torch.Tensor,  # [..., s_k, d]
    block_m: int,
    block_n: int,
    causal: bool = True,
    record: list[TileEvent] | None = None,
    scale: float | None = None,
) -> torch.Tensor:  # [..., s_q, d]
    """FlashAttention's forward: for each tile of `block_m` queries, stream K/V in tiles of
    `block_n`, keeping m, l and an unnormalised output `acc`; divide by l once at the end.

    Only [block_m, block_n] scores exist at a time. Under a causal mask, key tiles wholly after
    the tile's last query are skipped (about half of them). `record` receives a TileEvent each.
    """
    if block_m < 1 or block_n < 1:
        raise ValueError(f"tile sizes must be >= 1, got block_m={block_m}, block_n={block_n}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s_q, s_k = q.shape[-2], k.shape[-2]
    offset = _causal_offset(s_q, s_k, causal)
    out = torch.empty_like(q)
    for i, q0 in enumerate(range(0, s_q, block_m)):
        q1 = min(q0 + block_m, s_q)
        qt = q[..., q0:q1, :]  # [..., bm, d]: loaded into SRAM once
        m = torch.full(qt.shape[:-1], -math.inf, dtype=q.dtype)  # [..., bm] running max
        l = torch.zeros(qt.shape[:-1], dtype=q.dtype)  # [..., bm] running sum of exp
        acc = torch.zeros_like(qt)  # [..., bm, d] sum of exp(s - m) v, not yet divided by l
        for j, k0 in enumerate(range(0, s_k, block_n)):
            k1 = min(k0 + block_n, s_k)
            if causal and k0 > q1 - 1 + offset:  # every key is after every query of the tile
                kind = "skipped"
            else:
                kind = "masked" if causal and k1 - 1 > q0 + offset else "full"
            if record is not None:
                record.append(TileEvent(i, j, kind))
            if kind == "skipped":
                continue
            s = (qt @ k[..., k0:k1, :].transpose(-1, -2)) * scale  # [..., bm, bn]
            if kind == "masked":
                rows = torch.arange(q0, q1)[:, None] + offset
                s = s.masked_fill(torch.arange(k0, k1)[None, :] > rows, -math.inf)
            m_new = torch.maximum(m, s.amax(dim=-1))  # finite: key 0 is visible to every query
            alpha = torch.exp(m - m_new)  # rescales what was summed against the old max
            p = torch.exp(s - m_new[..., None])  # [..., bm, bn]
            l = l * alpha + p.sum(dim=-1)
            acc = acc * alpha[..., None] + p @ v[..., k0:k1, :]
            m = m_new
        out[..., q0:q1, :] = acc / l[..., None]  # the one division, in SRAM, before the write
    return out


def hbm_traffic(
    seq_len: int,
    head_dim: int,
    heads: int = 1,
    bytes_per_el: int = 2,
    block_m: int = 128,
    batch: int = 1,
    causal: bool = False,
    cluster: int = 1,
) -> dict[str, float]:
    """Bytes a forward pass moves to and from HBM, standard attention vs FlashAttention-2.

    Standard (the paper's Algorithm 0): read Q, K; write S. Read S; write P = softmax(S).
    Read P, V; write O. The [N, N] matrices make it Theta(N d + N^2), and S and P are held.
    Flash: Q read once, O written once; K and V read once per query tile (N / block_m tiles), so
    Theta(N^2 d / block_m) — the paper's Theta(N^2 d^2 / M), since the tile fits SRAM of size M
    as block_m ~ M / d. Causal: a tile reads only the keys up to its last query. `cluster`: a
    what-if where each K/V tile is multicast (TMA) to `cluster` query tiles at once.
    """
    n, d, e = seq_len, head_dim, bytes_per_el
    per_head = batch * heads  # every (sequence, head) pair is an independent attention
    naive_read = (2 * n * d + n * n + n * n + n * d) * e  # Q K | S | P V
    naive_write = (n * n + n * n + n * d) * e  # S | P | O
    tiles = -(-n // block_m)
    if causal:  # query tile t needs keys 0 .. min(n, (t+1) block_m) - 1
        kv_rows = sum(min(n, (t + 1) * block_m) for t in range(tiles))
    else:
        kv_rows = tiles * n
    flash_read = (n * d + 2 * d * kv_rows / cluster) * e  # Q once | K and V per query tile
    flash_write = n * d * e + n * 4  # O, plus the fp32 log-sum-exp per row kept for backward
    pairs = n * (n + 1) // 2 if causal else n * n  # (query, key) pairs that count
    return {
        "seq_len": n,
        "flops": 4 * d * pairs * per_head,  # q.k and p.v: 2 d FLOPs each per pair
        "naive_read": naive_read * per_head,
        "naive_write": naive_write * per_head,
        "naive_total": (naive_read + naive_write) * per_head,
        "naive_scratch": 2 * n * n * e * per_head,  # S and P, resident in HBM
        "flash_read": flash_read * per_head,
        "flash_write": flash_write * per_head,
        "flash_total": (flash_read + flash_write) * per_head,
        "flash_scratch": n * 4 * per_head,  # the log-sum-exp only
    }


def traffic_table(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """hbm_traffic rows in GB, with the ratio and each algorithm's FLOPs per byte moved."""
    out = []
    for r in rows:
        naive, flash, flops = r["naive_total"], r["flash_total"], r["flops"]
        out.append({"N": r["seq_len"], "standard_GB": naive / 1e9, "flash_GB": flash / 1e9,
                    "standard/flash": naive / flash, "S+P_held_GB": r["naive_scratch"] / 1e9,
                    "standard_flop/B": flops / naive, "flash_flop/B": flops / flash})  # fmt: skip
    return out


def attention_kernel_table(
    record: dict[str, Any] | None, peak_tflop_per_s: float
) -> list[dict[str, Any]]:
    """One row per `prefill_attention_kernel` result: our Triton kernel and SDPA's flash backend
    (FlashAttention-2) as fractions of a measured bf16 matmul peak and of the datasheet's."""
    if record is None:
        return []
    sheet = H100_DATASHEET_TFLOPS["bf16"]
    rows = []
    for r in record.get("results", []):
        if r.get("name") != "prefill_attention_kernel":
            continue
        ours, fa2 = r["tflop_per_s"], r["sdpa_flash_tflop_per_s"]
        rows.append({"seq_len": r["seq_len"], "batch": r["batch"], "minirt_tflops": ours,
                     "minirt_of_peak": ours / peak_tflop_per_s, "fa2_sdpa_tflops": fa2,
                     "fa2_of_peak": fa2 / peak_tflop_per_s, "fa2_of_datasheet": fa2 / sheet,
                     "minirt_over_fa2": r["ratio"]})  # fmt: skip
    return rows


def decode_kernel_table(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per `decode_attention_kernel` result: GB/s read against a plain copy's."""
    if record is None:
        return []
    keep = ("batch", "context", "ms", "gb_per_s", "copy_gb_per_s", "fraction_of_copy")
    rows = record.get("results", [])
    return [{k: r[k] for k in keep} for r in rows if r.get("name") == "decode_attention_kernel"]


def measured_peaks(roofline_record: dict[str, Any] | None) -> dict[str, float] | None:
    """The measured ceilings of a roofline record: copy GB/s and bf16 matmul TFLOP/s."""
    if roofline_record is None:
        return None
    by_name = {r.get("name"): r for r in roofline_record.get("results", [])}
    if "hbm_copy" not in by_name or "bf16_matmul" not in by_name:
        return None
    return {"copy_gb_per_s": by_name["hbm_copy"]["gb_per_s"],
            "bf16_tflop_per_s": by_name["bf16_matmul"]["tflop_per_s"]}  # fmt: skip


def exp_time_over_matmul_time(head_dim: int, matmul_tflops: float, exp_tflops: float) -> float:
    """Per score: 4 d matmul FLOPs (q.k and p.v) and one exp on the slower special-function
    units. The ratio says how much of the matmul time softmax would add if not overlapped."""
    return (1 / exp_tflops) / (4 * head_dim / matmul_tflops)


def plot_tiles(events: list[TileEvent], title: str = "") -> Figure:
    """The grid of (query tile, key tile) pairs, coloured by what the kernel did with each."""
    colours = {"full": "tab:blue", "masked": "tab:orange", "skipped": "whitesmoke"}
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    for e in events:
        ax.add_patch(plt.Rectangle((e.k_tile, e.q_tile), 1, 1, facecolor=colours[e.kind],
                                   edgecolor="grey", lw=0.5))  # fmt: skip
    counts = {kind: sum(e.kind == kind for e in events) for kind in colours}
    for kind, colour in colours.items():
        ax.add_patch(plt.Rectangle((0, 0), 0, 0, facecolor=colour, label=f"{kind}: {counts[kind]}"))
    ax.set_xlim(0, max(e.k_tile for e in events) + 1)
    ax.set_ylim(max(e.q_tile for e in events) + 1, 0)  # query tile 0 at the top, as in S
    ax.set_aspect("equal")
    ax.set_xlabel("key tile")
    ax.set_ylabel("query tile")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "causal attention: tiles", fontsize=9)
    fig.tight_layout()
    return fig


def plot_traffic(rows: list[dict[str, float]], memory_bytes: float | None = None) -> Figure:
    """Left: bytes moved per forward pass. Right: scratch memory held. Against sequence length."""
    n = [r["seq_len"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, label in (("naive_total", "standard"), ("flash_total", "flash")):
        ax.plot(n, [r[key] / 1e9 for r in rows], marker="o", label=f"{label}: read + write")
    ax.plot(n, [r["flash_write"] / 1e9 for r in rows], ls="--", label="flash: writes only")
    ax.set_ylabel("GB moved to/from HBM")
    for key, label in (("naive_scratch", "standard: S and P"), ("flash_scratch", "flash: LSE")):
        ax2.plot(n, [r[key] / 1e9 for r in rows], marker="o", label=label)
    if memory_bytes:
        ax2.axhline(memory_bytes / 1e9, color="red", ls=":", label="GPU memory")
    ax2.set_ylabel("GB held besides Q, K, V, O")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("sequence length N")
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_kernel_fractions(table: list[dict[str, Any]], peak_tflop_per_s: float) -> Figure:
    """TFLOP/s of our prefill kernel and SDPA flash per sequence length, beside the measured
    bf16 matmul peak and the published FlashAttention-2/3 figures (dashed: not ours)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    x = range(len(table))
    ax.bar([i - 0.2 for i in x], [r["minirt_tflops"] for r in table], 0.4, label="minirt Triton")
    ax.bar([i + 0.2 for i in x], [r["fa2_sdpa_tflops"] for r in table], 0.4,
           label="SDPA flash (FA2), same run")  # fmt: skip
    ax.axhline(peak_tflop_per_s, color="black", label=f"bf16 matmul, measured: "
               f"{peak_tflop_per_s:.0f}")  # fmt: skip
    for p, ls in zip(PUBLISHED_H100[:2], (":", "--"), strict=True):
        ax.axhline(p["tflop_per_s"], color="grey", ls=ls, label=f"{p['kernel']}: "
                   f"{p['tflop_per_s']:.0f}")  # fmt: skip
    ax.set_xticks(list(x), [f"N={r['seq_len']}" for r in table])
    ax.set_ylabel("TFLOP/s (causal, bf16)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig
