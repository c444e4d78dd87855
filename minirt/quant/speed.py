"""What a number format allows a GEMM on paper: the bytes it moves and the tensor-core rate it uses.

y = x @ W.T with x [M, K] and W [N, K] reads W once, x once and writes y, and does 2·M·N·K FLOPs.
`ideal_gemm_s` is the roofline time max(bytes / bandwidth, FLOPs / peak): at small M the weight
bytes decide (W4A16 at group 128 moves 4.25 bits a weight, 16 / 4.25 = 3.8x fewer than bf16), at
large M the rate (FP8 and INT8 tensor cores run 2x bf16; W4A16 computes in bf16, so 1x at best).
`fused_act_quant_s` is what dynamic per-token scales cost when fused: one read of x, one write of
its codes. Datasheet numbers, not measurements: notebook 08 sets the H100 timings beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

from minirt.hardware import H100_SXM, Hardware


@dataclass(frozen=True)
class GemmFormat:
    """How one method stores the GEMM's operands, and how fast its tensor cores multiply them."""

    name: str
    weight_bits: float  # per weight, its share of the scales included
    act_bits: int  # per element of x, as the kernel reads it
    rate: float  # tensor-core FLOP/s relative to bf16 (H100: fp8 / int8 = 2x)


def _w4(group_size: int) -> GemmFormat:
    # 4-bit codes plus one fp32 scale per group (minirt's Int4Weight; Marlin's fp16 scales: 4.125)
    return GemmFormat(f"w4a16-g{group_size}", 4 + 32 / group_size, 16, 1.0)


FORMATS = {
    f.name: f
    for f in (
        GemmFormat("bf16", 16, 16, 1.0),
        GemmFormat("fp8", 8, 8, 2.0),  # one fp32 scale per row of K weights: negligible
        GemmFormat("int8", 8, 8, 2.0),
        _w4(128),
        _w4(32),
    )
}


def get_format(name: str) -> GemmFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown GEMM format {name!r}; choose one of {sorted(FORMATS)}")
    return FORMATS[name]


def gemm_bytes(m: int, n: int, k: int, fmt: str) -> float:
    """Bytes a GEMM must move at least: W, x and the bf16 output y, each once."""
    f = get_format(fmt)
    return n * k * f.weight_bits / 8 + m * k * f.act_bits / 8 + m * n * 2


def ideal_gemm_s(m: int, n: int, k: int, fmt: str, hw: Hardware = H100_SXM) -> float:
    """max(bytes / bandwidth, FLOPs / peak), with `hw.peak_flops` the bf16 peak."""
    memory_s = gemm_bytes(m, n, k, fmt) / hw.mem_bandwidth
    compute_s = 2 * m * n * k / (hw.peak_flops * get_format(fmt).rate)
    return max(memory_s, compute_s)


def ideal_speedup(m: int, n: int, k: int, fmt: str, hw: Hardware = H100_SXM) -> float:
    """ideal bf16 time / ideal time of `fmt`: what the format can buy at this shape, at most."""
    return ideal_gemm_s(m, n, k, "bf16", hw) / ideal_gemm_s(m, n, k, fmt, hw)


def weight_share(m: int, n: int, k: int, fmt: str = "bf16") -> float:
    """The fraction of a GEMM's bytes that are weights: near 1 at decode, why weights go first."""
    f = get_format(fmt)
    return n * k * f.weight_bits / 8 / gemm_bytes(m, n, k, fmt)


def fused_act_quant_s(m: int, k: int, hw: Hardware = H100_SXM) -> float:
    """Dynamic per-token FP8 scales done in one pass: read x [M, K] in bf16, write its fp8 codes
    and one fp32 scale per token. Unfused PyTorch ops read and write x several times instead."""
    return (m * k * (2 + 1) + m * 4) / hw.mem_bandwidth
