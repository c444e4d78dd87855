"""w4a16_gemm: y = x @ W.T with W stored as 4-bit codes, dequantised inside the kernel.

Weight-only quantisation pays when reading the weights is the bottleneck (decode, small M): the
kernel reads 4.25 bits per weight (codes + one fp32 scale per group of 128) instead of 16 and
does the (code - zero) * scale in registers, never writing the bf16 weight back to memory.
Layout (minirt.quant.formats.Int4Weight): packed [N, K // 8] int32, input column 8j + i in bits
[4i, 4i + 4) of word j (GPTQ order); scales [N, K // G]; zeros [N, K // G] codes or None (= 8).
Two kernels: a GEMV for M = 1 that splits K across programs (split-K: N / BLOCK_N programs alone
would leave most of the GPU idle), and a tiled GEMM on tensor cores (tl.dot) for M > 1.
Notebook 08 (quantization) measures both against cuBLAS bf16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def w4a16_gemm_ref(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    group_size: int,
) -> torch.Tensor:
    """The spec: dequantise W to fp32 (minirt.quant), multiply in fp32, round once to x.dtype."""
    from minirt.quant.formats import Int4Weight, dequantize_int4

    _check(x, packed, scales, zeros, group_size)
    n, k = packed.shape[0], packed.shape[1] * 8
    w = dequantize_int4(Int4Weight(packed, scales.float(), zeros, (n, k), group_size))
    return (x.float() @ w.to(x.device).T).to(x.dtype)  # [M, N]


def _check(x, packed, scales, zeros, group_size) -> None:
    k = packed.shape[1] * 8
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(
            f"x must be [M, K] with K = 8 x packed.shape[1] = {k}; got {tuple(x.shape)} "
            "(reshape a batch to [tokens, K] first)"
        )
    if packed.dtype != torch.int32:
        raise ValueError(f"packed must be int32 (8 codes per word), got {packed.dtype}")
    if group_size % 8 or k % group_size or scales.shape != (packed.shape[0], k // group_size):
        raise ValueError(
            f"scales {tuple(scales.shape)} do not match [N, K // group_size] = "
            f"[{packed.shape[0]}, {k} // {group_size}]; quantise with minirt.quant.quantize_int4"
        )
    if zeros is not None and zeros.shape != scales.shape:
        raise ValueError(f"zeros {tuple(zeros.shape)} must have the scales' shape")


@triton.jit
def _dequant(packed_ptr, scales_ptr, zeros_ptr, n, k0, K, G: tl.constexpr,
             GROUPS: tl.constexpr, BLOCK_K: tl.constexpr, HAS_ZEROS: tl.constexpr):  # fmt: skip
    """W[n, k0 : k0 + BLOCK_K] in fp32, [len(n), BLOCK_K]. The tile's BLOCK_K / 8 words are read
    as they lie (contiguous along K), each word fans out into its 8 nibbles, and each run of
    BLOCK_K / GROUPS columns gets its group's scale (and zero point)."""
    bn: tl.constexpr = n.shape[0]
    words = tl.load(packed_ptr + n[:, None] * (K // 8) + k0 // 8
                    + tl.arange(0, BLOCK_K // 8)[None, :])  # [BN, BLOCK_K / 8] int32  # fmt: skip
    shifts = tl.arange(0, 8) * 4
    codes = (words[:, :, None] >> shifts[None, None, :]) & 0xF  # [BN, BLOCK_K / 8, 8]
    codes = tl.reshape(codes, (bn, GROUPS, BLOCK_K // GROUPS)).to(tl.float32)  # k = 8j + i
    group = n[:, None] * (K // G) + k0 // G + tl.arange(0, GROUPS)[None, :]  # [BN, GROUPS]
    scale = tl.load(scales_ptr + group)
    if HAS_ZEROS:
        zero = tl.load(zeros_ptr + group).to(tl.float32)
    else:
        zero = tl.full((bn, GROUPS), 8.0, tl.float32)
    w = (codes - zero[:, :, None]) * scale[:, :, None]
    return tl.reshape(w, (bn, BLOCK_K))


# 2^23 as fp32 bits. OR-ing a 4-bit code c into the low mantissa bits gives the float 2^23 + c
# exactly, so (bits | MAGIC) viewed as fp32, minus (2^23 + zero), is c - zero with no int -> float
# conversion: those run at a quarter of the FMA rate and bound a GEMV that converts every weight.
MAGIC = tl.constexpr(0x4B000000)


@triton.jit
def _gemv_kernel(
    x_ptr, packed_ptr, scales_ptr, zeros_ptr, y_ptr, N, K,
    G: tl.constexpr, GROUPS: tl.constexpr, HAS_ZEROS: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # Program (i, s): rows i*BLOCK_N.. of W, the s-th of SPLIT_K slices of K. A tile is
    # [BLOCK_N, GROUPS, WORDS] int32 words: GROUPS quantisation groups of WORDS words each, so a
    # group's scale is one value per (row, group), broadcast over its words, and each word's 8
    # nibbles are taken one at a time (static_range) against x's 8 matching columns: no reshape,
    # no shuffle of the codes into column order.
    WORDS: tl.constexpr = BLOCK_K // GROUPS // 8
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    n = tl.where(rows < N, rows, 0)  # rows past N read row 0; their sums are never stored
    g_idx = tl.arange(0, GROUPS)
    w_idx = tl.arange(0, WORDS)
    word_off = g_idx[:, None] * WORDS + w_idx[None, :]  # [GROUPS, WORDS] word within the tile
    acc = tl.zeros((BLOCK_N, GROUPS), dtype=tl.float32)
    tiles = K // BLOCK_K
    per_split = tl.cdiv(tiles, SPLIT_K)
    first = tl.program_id(1) * per_split
    for t in range(first, tl.minimum(first + per_split, tiles)):
        k0 = t * BLOCK_K
        words = tl.load(packed_ptr + n[:, None, None] * (K // 8) + k0 // 8 + word_off[None])
        group = n[:, None] * (K // G) + k0 // G + g_idx[None, :]  # [BLOCK_N, GROUPS]
        if HAS_ZEROS:
            offset = tl.load(zeros_ptr + group).to(tl.float32) + 8388608.0  # 2^23 + zero
        else:
            offset = tl.full((BLOCK_N, GROUPS), 8388616.0, tl.float32)  # 2^23 + 8
        part = tl.zeros((BLOCK_N, GROUPS, WORDS), dtype=tl.float32)
        for i in tl.static_range(8):  # nibble i of word j is column k0 + 8j + i
            xi = tl.load(x_ptr + k0 + word_off * 8 + i).to(tl.float32)  # [GROUPS, WORDS]
            bits = ((words >> (4 * i)) & 0xF) | MAGIC
            w = bits.to(tl.float32, bitcast=True) - offset[:, :, None]  # code - zero, exact
            part += w * xi[None]
        acc += tl.sum(part, axis=2) * tl.load(scales_ptr + group)  # one scale per group
    out = tl.sum(acc, axis=1)
    if SPLIT_K == 1:
        tl.store(y_ptr + rows, out.to(y_ptr.dtype.element_ty), mask=rows < N)
    else:  # partial sums of the slices meet in an fp32 buffer
        tl.atomic_add(y_ptr + rows, out, mask=rows < N)


@triton.jit
def _gemm_kernel(
    x_ptr, packed_ptr, scales_ptr, zeros_ptr, y_ptr, M, N, K, stride_xm, stride_ym,
    G: tl.constexpr, GROUPS: tl.constexpr, HAS_ZEROS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    m_in, n_in = tl.where(m < M, m, 0), tl.where(n < N, n, 0)  # clamp: no masks on the loads
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + m_in[:, None] * stride_xm + k0 + tl.arange(0, BLOCK_K)[None, :])
        w = _dequant(packed_ptr, scales_ptr, zeros_ptr, n_in, k0, K, G, GROUPS, BLOCK_K,
                     HAS_ZEROS)  # [BLOCK_N, BLOCK_K] fp32  # fmt: skip
        # the B operand [BLOCK_K, BLOCK_N], in x's 16-bit type for the tensor cores
        acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    mask = (m[:, None] < M) & (n[None, :] < N)
    tl.store(y_ptr + m[:, None] * stride_ym + n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def _fit_block_k(c: dict, k: int, group_size: int) -> dict:
    """A BLOCK_K that divides K and holds whole groups (or lies inside one); GROUPS per tile."""
    bk = c["BLOCK_K"]
    while bk > 8 and (k % bk or (bk % group_size and group_size % bk)):
        bk //= 2
    if k % bk:
        raise ValueError(f"K = {k} must be a multiple of 8 (pad the weight's columns)")
    return {**c, "BLOCK_K": bk, "GROUPS": max(1, bk // group_size)}


def w4a16_gemm(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    group_size: int,
    config: dict | None = None,
) -> torch.Tensor:
    """The Triton kernel, same signature as w4a16_gemm_ref. `config` overrides the tile sizes:
    GEMV (M = 1) {"BLOCK_N", "BLOCK_K", "SPLIT_K"}; GEMM {"BLOCK_M", "BLOCK_N", "BLOCK_K"}."""
    _check(x, packed, scales, zeros, group_size)
    (m, k), n = x.shape, packed.shape[0]
    x = x.contiguous()
    scales = scales.float().contiguous()
    zeros_arg = zeros.contiguous() if zeros is not None else scales  # unread when HAS_ZEROS=0
    flags = dict(G=group_size, HAS_ZEROS=zeros is not None)
    if m == 1:
        c = {"BLOCK_N": 8, "BLOCK_K": 512, "SPLIT_K": 1, **(config or {})}
        c = _fit_block_k(c, k, group_size)
        split = c["SPLIT_K"]
        # one slice writes y itself; slices add into zeros (one more kernel, and a cast after)
        y = (torch.zeros((1, n), dtype=torch.float32, device=x.device) if split > 1
             else torch.empty((1, n), dtype=x.dtype, device=x.device))  # fmt: skip
        grid = (triton.cdiv(n, c["BLOCK_N"]), split)
        _gemv_kernel[grid](x, packed, scales, zeros_arg, y, n, k, **flags, **c)
        return y.to(x.dtype)
    c = {"BLOCK_M": 16 if m <= 16 else 64, "BLOCK_N": 64, "BLOCK_K": 64, **(config or {})}
    c = _fit_block_k(c, k, group_size)
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, c["BLOCK_M"]), triton.cdiv(n, c["BLOCK_N"]))
    _gemm_kernel[grid](x, packed, scales, zeros_arg, y, m, n, k, x.stride(0), y.stride(0),
                       **flags, **c)  # fmt: skip
    return y
