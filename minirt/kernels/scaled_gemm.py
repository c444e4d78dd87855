"""scaled_gemm: y = (xq @ wq.T) * x_scale[m] * w_scale[n], for FP8 E4M3 or INT8 codes (W8A8).

Both operands are 8-bit, so the tensor cores run at twice their bf16 rate (H100: ~1,979 vs ~989
dense TFLOP/s) and the weights are half as many bytes. The scales factor out of the dot product:
one per token for x (dynamic, computed from the token's own values, or one static scale for all)
and one per output channel for W, applied once in the epilogue. FP8 accumulates in fp32, INT8 in
int32 (exact). One kernel serves both formats (only the accumulator differs); the benchmark puts
it beside cuBLAS's own 8-bit paths, `torch._scaled_mm` (fp8) and `torch._int_mm` (int8).
`scaled_gemm_dynamic` quantizes the activations inside the GEMM: each program finds its rows'
largest magnitudes, then turns each tile of x into codes just before the dot. Done as separate
torch ops the quantization was ~9 small kernels per layer, more than the GEMM itself at decode
sizes. Above 16 tokens the engine quantizes once with `quantize_rows` (one launch, the same
codes) and calls `scaled_gemm`. At one row a 16-row tensor-core tile is 15 rows of padding, so
for a few rows (`use_gemv`) a GEMV runs instead: one row a program, the weights upcast on the
ordinary cores (`config={"kernel": "gemv" | "gemm"}` picks either). Notebook 08 (quantization).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minirt.kernels.pdl import launch_args, pdl_wait

_FORMATS = (torch.float8_e4m3fn, torch.int8)
_QMAX = {torch.float8_e4m3fn: 448.0, torch.int8: 127.0}  # = minirt.quant.formats' FP8/INT8_MAX


def scaled_gemm_ref(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """The spec: codes as float64 (int8 products summed exactly; fp8 values exact), the dot
    product, then the scales; rounded once to out_dtype."""
    _check(xq, x_scale, wq, w_scale)
    acc = xq.double() @ wq.double().T  # [M, N]
    y = acc * x_scale.double().reshape(-1, 1) * w_scale.double().reshape(1, -1)
    return y.to(out_dtype)


def _check(xq, x_scale, wq, w_scale) -> None:
    if xq.dtype not in _FORMATS or wq.dtype != xq.dtype:
        raise ValueError(
            f"scaled_gemm takes float8_e4m3fn or int8 codes for both operands, got {xq.dtype} "
            f"and {wq.dtype}; quantise with minirt.quant (to_fp8 / quantize_int8_rows)"
        )
    if xq.dim() != 2 or wq.dim() != 2 or xq.shape[1] != wq.shape[1]:
        raise ValueError(
            f"need xq [M, K] and wq [N, K] (W stored as nn.Linear does); got "
            f"{tuple(xq.shape)} and {tuple(wq.shape)}"
        )
    if x_scale.numel() not in (1, xq.shape[0]) or w_scale.numel() != wq.shape[0]:
        raise ValueError(
            f"x_scale must hold 1 (static) or M = {xq.shape[0]} (per token) values and w_scale "
            f"N = {wq.shape[0]}; got {x_scale.numel()} and {w_scale.numel()}"
        )


def scaled_gemm_dynamic_ref(
    x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The spec of `scaled_gemm_dynamic`: x [M, K] quantized per row (scale = largest |x| / the
    format's largest code; codes rounded to nearest, ties to even), then `scaled_gemm_ref`."""
    from minirt.quant.formats import quantize_fp8_rows, quantize_int8_rows

    quantize_rows = quantize_int8_rows if wq.dtype == torch.int8 else quantize_fp8_rows
    xq, xs = quantize_rows(x)
    return scaled_gemm_ref(xq, xs, wq, w_scale, out_dtype or x.dtype)


@triton.jit
def _round_to_code(v, IS_INT: tl.constexpr):
    """v (fp32, within the format's range) rounded to the nearest code, ties to even, in fp32
    arithmetic, so the cast after it is exact: int8's codes are the integers; E4M3's are 2^(e-3)
    apart in the binade [2^e, 2^(e+1)), and 2^-9 apart below 2^-6 (subnormals). Adding 1.5 x 2^23
    steps rounds to a multiple of the step (the float's own round-to-nearest-even). A GPU's cast
    rounds the same way; Triton's interpreter does not carry across a power of two."""
    if IS_INT:
        step = tl.full(v.shape, 1.0, tl.float32)
    else:
        e = tl.maximum(((v.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, -6)
        step = ((e + 124) << 23).to(tl.float32, bitcast=True)  # 2^(e-3): exponent bits e-3+127
    magic = step * 12582912.0
    return (v + magic) - magic


@triton.jit
def _code_value(a, scale, IS_INT: tl.constexpr, QMAX: tl.constexpr):
    """a / scale (fp32 tensors of one shape), clamped to the format's range and rounded to a
    code, as its fp32 value (exact)."""
    v = tl.minimum(tl.maximum(tl.div_rn(a, scale), -QMAX), QMAX)
    return _round_to_code(v, IS_INT)


@triton.jit
def _encode(a, scale, IS_INT: tl.constexpr, QMAX: tl.constexpr):
    """a / scale (fp32 tensors of one shape), clamped to the format's range, as codes."""
    CODE: tl.constexpr = tl.int8 if IS_INT else tl.float8e4nv
    return _code_value(a, scale, IS_INT, QMAX).to(CODE)


@triton.jit
def _kernel(
    x_ptr, w_ptr, xs_ptr, ws_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
    PER_TOKEN: tl.constexpr, IS_INT: tl.constexpr, DYNAMIC: tl.constexpr, QMAX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Grouped order: GROUP_M row-tiles share each column-tile in turn, so W tiles stay in L2.
    pid, tiles_m, tiles_n = tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % rows_in_group
    pid_n = (pid % (GROUP_M * tiles_n)) // rows_in_group
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Rows past M and columns past N read row / column 0 instead of being masked (no "other"
    # value to cast to fp8); their results are never stored. K is a multiple of BLOCK_K.
    m_in, n_in = tl.where(m < M, m, 0), tl.where(n < N, n, 0)
    ACC: tl.constexpr = tl.int32 if IS_INT else tl.float32
    if DYNAMIC:  # x holds activations: first each row's scale, from its largest magnitude
        amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(x_ptr + m_in[:, None] * stride_xm + k[None, :]).to(tl.float32)
            amax = tl.maximum(amax, tl.max(tl.abs(a), axis=1))
        xs = tl.maximum(tl.div_rn(amax, tl.full(amax.shape, QMAX, tl.float32)), 1e-12)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + m_in[:, None] * stride_xm + k[None, :])  # [BLOCK_M, BLOCK_K]
        if DYNAMIC:  # the tile's codes, as the reference makes them: x / scale, clamped, rounded
            x = _encode(x.to(tl.float32), tl.broadcast_to(xs[:, None], x.shape), IS_INT, QMAX)
        # W is [N, K] row-major: read as the [BLOCK_K, BLOCK_N] B tile, K-major (what the
        # Hopper 8-bit MMA wants for both operands)
        w = tl.load(w_ptr + n_in[None, :] * stride_wn + k[:, None])
        acc = tl.dot(x, w, acc, out_dtype=ACC)
    if not DYNAMIC:
        xs = tl.load(xs_ptr + m, mask=m < M, other=0.0) if PER_TOKEN else tl.load(xs_ptr + m * 0)
    ws = tl.load(ws_ptr + n, mask=n < N, other=0.0)
    y = acc.to(tl.float32) * xs[:, None] * ws[None, :]
    mask = (m[:, None] < M) & (n[None, :] < N)
    tl.store(y_ptr + m[:, None] * stride_ym + n[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _row_codes(x_ptr, k, xs, IS_INT: tl.constexpr, QMAX: tl.constexpr, ACC: tl.constexpr):
    """The codes of x[k] at scale xs, as values of the accumulator's type (exact)."""
    a = tl.load(x_ptr + k).to(tl.float32)
    return _code_value(a, tl.zeros_like(a) + xs, IS_INT, QMAX).to(ACC)


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, ws_ptr, y_ptr, N, K, stride_xm, stride_wn, stride_ym,
    IS_INT: tl.constexpr, QMAX: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    # One row of x and BLOCK_N outputs a program, no tensor cores: at one row a tile of 16 rows
    # would be 15 rows of padding. The first tile of weights and their scales are loaded before
    # the wait (minirt.kernels.pdl: no kernel writes them), then the row's scale (x is a few KB,
    # read from L2 by every program), then each weight tile upcast and multiplied by the row's
    # codes, summed along K: int8 in int32 (exact), fp8 in fp32 (products of codes are exact).
    row, n = tl.program_id(1), tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_in = tl.where(n < N, n, 0)  # columns past N read row 0 of W, never stored
    k = tl.arange(0, BLOCK_K)
    ACC: tl.constexpr = tl.int32 if IS_INT else tl.float32
    w = tl.load(w_ptr + n_in[:, None] * stride_wn + k[None, :])  # [BLOCK_N, BLOCK_K]
    w_scale = tl.load(ws_ptr + n_in)
    pdl_wait(PDL)  # x is the kernel before's output
    x_row = x_ptr + row * stride_xm
    amax = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        amax = tl.maximum(amax, tl.abs(tl.load(x_row + k0 + k).to(tl.float32)))
    xs = tl.maximum(tl.div_rn(tl.max(amax, axis=0), QMAX), 1e-12)
    acc = tl.sum(w.to(ACC) * _row_codes(x_row, k, xs, IS_INT, QMAX, ACC)[None, :], axis=1)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        w = tl.load(w_ptr + n_in[:, None] * stride_wn + (k0 + k)[None, :])
        acc += tl.sum(w.to(ACC) * _row_codes(x_row, k0 + k, xs, IS_INT, QMAX, ACC)[None, :], 1)
    y = acc.to(tl.float32) * xs * w_scale
    tl.store(y_ptr + row * stride_ym + n, y.to(y_ptr.dtype.element_ty), mask=n < N)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, IS_INT: tl.constexpr,
                          QMAX: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    # One program per row: its largest magnitude, then its codes, as the reference makes them.
    row = tl.program_id(0)
    amax = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + row * stride_xm + k, mask=k < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(a))
    xs = tl.maximum(tl.div_rn(tl.max(amax, axis=0), QMAX), 1e-12)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + row * stride_xm + k, mask=k < K, other=0.0).to(tl.float32)
        tl.store(q_ptr + row * K + k, _encode(a, tl.zeros_like(a) + xs, IS_INT, QMAX), mask=k < K)
    tl.store(s_ptr + row, xs)


def quantize_rows(x: torch.Tensor, fmt: torch.dtype = torch.float8_e4m3fn):
    """Per-token codes and scales of x [M, K] in one launch: what `quantize_fp8_rows` /
    `quantize_int8_rows` (minirt.quant.formats) return, which take ~9 small kernels."""
    if fmt not in _FORMATS or x.dim() != 2:
        raise ValueError(f"need x [M, K] and a format in {_FORMATS}; got {tuple(x.shape)}, {fmt}")
    x, (m, k) = x.contiguous(), x.shape
    q = torch.empty((m, k), dtype=fmt, device=x.device)
    scales = torch.empty(m, dtype=torch.float32, device=x.device)
    block = min(triton.next_power_of_2(k), 1024)
    _quantize_rows_kernel[(m,)](x, q, scales, k, x.stride(0), IS_INT=fmt == torch.int8,
                                QMAX=_QMAX[fmt], BLOCK_K=block)  # fmt: skip
    return q, scales


# Up to this many rows of activations `scaled_gemm_dynamic` runs the GEMV (one row a program,
# each rereading the weight from L2); above, the tensor-core GEMM. On the H100, Qwen3-0.6B's
# projections (docs/measurements/f8gemv-h100-20261207.json): one row 5.1-6.7 us against the
# GEMM's 9.0-20.8 and cuBLAS bf16's 5.7-8.0; two rows still ahead of the GEMM on every shape;
# four rows only on the narrow weights (N < K: o, down), whose GEMM makes too few programs.
GEMV_MAX_ROWS = 2
GEMV_MAX_ROWS_NARROW = 4


def use_gemv(m: int, n: int, k: int) -> bool:
    """Whether `scaled_gemm_dynamic` runs the GEMV for M rows of a weight [N, K]."""
    return m <= GEMV_MAX_ROWS or (n < k and m <= GEMV_MAX_ROWS_NARROW)


def gemv_config(n: int, k: int) -> dict:
    """The GEMV's tiles (BLOCK_N outputs a program, BLOCK_K codes of each weight row a load):
    4 outputs and 1024-column loads with 4 warps, best on the H100 for qkv, o and down; the
    widest weight (gate_up, N = 6K) 8 outputs and 512-column loads (1.1x over the former)."""
    if n > 4 * k:
        return {"BLOCK_N": 8, "BLOCK_K": 512, "num_warps": 4}
    return {"BLOCK_N": 4, "BLOCK_K": 1024, "num_warps": 4}


def default_config(m: int, n: int = 0, dynamic: bool = False) -> dict:
    """Tile sizes by M (and N). Decode sizes: skinny tiles, and narrow ones so that the few rows
    still make enough programs; the H100 sweep at M = 64 and 256 on Qwen3-0.6B's shapes
    (`docs/measurements/decode-gemms-h100-20261206.json`) found BLOCK_N 32 best except for wide
    weights (N >= 4096) at M = 256, and slicing K (fp32 atomics) slower everywhere. With the
    activations quantized inside (`dynamic`, up to 16 rows) every program first reads its rows
    whole for their scales: 8 warps, and for narrow weights 16 outputs and 512-column K tiles
    (`docs/measurements/w4a16-decode-h100-20261207.json`, fp8_sweep: decode 1.34x the tiles
    before at batch 1-16). Prefill sizes: 128 x 128."""
    if m <= 16 and dynamic:
        bn, bk = (64, 128) if n >= 4096 else (16, 512)
        return {"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 1, "num_warps": 8}
    if m <= 16:
        return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 1}
    if m <= 256:
        wide = m > 64 and n >= 4096
        return {"BLOCK_M": 64, "BLOCK_N": 128 if wide else 32, "BLOCK_K": 128, "GROUP_M": 1}
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}


def scaled_gemm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    config: dict | None = None,
) -> torch.Tensor:
    """The Triton kernel, same signature as scaled_gemm_ref; `config` overrides the tiles
    ({"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"}, see default_config)."""
    _check(xq, x_scale, wq, w_scale)
    xs = x_scale.float().reshape(-1).contiguous()
    per_token = xs.numel() == xq.shape[0] and xq.shape[0] > 1
    return _launch(xq, xs, wq, w_scale, out_dtype, config, per_token=per_token, dynamic=False)


def scaled_gemm_dynamic(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """The Triton kernel with the activations x [M, K] (bf16/fp16/fp32) quantized inside, one
    scale per token; `scaled_gemm_dynamic_ref` is its spec. Output in x's dtype by default.
    For a few rows the GEMV runs (`use_gemv`; `config={"kernel": "gemv" | "gemm", ...}` picks;
    the GEMV's tiles are {"BLOCK_N", "BLOCK_K", "num_warps"}, `gemv_config`)."""
    if wq.dtype not in _FORMATS or x.dim() != 2 or x.shape[1] != wq.shape[1]:
        raise ValueError(
            f"need activations x [M, K] and codes wq [N, K] (float8_e4m3fn or int8); got "
            f"{tuple(x.shape)} and {tuple(wq.shape)} {wq.dtype}"
        )
    config = dict(config or {})
    default = "gemv" if use_gemv(x.shape[0], *wq.shape) else "gemm"
    kernel = config.pop("kernel", None) or default
    if kernel not in ("gemv", "gemm"):
        raise ValueError(f'unknown kernel {kernel!r}: "gemv" (one row a program) or "gemm"')
    if kernel == "gemv":
        return _launch_gemv(x, wq, w_scale, out_dtype or x.dtype, config)
    return _launch(x, x, wq, w_scale, out_dtype or x.dtype, config, per_token=True, dynamic=True)


def _k_tile(k: int, block_k: int) -> int:
    """The largest power-of-two tile <= block_k dividing K: the K loops have no tail."""
    while k % block_k and block_k > 16:
        block_k //= 2
    if k % block_k:
        raise ValueError(f"K = {k} must be a multiple of 16 (pad the weight's columns)")
    return block_k


def _launch_gemv(x, wq, w_scale, out_dtype, config):
    (m, k), n = x.shape, wq.shape[0]
    x, wq = x.contiguous(), wq.contiguous()
    ws = w_scale.float().reshape(-1).contiguous()
    c = {**gemv_config(n, k), **config}
    c["BLOCK_K"] = _k_tile(k, c["BLOCK_K"])
    y = torch.empty((m, n), dtype=out_dtype, device=x.device)
    grid = (triton.cdiv(n, c["BLOCK_N"]), m)
    _gemv_kernel[grid](x, wq, ws, y, n, k, x.stride(0), wq.stride(0), y.stride(0),
                       IS_INT=wq.dtype == torch.int8, QMAX=_QMAX[wq.dtype], **c,
                       **launch_args(x))  # fmt: skip
    return y


def _launch(x, xs, wq, w_scale, out_dtype, config, per_token: bool, dynamic: bool):
    (m, k), n = x.shape, wq.shape[0]
    x, wq = x.contiguous(), wq.contiguous()
    ws = w_scale.float().reshape(-1).contiguous()
    c = {**default_config(m, n, dynamic), **(config or {})}
    c["BLOCK_K"] = _k_tile(k, c["BLOCK_K"])
    y = torch.empty((m, n), dtype=out_dtype, device=x.device)
    grid = (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)
    _kernel[grid](x, wq, xs, ws, y, m, n, k, x.stride(0), wq.stride(0), y.stride(0),
                  PER_TOKEN=per_token, IS_INT=wq.dtype == torch.int8, DYNAMIC=dynamic,
                  QMAX=_QMAX[wq.dtype], **c)  # fmt: skip
    return y
