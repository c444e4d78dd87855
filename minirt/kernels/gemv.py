"""gemv: y = x @ W.T for a few rows of x (a small-batch decode), and what a decode step fuses in.

At batch 1 a projection reads a 2-12 MB weight to make a few thousand numbers: a GEMV, bound by
HBM and, at these sizes, by latency. cuBLAS reaches ~50 % of the copy bandwidth on Qwen3-0.6B's
projections (5.7-7.9 us each on an H100) and adds a split-K reduce kernel on the narrow ones. This
kernel gives each program BLOCK_N whole rows of W and loads them *first*, in one go: with
programmatic dependent launch (`minirt.kernels.pdl`) those loads are issued while the kernel
before is still running, and only then does the program wait for x. Two fusions save a kernel
each: `silu_mul_linear` computes SwiGLU's silu(gate) * up from the gate_up output while it reads
it (the down projection), `rms_norm_linear` the residual add and RMSNorm (every program
normalises the row itself: it is a few KB from L2; the first program writes the new residual).
A third, `linear_argmax`, is the LM head with the greedy choice: each program also writes the
largest of its logits (as stored) and where it is, and one small kernel picks among those maxima,
in place of PyTorch's argmax over the whole row (one launch reading the 300 KB of logits again).
The same kernel multiplies 8-bit weights (`scaled_linear`, W8A8 at one or two rows): after the
prologue it finds each row's scale and codes from the registers that hold the row, so an FP8 or
INT8 layer gets the norm and SiLU·mul fusions too, and no pass over x of their own.
Each has a reference of PyTorch calls with the same arguments; notebook 05 measures them.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from minirt.kernels.activation import silu_mul, silu_mul_ref, silu_times
from minirt.kernels.pdl import launch_args, pdl_wait
from minirt.kernels.rms_norm import normalize, rms_norm, rms_norm_ref
from minirt.kernels.scaled_gemm import _QMAX, _code_value, scaled_gemm_dynamic_ref

# Up to this many rows of x the GEMV runs, above it cuBLAS: on an H100 (Qwen3-0.6B's shapes,
# `docs/measurements/gemv-pdl-h100-20261207.json`) two rows still beat cuBLAS on qkv, o and
# down and tie on gate_up (decode at batch 2: 2,026-2,041 tokens/s against 1,528); at four rows
# gate_up falls to 0.70x cuBLAS and batch-4 decode gains nothing.
GEMV_MAX_ROWS = 2
TILE = 16384  # weights a program holds: BLOCK_N rows x K (padded to a power of two)
MAX_BLOCK_N = 16  # rows of W a program at most
# For 8-bit codes (scaled_linear): 32,768 codes a program (TILE's bytes), up to 32 rows (qkv and
# gate_up 32 rows, o 16, down 8). H100, one process, fp8-dynamic decode at batch 1: 1,309-1,337
# tokens/s against bf16's 1,306, where 16 rows made 1,209-1,212, 4 warps 1,256-1,259 and 16
# warps 1,115-1,116 (docs/measurements/w8a8-tiles-h100-20261207.json).
TILE_8BIT = 32768
MAX_BLOCK_N_8BIT = 32
WARPS_8BIT = 8
MAX_K = 16384
ARGMAX_BLOCK = 16384  # per-program maxima the argmax reads at once (Qwen3-0.6B's head: 9,496)


def linear_ref(x, weight, bias=None):
    """The spec: F.linear (cuBLAS on the GPU)."""
    return F.linear(x, weight, bias)


def silu_mul_linear_ref(gate_up, weight, bias=None):
    """down(silu(gate) * up), gate_up [M, 2 * I] the packed projection's output."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.linear(silu_mul_ref(gate, up), weight, bias)


def linear_argmax_ref(x, weight, bias=None):
    """(logits, each row's argmax: the first index of its largest logit), the LM head and the
    greedy token; int64 like torch.argmax."""
    y = F.linear(x, weight, bias)
    return y, y.argmax(-1)


def rms_norm_linear_ref(x, residual, norm_weight, eps, weight, bias=None):
    """(linear(norm(x + residual)), x + residual); with residual None: (linear(norm(x)), x)."""
    if residual is None:
        return F.linear(rms_norm_ref(x, norm_weight, eps), weight, bias), x
    h, residual = rms_norm_ref(x, norm_weight, eps, residual)
    return F.linear(h, weight, bias), residual


def prologue_ref(x, norm=None, residual=None, silu_mul=False):
    """What a fused projection does to its input first, as the references compute it: (its
    input, the residual stream). silu_mul: x is the packed [gate | up]; norm=(weight, eps):
    RMSNorm of x + residual (the stream x + residual), or of x (the stream x)."""
    if silu_mul:
        gate, up = x.chunk(2, dim=-1)
        return silu_mul_ref(gate, up), x
    if norm is None:
        return x, x
    return (rms_norm_ref(x, *norm), x) if residual is None else rms_norm_ref(x, *norm, residual)


def scaled_linear_ref(x, codes, w_scale, bias=None, norm=None, residual=None, silu_mul=False):
    """The spec of `scaled_linear`: x's prologue (`prologue_ref`), then W8A8 with one scale per
    row of x (`scaled_gemm_dynamic_ref`). Returns (y, the residual stream: x + residual with a
    norm and a residual, else x)."""
    h, stream = prologue_ref(x, norm, residual, silu_mul)
    y = scaled_gemm_dynamic_ref(h, codes, w_scale)
    return (y + bias.to(y.dtype) if bias is not None else y), stream


@triton.jit
def _row(x_ptr, res_ptr, new_res_ptr, nw, eps, row, ok, k, stride_xm, write_res,
         K: tl.constexpr, SILU_MUL: tl.constexpr, NORM: tl.constexpr,
         ADD_RESIDUAL: tl.constexpr):  # fmt: skip
    """Row `row` of the GEMV's input, fp32, rounded where the references round."""
    kin = (k < K) & ok
    x = tl.load(x_ptr + row * stride_xm + k, mask=kin, other=0.0)
    if SILU_MUL:  # x is the packed [gate | up]: this row's up half starts K columns on
        up = tl.load(x_ptr + row * stride_xm + K + k, mask=kin, other=0.0)
        x = silu_times(x, up)
    if NORM:
        if ADD_RESIDUAL:
            x = x + tl.load(res_ptr + row * K + k, mask=kin, other=0.0)
            tl.store(new_res_ptr + row * K + k, x, mask=kin & write_res)
        x = normalize(x, nw, eps, K).to(x.dtype)
    return x.to(tl.float32)


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, res_ptr, new_res_ptr, norm_w_ptr, max_ptr, at_ptr, ws_ptr, M, N,
    eps, stride_xm, K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU_MUL: tl.constexpr,
    NORM: tl.constexpr, ADD_RESIDUAL: tl.constexpr, ARGMAX: tl.constexpr, W8A8: tl.constexpr,
    IS_INT: tl.constexpr, QMAX: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # BLOCK_N whole rows of W a program, loaded before anything else: nothing earlier writes them.
    ACC: tl.constexpr = tl.int32 if IS_INT else tl.float32  # W8A8: exact code products
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    n_in = tl.where(n < N, n, 0)  # rows past N read row 0 of W, never stored
    w = tl.load(w_ptr + n_in[:, None] * K + k[None, :], mask=(k < K)[None, :], other=0)
    if W8A8 and not IS_INT:  # FP8 codes arrive as int8 (a masked load fills 0 bits: +0.0)
        w = w.to(tl.float8e4nv, bitcast=True)
    nw = tl.load(norm_w_ptr + k, mask=k < K, other=0.0) if NORM else 0.0
    bias = tl.load(b_ptr + n_in).to(tl.float32) if HAS_BIAS else 0.0
    w_scale = tl.load(ws_ptr + n_in) if W8A8 else 1.0
    pdl_wait(PDL)  # x is the kernel before's output: from here on it may be read
    for r in tl.static_range(BLOCK_M):  # each row of x against the same registers of W
        row = tl.program_id(1) * BLOCK_M + r
        ok = row < M
        a = _row(x_ptr, res_ptr, new_res_ptr, nw, eps, row, ok, k, stride_xm,
                 tl.program_id(0) == 0, K, SILU_MUL, NORM, ADD_RESIDUAL)  # fmt: skip
        if W8A8:  # W holds 8-bit codes: the row's own codes and scale, as quantize_rows makes them
            xs = tl.maximum(tl.div_rn(tl.max(tl.abs(a), axis=0), QMAX), 1e-12)
            a = _code_value(a, tl.zeros_like(a) + xs, IS_INT, QMAX).to(ACC)
            acc = tl.sum(w.to(ACC) * a[None, :], axis=1).to(tl.float32) * xs * w_scale + bias
        else:
            acc = tl.sum(w.to(tl.float32) * a[None, :], axis=1) + bias
        y = acc.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + row * N + n, y, mask=(n < N) & ok)
        if ARGMAX:  # this program's largest logit as stored (rounded), the first of ties
            best, i = tl.max(tl.where(n < N, y.to(tl.float32), float("-inf")), axis=0,
                             return_indices=True, return_indices_tie_break_left=True)  # fmt: skip
            part = row * tl.num_programs(0) + tl.program_id(0)
            tl.store(max_ptr + part, best, mask=ok)
            tl.store(at_ptr + part, tl.program_id(0) * BLOCK_N + i, mask=ok)


@triton.jit
def _argmax_kernel(max_ptr, at_ptr, out_ptr, P, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """One program a row: the largest of the row's P per-program maxima, the first of ties (the
    programs are in column order, so that is the row's first largest logit)."""
    pdl_wait(PDL)  # the maxima are the kernel before's output
    row = tl.program_id(0)
    best, at = float("-inf"), 0
    for start in range(0, P, BLOCK):
        j = start + tl.arange(0, BLOCK)
        v = tl.load(max_ptr + row * P + j, mask=j < P, other=float("-inf"))
        m, i = tl.max(v, axis=0, return_indices=True, return_indices_tie_break_left=True)
        at = tl.where(m > best, start + i, at)  # strictly larger: an earlier chunk keeps ties
        best = tl.maximum(m, best)
    tl.store(out_ptr + row, tl.load(at_ptr + row * P + at).to(tl.int64))


def use_gemv(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the GEMV runs for x [M, K] and weight [N, K]: a GPU (or Triton's interpreter),
    up to GEMV_MAX_ROWS rows, one dtype, contiguous weights (int32 offsets: < 2**31 of them)."""
    return weight.dtype == x.dtype and _fits(x, weight)


def use_scaled_gemv(x: torch.Tensor, codes: torch.Tensor) -> bool:
    """Whether `scaled_linear` runs for x [M, K] and 8-bit codes [N, K]: as `use_gemv`."""
    return codes.dtype in _QMAX and _fits(x, codes)


def _fits(x, weight) -> bool:
    runs = x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return (runs and x.dim() == 2 and 0 < x.shape[0] <= GEMV_MAX_ROWS and weight.is_contiguous()
            and weight.shape[1] <= MAX_K and weight.numel() < 2**31)  # fmt: skip


def gemv_config(n: int, k: int, tile: int = TILE, max_rows: int = MAX_BLOCK_N) -> dict:
    """BLOCK_N rows of W a program: `tile` weights in registers, at most `max_rows` rows (bf16:
    qkv and gate_up 16 rows, o 8, down 4 on Qwen3-0.6B: 128-384 programs), 8 warps."""
    block_k = triton.next_power_of_2(k)
    block_n = max(1, min(max_rows, tile // block_k, triton.next_power_of_2(n)))
    return {"BLOCK_N": block_n, "BLOCK_K": block_k, "num_warps": 8}


def _gemv(x, weight, bias, k, silu_mul=False, norm=None, residual=None, argmax=False,
          w_scale=None):  # fmt: skip
    m, n = x.shape[0], weight.shape[0]
    if w_scale is None:
        c = gemv_config(n, k)
    else:  # 8-bit codes
        c = {**gemv_config(n, k, TILE_8BIT, MAX_BLOCK_N_8BIT), "num_warps": WARPS_8BIT}
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    new_res = torch.empty((m, k), dtype=x.dtype, device=x.device) if residual is not None else y
    norm_w, eps = norm if norm is not None else (weight, 0.0)
    block_m = triton.next_power_of_2(m)
    grid = (triton.cdiv(n, c["BLOCK_N"]), triton.cdiv(m, block_m))
    parts = grid[0]  # with argmax: per row, each program's maximum and where it is
    maxima = torch.empty((m, parts), dtype=torch.float32, device=x.device) if argmax else y
    at = torch.empty((m, parts), dtype=torch.int32, device=x.device) if argmax else y
    w = weight.view(torch.int8) if w_scale is not None else weight  # FP8 codes: as bits
    _gemv_kernel[grid](
        x, w, bias if bias is not None else weight, y,
        residual if residual is not None else x, new_res, norm_w, maxima, at,
        w_scale if w_scale is not None else weight, m, n, eps, x.stride(0), K=k,
        HAS_BIAS=bias is not None, SILU_MUL=silu_mul, NORM=norm is not None,
        ADD_RESIDUAL=residual is not None, ARGMAX=argmax, W8A8=w_scale is not None,
        IS_INT=weight.dtype == torch.int8, QMAX=_QMAX.get(weight.dtype, 0.0), BLOCK_M=block_m,
        **c, **launch_args(x),
    )  # fmt: skip
    if not argmax:
        return y, new_res
    tokens = torch.empty(m, dtype=torch.int64, device=x.device)
    block = min(triton.next_power_of_2(parts), ARGMAX_BLOCK)
    _argmax_kernel[(m,)](maxima, at, tokens, parts, BLOCK=block, num_warps=16, **launch_args(x))
    return y, tokens


def linear(x, weight, bias=None):
    """Triton twin of `linear_ref`: the GEMV where `use_gemv`, else F.linear."""
    if not use_gemv(x, weight) or x.stride(-1) != 1:
        return F.linear(x, weight, bias)
    return _gemv(x, weight, bias, weight.shape[1])[0]


def silu_mul_linear(gate_up, weight, bias=None):
    """Triton twin of `silu_mul_linear_ref`: one kernel where `use_gemv`, else two."""
    if not use_gemv(gate_up, weight) or gate_up.stride(-1) != 1:
        gate, up = gate_up.chunk(2, dim=-1)
        return F.linear(silu_mul(gate, up), weight, bias)
    return _gemv(gate_up, weight, bias, weight.shape[1], silu_mul=True)[0]


def linear_argmax(x, weight, bias=None):
    """Triton twin of `linear_argmax_ref`: the GEMV and a small kernel where `use_gemv`, else
    F.linear and torch's argmax."""
    if not use_gemv(x, weight) or x.stride(-1) != 1:
        return linear_argmax_ref(x, weight, bias)
    return _gemv(x, weight, bias, weight.shape[1], argmax=True)


def rms_norm_linear(x, residual, norm_weight, eps, weight, bias=None):
    """Triton twin of `rms_norm_linear_ref`: one kernel where `use_gemv`, else two."""
    if not use_gemv(x, weight) or (residual is not None and residual.dtype != x.dtype):
        if residual is None:
            return F.linear(rms_norm(x, norm_weight, eps), weight, bias), x
        h, residual = rms_norm(x, norm_weight, eps, residual)
        return F.linear(h, weight, bias), residual
    x = x.contiguous()
    res = residual.contiguous() if residual is not None else None
    y, new_res = _gemv(x, weight, bias, weight.shape[1], norm=(norm_weight, eps), residual=res)
    return y, (new_res if residual is not None else x)


def scaled_linear(x, codes, w_scale, bias=None, norm=None, residual=None, silu_mul=False):
    """Triton twin of `scaled_linear_ref` for a few rows (`use_gemv`): W8A8 in one kernel, the
    prologue as in the bf16 GEMV, then each row's largest magnitude, scale and codes from the
    registers that hold it (no pass over x of their own), the products of codes exact (fp8 in
    fp32, int8 in int32), the two scales once at the end. QuantLinear runs it for fp8-dynamic
    and int8 at one or two rows; past that, minirt.kernels.scaled_gemm."""
    if silu_mul and norm is not None:
        raise ValueError("scaled_linear takes one prologue: silu_mul or norm, not both")
    if not use_scaled_gemv(x, codes) or (residual is not None and residual.dtype != x.dtype):
        raise ValueError(
            f"scaled_linear takes 1-{GEMV_MAX_ROWS} rows of x on a GPU (or Triton's interpreter) "
            f"and contiguous float8_e4m3fn or int8 codes (a residual in x's dtype); got x "
            f"{tuple(x.shape)} on {x.device} and codes {codes.dtype}; for more rows, "
            "minirt.kernels.scaled_gemm.scaled_gemm_dynamic"
        )
    x = x.contiguous()
    res = residual.contiguous() if residual is not None else None
    ws = w_scale.float().reshape(-1).contiguous()
    y, new_res = _gemv(x, codes, bias, codes.shape[1], silu_mul=silu_mul, norm=norm,
                       residual=res, w_scale=ws)  # fmt: skip
    return y, (new_res if residual is not None else x)
