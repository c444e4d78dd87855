"""w4a16_gemm: y = x @ W.T with W stored as 4-bit codes, dequantised inside the kernel.

Weight-only quantisation pays when reading the weights is the bottleneck (decode, small M): the
kernel reads 4.25 bits per weight (codes + one fp32 scale per group of 128) instead of 16 and
does the (code - zero) * scale in registers, never writing the bf16 weight back to memory.
Layout: an `Int4Weight` packed in the *interleaved* order (`quantize_int4(..., interleaved=True)`
or `interleave_int4(q)`): within each group of G columns, nibbles i and i + 4 (i < 4) of the
group's word w hold the neighbouring columns 2 (i * G/8 + w) and 2 (i * G/8 + w) + 1, so the
inputs that meet nibbles (i, i + 4) of a run of words are G/8 consecutive pairs of x's columns
(GPTQ's order would make them every 8th). scales [N, K // G]; zeros codes or None.
Two kernels. A GEMV for a few rows of x (a batch-1 decode, and up to 4-16 rows: `use_gemv`; each
word read once for BLOCK_M rows; split-K optional: N / BLOCK_N programs alone can leave a small
GPU idle). A tiled GEMM on the
tensor cores (tl.dot) for more rows: the codes minus their zero go to the tensor cores as exact
small integers, and each group's scale multiplies the fp32 product once per output, not once per
weight.
Notebook 08 (quantization) measures both against cuBLAS bf16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minirt.kernels.pdl import launch_args, pdl_wait
from minirt.quant.formats import Int4Weight


def w4a16_gemm_ref(x: torch.Tensor, q: Int4Weight) -> torch.Tensor:
    """The spec: dequantise W to fp32 (minirt.quant), multiply in fp32, round once to x.dtype."""
    from minirt.quant.formats import dequantize_int4

    _check(x, q)
    w = dequantize_int4(Int4Weight(q.packed, q.scales.float(), q.zeros, q.shape, q.group_size,
                                   q.interleaved))  # fmt: skip
    return (x.float() @ w.to(x.device).T).to(x.dtype)  # [M, N]


def _check(x: torch.Tensor, q: Int4Weight) -> None:
    (n, k), g = q.shape, q.group_size
    if q.packed.dtype != torch.int32 or q.packed.shape != (n, k // 8):
        raise ValueError(
            f"packed must be [N, K // 8] = [{n}, {k // 8}] int32 (8 codes per word), got "
            f"{tuple(q.packed.shape)} {q.packed.dtype}; quantise with minirt.quant.quantize_int4"
        )
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(
            f"x must be [M, K] with K = {k} (the weight's in_features); got {tuple(x.shape)} "
            "(reshape a batch to [tokens, K] first)"
        )
    if g % 8 or k % g or q.scales.shape != (n, k // g):
        raise ValueError(
            f"scales {tuple(q.scales.shape)} do not match [N, K // group_size] = [{n}, {k} // {g}]"
            "; quantise with minirt.quant.quantize_int4"
        )
    if q.zeros is not None and q.zeros.shape != q.scales.shape:
        raise ValueError(f"zeros {tuple(q.zeros.shape)} must have the scales' shape")


# 2^23 as fp32 bits. OR-ing a 4-bit code c into the low mantissa bits gives the float 2^23 + c
# exactly, so (bits | MAGIC) viewed as fp32, minus (2^23 + zero), is c - zero with no int -> float
# conversion: those run at a quarter of the FMA rate and bound a GEMV that converts every weight.
MAGIC = tl.constexpr(0x4B000000)

# The same trick in bf16, two codes at a time, in PTX (sm_90): 0x4300 is bf16 128.0, and OR-ing
# nibbles k and k + 4 into the low bits of both halves of 0x43004300 (one lop3) gives the bf16
# pair (128 + c_k, 128 + c_k+4). One sub.bf16x2 takes (128 + zero) off both, one fma.bf16x2
# multiplies the pair by its two inputs and adds: 18 instructions for a word's 8 weights, where
# the fp32 path (shift, mask, OR, subtract, convert x, FMA per weight) measured 7.5 per weight.
# The price: products and the 8-term sum round to bf16 (relative error ~2^-9, the size of the
# output's own rounding to bf16); the sums over words are fp32.
_DOT8_BF16X2 = tl.constexpr("""{
.reg .b32 v0, v1, v2, v3, t;
.reg .f32 f0, f1;
lop3.b32 v0, $1, 0x000F000F, 0x43004300, 0xEA;
shr.u32 t, $1, 4;
lop3.b32 v1, t, 0x000F000F, 0x43004300, 0xEA;
shr.u32 t, $1, 8;
lop3.b32 v2, t, 0x000F000F, 0x43004300, 0xEA;
shr.u32 t, $1, 12;
lop3.b32 v3, t, 0x000F000F, 0x43004300, 0xEA;
sub.rn.bf16x2 v0, v0, $2;
sub.rn.bf16x2 v1, v1, $2;
sub.rn.bf16x2 v2, v2, $2;
sub.rn.bf16x2 v3, v3, $2;
mul.rn.bf16x2 t, v0, $3;
fma.rn.bf16x2 t, v1, $4, t;
fma.rn.bf16x2 t, v2, $5, t;
fma.rn.bf16x2 t, v3, $6, t;
shl.b32 v0, t, 16;
and.b32 v1, t, 0xFFFF0000;
mov.b32 f0, v0;
mov.b32 f1, v1;
add.f32 $0, f0, f1;
}""")


@triton.jit
def _columns(word, nibble, G: tl.constexpr):
    """The column of x that nibble `nibble` of packed word `word` (counted along the row) holds
    in the interleaved order: nibbles k and k + 4 side by side, pairs k * G/8 + w in a group."""
    C: tl.constexpr = G // 8  # words per group
    return (word // C) * G + 2 * ((nibble % 4) * C + word % C) + nibble // 4


@triton.jit
def _tile_loads(packed_ptr, scales_ptr, zeros_ptr, n, t, word_off, g_idx, K,
                G: tl.constexpr, BLOCK_K: tl.constexpr, HAS_ZEROS: tl.constexpr,
                BF16X2: tl.constexpr):  # fmt: skip
    """Tile t of the program's rows of W: (its words' positions along the row, the packed
    words, each group's scale, and what (128 + zero) or (2^23 + zero) each code sheds)."""
    k0 = t * BLOCK_K
    word = k0 // 8 + word_off  # [GROUPS, WORDS] along the row
    words = tl.load(packed_ptr + n[:, None, None] * (K // 8) + word[None])
    group = n[:, None] * (K // G) + k0 // G + g_idx[None, :]  # [BLOCK_N, GROUPS]
    scale = tl.load(scales_ptr + group)  # [BLOCK_N, GROUPS]: one scale per group
    if BF16X2:  # bf16 bits of 128 + zero, in both halves
        if HAS_ZEROS:
            off = (tl.load(zeros_ptr + group).to(tl.int32) + 0x4300) * 0x10001
        else:
            off = tl.full(scale.shape, 0x43084308, tl.int32)  # 128 + 8
    else:
        if HAS_ZEROS:
            off = tl.load(zeros_ptr + group).to(tl.float32) + 8388608.0  # 2^23 + zero
        else:
            off = tl.full(scale.shape, 8388616.0, tl.float32)  # 2^23 + 8
    return word, words, scale, off


@triton.jit
def _tile_dot(acc, x_ptr, word, words, scale, off, m, M, K, G: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
              WORDS: tl.constexpr, BF16X2: tl.constexpr):  # fmt: skip
    """acc [BLOCK_M, BLOCK_N, GROUPS] plus one tile's products with the rows of x."""
    C: tl.constexpr = G // 8
    if BF16X2:  # GPU: 4 bf16 pairs per word in PTX (_DOT8_BF16X2), row by row of x
        for r in tl.static_range(BLOCK_M):
            row_r = tl.minimum(tl.program_id(2) * BLOCK_M + r, M - 1)  # past M: row M-1
            pairs = (
                x_ptr.to(tl.pointer_type(tl.int32))
                + row_r * (K // 2)
                + (word // C) * (G // 2)
                + word % C
            )  # [GROUPS, WORDS]
            dot = tl.inline_asm_elementwise(
                _DOT8_BF16X2, "=f,r,r,r,r,r,r",
                [words, off[:, :, None], tl.load(pairs)[None], tl.load(pairs + C)[None],
                 tl.load(pairs + 2 * C)[None], tl.load(pairs + 3 * C)[None]],
                dtype=tl.float32, is_pure=True, pack=1,
            )  # fmt: skip
            part = tl.sum(dot, axis=2) * scale  # [BLOCK_N, GROUPS]
            acc += tl.where(tl.arange(0, BLOCK_M)[:, None, None] == r, part[None], 0.0)
    else:  # anywhere (the interpreter too): one nibble at a time in fp32
        dot = tl.zeros((BLOCK_M, BLOCK_N, GROUPS, WORDS), dtype=tl.float32)
        for i in tl.static_range(8):
            xi = tl.load(x_ptr + m * K + _columns(word, i, G)[None]).to(tl.float32)
            bits = ((words >> (4 * i)) & 0xF) | MAGIC
            w = bits.to(tl.float32, bitcast=True) - off[:, :, None]  # code - zero, exact
            dot += w[None] * xi[:, None]  # [BLOCK_M, BLOCK_N, GROUPS, WORDS]
        acc += tl.sum(dot, axis=3) * scale[None]
    return acc


@triton.jit
def _gemv_kernel(
    x_ptr, packed_ptr, scales_ptr, zeros_ptr, y_ptr, M, N, K,
    G: tl.constexpr, GROUPS: tl.constexpr, HAS_ZEROS: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BF16X2: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    # Program (i, s, j): rows i*BLOCK_N.. of W, the s-th of SPLIT_K slices of K, rows
    # j*BLOCK_M.. of x: every word is read once for BLOCK_M rows of x (one row: a batch-1
    # decode). A tile is [BLOCK_N, GROUPS, WORDS] int32 words: GROUPS quantisation groups (or
    # one slice of a group) of WORDS words each, so a group's scale is one value per (row,
    # group), broadcast over its words. The inputs of nibble k of the tile's words are WORDS
    # consecutive pairs of x per group. The first tile is loaded before the wait for x
    # (minirt.kernels.pdl: no kernel writes the weights).
    WORDS: tl.constexpr = BLOCK_K // GROUPS // 8
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    n = tl.where(rows < N, rows, 0)  # rows past N read row 0; their sums are never stored
    ms = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] rows of x
    m = tl.where(ms < M, ms, 0)[:, None, None]  # [BLOCK_M, 1, 1], clamped likewise
    g_idx = tl.arange(0, GROUPS)
    word_off = g_idx[:, None] * WORDS + tl.arange(0, WORDS)[None, :]  # [GROUPS, WORDS] in tile
    acc = tl.zeros((BLOCK_M, BLOCK_N, GROUPS), dtype=tl.float32)
    tiles = K // BLOCK_K
    per_split = tl.cdiv(tiles, SPLIT_K)
    first = tl.program_id(1) * per_split
    last = tl.minimum(first + per_split, tiles)  # a slice past the end has no tile
    loaded = _tile_loads(packed_ptr, scales_ptr, zeros_ptr, n, tl.minimum(first, tiles - 1),
                         word_off, g_idx, K, G, BLOCK_K, HAS_ZEROS, BF16X2)  # fmt: skip
    pdl_wait(PDL)  # x is the kernel before's output
    if first < last:
        acc = _tile_dot(acc, x_ptr, *loaded, m, M, K, G, BLOCK_M, BLOCK_N, GROUPS, WORDS, BF16X2)
    for t in range(first + 1, last):
        word, words, scale, off = _tile_loads(packed_ptr, scales_ptr, zeros_ptr, n, t, word_off,
                                              g_idx, K, G, BLOCK_K, HAS_ZEROS, BF16X2)  # fmt: skip
        acc = _tile_dot(acc, x_ptr, word, words, scale, off, m, M, K, G, BLOCK_M, BLOCK_N,
                        GROUPS, WORDS, BF16X2)  # fmt: skip
    out = tl.sum(acc, axis=2)  # [BLOCK_M, BLOCK_N]
    at = y_ptr + ms[:, None] * N + rows[None, :]
    mask = (ms[:, None] < M) & (rows[None, :] < N)
    if SPLIT_K == 1:
        tl.store(at, out.to(y_ptr.dtype.element_ty), mask=mask)
    else:  # partial sums of the slices meet in an fp32 buffer
        tl.atomic_add(at, out, mask=mask)


@triton.jit
def _piece_loads(packed_ptr, scales_ptr, zeros_ptr, n_in, kj, K, G: tl.constexpr,
                 SUB: tl.constexpr, HAS_ZEROS: tl.constexpr):  # fmt: skip
    """The weights of one piece (SUB columns from kj, inside one group) for the GEMM's rows
    n_in: the packed words [BLOCK_N, SUB // 8], the group's scale, and (2^23 + zero)."""
    word = kj // 8 + tl.arange(0, SUB // 8)  # [WORDS] along the row
    words = tl.load(packed_ptr + n_in[:, None] * (K // 8) + word[None, :])
    group = n_in * (K // G) + kj // G  # [BLOCK_N]
    scale = tl.load(scales_ptr + group)
    if HAS_ZEROS:
        offset = tl.load(zeros_ptr + group).to(tl.float32) + 8388608.0  # 2^23 + zero
    else:
        offset = tl.full(scale.shape, 8388616.0, tl.float32)  # 2^23 + 8
    return words, scale, offset


@triton.jit
def _piece_dot(acc, x, words, scale, offset, G: tl.constexpr, SUB: tl.constexpr,
               BLOCK_N: tl.constexpr):  # fmt: skip
    """acc [BLOCK_M, BLOCK_N] plus one piece, x [BLOCK_M, SUB] its inputs: the codes minus their
    zero, exact small integers in x's 16-bit type, go to the tensor cores, and the group's scale
    multiplies the fp32 product once per output (not once per weight)."""
    i4, h2 = tl.arange(0, 4), tl.arange(0, 2)
    shift = i4[:, None, None] * 4 + h2[None, None, :] * 16  # [4, 1, 2]: nibble i + 4h
    bits = ((words[:, None, :, None] >> shift[None]) & 0xF) | MAGIC
    w = bits.to(tl.float32, bitcast=True) - offset[:, None, None, None]  # code - zero
    w = tl.reshape(w, (BLOCK_N, SUB)).to(x.dtype)  # exact: -15..15
    return acc + tl.dot(x, tl.trans(w)) * scale[None, :]  # B operand [SUB, BLOCK_N]


@triton.jit
def _piece_cols(kj, G: tl.constexpr, SUB: tl.constexpr):
    """x's columns for the piece at kj, in the order its codes unpack to: codes [BLOCK_N, 4,
    WORDS, 2] (nibble i + 4h of word w at [.., i, w, h]) flatten to one run for a whole group,
    4 runs for a slice of one."""
    if SUB == G:
        return kj + tl.arange(0, SUB)
    C: tl.constexpr = G // 8  # words per group
    word = kj // 8 + tl.arange(0, SUB // 8)
    run = _columns(word, 0, G)[None, :, None] + (tl.arange(0, 4) * 2 * C)[:, None, None]
    return tl.reshape(run + tl.arange(0, 2)[None, None, :], (SUB,))


@triton.jit
def _gemm_kernel(
    x_ptr, packed_ptr, scales_ptr, zeros_ptr, y_ptr, M, N, K, stride_xm, stride_ym,
    G: tl.constexpr, HAS_ZEROS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # Program (j, i): outputs j*BLOCK_N.. of rows i*BLOCK_M.. (neighbouring programs share x and
    # read different weights), walking K in pieces of BLOCK_K columns, each inside one group (a
    # whole group, or a slice of one). The first piece's weights are loaded before the wait for
    # x (minirt.kernels.pdl: no kernel writes the weights), so they stream in while the kernel
    # before finishes.
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    m_in, n_in = tl.where(m < M, m, 0), tl.where(n < N, n, 0)  # clamp: no masks on the loads
    first = _piece_loads(packed_ptr, scales_ptr, zeros_ptr, n_in, 0, K, G, BLOCK_K, HAS_ZEROS)
    pdl_wait(PDL)  # x is the kernel before's output
    x = tl.load(x_ptr + m_in[:, None] * stride_xm + _piece_cols(0, G, BLOCK_K)[None, :])
    acc = _piece_dot(tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), x, *first, G, BLOCK_K,
                     BLOCK_N)  # fmt: skip
    for kj in range(BLOCK_K, K, BLOCK_K):
        words, scale, offset = _piece_loads(packed_ptr, scales_ptr, zeros_ptr, n_in, kj, K, G,
                                            BLOCK_K, HAS_ZEROS)  # fmt: skip
        cols = _piece_cols(kj, G, BLOCK_K)
        x = tl.load(x_ptr + m_in[:, None] * stride_xm + cols[None, :])  # [BLOCK_M, BLOCK_K]
        acc = _piece_dot(acc, x, words, scale, offset, G, BLOCK_K, BLOCK_N)
    mask = (m[:, None] < M) & (n[None, :] < N)
    tl.store(y_ptr + m[:, None] * stride_ym + n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def _fit_block_k(c: dict, k: int, group_size: int, kernel: str) -> dict:
    """A BLOCK_K that divides K. The GEMV's tile holds whole groups (or lies inside one), GROUPS
    of them; the GEMM's piece lies inside one group (a whole group at most)."""
    bk = min(c["BLOCK_K"], group_size) if kernel == "gemm" else c["BLOCK_K"]
    while bk > 8 and (k % bk or (bk % group_size and group_size % bk)):
        bk //= 2
    if k % bk:
        raise ValueError(f"K = {k} must be a multiple of 8 (pad the weight's columns)")
    if kernel == "gemm":
        return {**c, "BLOCK_K": bk}
    return {**c, "BLOCK_K": bk, "GROUPS": max(1, bk // group_size)}


def bf16x2_available(x: torch.Tensor) -> bool:
    """Whether the GEMV can take its PTX path: bf16 x on a compiled (not interpreted) Hopper+."""
    import os

    return (x.dtype == torch.bfloat16 and x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1"
            and torch.cuda.get_device_capability(x.device) >= (9, 0))  # fmt: skip


# When the GEMV runs and how many rows of x a program takes (BLOCK_M: each packed word is read
# once and unpacked for each of them). Timed on the H100 against the GEMM and cuBLAS bf16 on
# Qwen3-0.6B's projections, weights from DRAM, in CUDA graphs: a wide weight (N > K: qkv,
# gate_up) is ahead on the GEMV up to 4 rows, all in one program (at 8 the GEMM wins: 5.7 vs
# 6.6 us on qkv); a narrow one (o, down) up to 8 rows, a quarter of them a program (at 8: o 5.6
# against the GEMM's 7.8 us; at 16 the GEMM leads, o 7.8 against 8.8, down 11.2 against 12.6:
# `docs/measurements/w4pdl-h100-20261207.json`).
GEMV_MAX_ROWS = 4
GEMV_MAX_ROWS_NARROW = 8


def use_gemv(m: int, n: int, k: int) -> bool:
    """Whether `w4a16_gemm` runs the GEMV for M rows of a weight [N, K]."""
    return m <= GEMV_MAX_ROWS or (n <= k and m <= GEMV_MAX_ROWS_NARROW)


def gemv_block_m(m: int, n: int, k: int) -> int:
    """Rows of x a GEMV program takes: all of them on a wide weight, a quarter on a narrow one
    (there, fewer programs than rows x columns would leave SMs idle)."""
    rows = triton.next_power_of_2(m)
    return rows if n > k else max(1, rows // 4)


def default_config(kernel: str, m: int, n: int, k: int) -> dict:
    """Tiles by kernel, rows and outputs: the H100's best with the weights read from DRAM. The
    GEMV: 4 outputs a program, whole 1,024-column tiles (bench quant, 4096 x 4096), up to
    `gemv_block_m` rows of x. The GEMM at decode sizes (the engine's shapes, a sweep of 18 tiles
    in `docs/measurements/w4pdl-h100-20261207.json`): narrow tiles (16-32 outputs), so that a
    few rows still make enough programs to fill the GPU, 128-column pieces, 4 stages; 64 x 64
    for prefill sizes."""
    if kernel == "gemv":
        bm = gemv_block_m(m, n, k)
        return {"BLOCK_M": bm, "BLOCK_N": 4, "BLOCK_K": 1024, "SPLIT_K": 1, "num_warps": 8}
    if m <= 32:  # wide weights (N >= 4096) have programs to spare: wider tiles up to 16 rows
        bn = 32 if n >= 4096 and m <= 16 else 16
        return {"BLOCK_M": 16 if m <= 16 else 32, "BLOCK_N": bn, "BLOCK_K": 128, "num_warps": 4,
                "num_stages": 4}  # fmt: skip
    return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "num_warps": 4, "num_stages": 3}


def w4a16_gemm(x: torch.Tensor, q: Int4Weight, config: dict | None = None) -> torch.Tensor:
    """The Triton kernel, same arguments as w4a16_gemm_ref; `q` packed interleaved. `config`
    picks the kernel ("kernel": "gemv", the default up to GEMV_MAX_ROWS rows, or "gemm") and
    overrides its tiles: GEMV {"BLOCK_M" (rows of x a program), "BLOCK_N", "BLOCK_K",
    "SPLIT_K"}; GEMM {"BLOCK_M", "BLOCK_N", "BLOCK_K"}; either may add Triton's "num_warps" /
    "num_stages" (`default_config`)."""
    _check(x, q)
    if not q.interleaved:
        raise ValueError(
            "the kernel reads int4 weights packed in the interleaved order; quantise with "
            "quantize_int4(w, group_size, interleaved=True) or repack with interleave_int4(q) "
            "(minirt.quant.formats)"
        )
    (m, k), n, g = x.shape, q.shape[0], q.group_size
    config = dict(config or {})
    kernel = config.pop("kernel", None) or ("gemv" if use_gemv(m, n, k) else "gemm")
    if kernel not in ("gemv", "gemm"):
        raise ValueError(
            f"config['kernel'] must be 'gemv' (a row of x a program) or 'gemm'; got {kernel!r}"
        )
    c = _fit_block_k({**default_config(kernel, m, n, k), **config}, k, g, kernel)
    x = x.contiguous()
    scales = q.scales.float().contiguous()
    zeros = q.zeros.contiguous() if q.zeros is not None else scales  # unread when HAS_ZEROS=0
    flags = dict(G=g, HAS_ZEROS=q.zeros is not None)
    if kernel == "gemv":
        split = c["SPLIT_K"]
        # one slice writes y itself; slices add into zeros (one more kernel, and a cast after)
        y = (torch.zeros((m, n), dtype=torch.float32, device=x.device) if split > 1
             else torch.empty((m, n), dtype=x.dtype, device=x.device))  # fmt: skip
        grid = (triton.cdiv(n, c["BLOCK_N"]), split, triton.cdiv(m, c["BLOCK_M"]))
        _gemv_kernel[grid](x, q.packed, scales, zeros, y, m, n, k, **flags,
                           BF16X2=bf16x2_available(x), **c, **launch_args(x))  # fmt: skip
        return y.to(x.dtype)
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, c["BLOCK_N"]), triton.cdiv(m, c["BLOCK_M"]))
    _gemm_kernel[grid](x, q.packed, scales, zeros, y, m, n, k, x.stride(0), y.stride(0),
                       **flags, **c, **launch_args(x))  # fmt: skip
    return y
