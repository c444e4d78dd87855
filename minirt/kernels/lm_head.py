"""lm_head: the LM head and the greedy choice together, for a batch of rows.

A greedy decode step ends with logits = h @ W_vocab.T and one argmax per row. At batch 256 the
Qwen3-0.6B head writes 256 x 151,936 logits (78 MB in bf16), and PyTorch's argmax then reads
them all back: one more pass over HBM and one more launch. Here the head's GEMM (tensor cores,
`tl.dot`) keeps, in its epilogue, each row's largest logit of the tile as stored and where it
is; the GEMV module's small argmax kernel picks among the tiles' maxima (the tiles are in column
order, so ties go to the first index, as torch.argmax). At one or two rows the GEMV does the
same (`gemv.linear_argmax`). The logits are still written: a sampled row needs them.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from minirt.kernels import gemv
from minirt.kernels.pdl import launch_args, pdl_wait

# Rows up to which the head runs here, past the GEMV's; above it cuBLAS and torch.argmax. 0: never,
# the default while the kernel has not been timed against cuBLAS + torch.argmax on a GPU
# (docs/measurements/lm_head_probe.py and offline_anatomy_probe.py do that); 256 turns it on.
MAX_ROWS = 0


linear_argmax_ref = gemv.linear_argmax_ref  # the spec: F.linear, then torch.argmax


@triton.jit
def _head_kernel(
    x_ptr, w_ptr, y_ptr, max_ptr, at_ptr, M, N, stride_xm, P, K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    # Program (i, j): logits j*BLOCK_N.. of rows i*BLOCK_M.., K walked in pieces of BLOCK_K.
    # The row tiles of one piece of W are neighbours in launch order, so they run together and
    # W is read from HBM once (the others find it in L2); the first piece of weights is loaded
    # before the wait (minirt.kernels.pdl).
    j = tl.program_id(1)
    n = j * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_in, n_in = tl.where(m < M, m, 0), tl.where(n < N, n, 0)  # clamp: no masks on the loads
    k = tl.arange(0, BLOCK_K)
    w_at = w_ptr + n_in[None, :] * K + k[:, None]  # [BLOCK_K, BLOCK_N]: a piece of W.T
    x_at = x_ptr + m_in[:, None] * stride_xm + k[None, :]  # [BLOCK_M, BLOCK_K]
    w = tl.load(w_at)
    pdl_wait(PDL)  # x is the kernel before's output
    acc = tl.dot(tl.load(x_at), w)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        acc = tl.dot(tl.load(x_at + k0), tl.load(w_at + k0), acc)
    y = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + m[:, None] * N + n[None, :], y, mask=(m[:, None] < M) & (n[None, :] < N))
    # each row's largest logit as stored (the rounded value: what torch.argmax compares)
    v = tl.where(n[None, :] < N, y.to(tl.float32), float("-inf"))
    best, at = tl.max(v, axis=1, return_indices=True, return_indices_tie_break_left=True)
    tl.store(max_ptr + m * P + j, best, mask=m < M)
    tl.store(at_ptr + m * P + j, j * BLOCK_N + at, mask=m < M)


def head_config(m: int) -> dict:
    """Tiles by rows: first choices, not yet timed (docs/measurements/lm_head_probe.py sweeps
    them against cuBLAS on Qwen3-0.6B's head)."""
    if m <= 16:
        return {"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 128, "num_warps": 4, "num_stages": 4}
    if m <= 64:
        block_m = triton.next_power_of_2(m)
        return {"BLOCK_M": block_m, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 4,
                "num_stages": 4}  # fmt: skip
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}


def fits(x: torch.Tensor, weight: torch.Tensor, bias=None) -> bool:
    """Whether the head runs here: a GPU (or Triton's interpreter), 3..MAX_ROWS contiguous rows,
    one dtype, no bias, K a multiple of 16."""
    runs = x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return (runs and bias is None and x.dim() == 2 and gemv.GEMV_MAX_ROWS < x.shape[0] <= MAX_ROWS
            and x.dtype == weight.dtype and x.stride(-1) == 1 and weight.is_contiguous()
            and weight.shape[1] % 16 == 0 and weight.numel() < 2**31
            and x.shape[0] * weight.shape[0] < 2**31)  # fmt: skip


def fuses_argmax(rows: int) -> bool:
    """Whether `linear_argmax` takes the argmax inside its kernels at this many rows (the GEMV's
    rows, or the head's here): where a decode graph should return its tokens."""
    return rows <= max(gemv.GEMV_MAX_ROWS, MAX_ROWS)


def _head(x, weight, config=None):
    m, k = x.shape
    n = weight.shape[0]
    c = dict(config or head_config(m))
    while k % c["BLOCK_K"]:
        c["BLOCK_K"] //= 2
    parts = triton.cdiv(n, c["BLOCK_N"])
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    maxima = torch.empty((m, parts), dtype=torch.float32, device=x.device)
    at = torch.empty((m, parts), dtype=torch.int32, device=x.device)
    grid = (triton.cdiv(m, c["BLOCK_M"]), parts)
    _head_kernel[grid](x, weight, y, maxima, at, m, n, x.stride(0), parts, K=k, **c,
                       **launch_args(x))  # fmt: skip
    tokens = torch.empty(m, dtype=torch.int64, device=x.device)
    block = min(triton.next_power_of_2(parts), gemv.ARGMAX_BLOCK)
    gemv._argmax_kernel[(m,)](maxima, at, tokens, parts, BLOCK=block, num_warps=4,
                              **launch_args(x))  # fmt: skip
    return y, tokens


def linear_argmax(x, weight, bias=None):
    """Triton twin of `linear_argmax_ref`: the tensor-core head past the GEMV's rows up to
    MAX_ROWS, else `gemv.linear_argmax` (the GEMV at one or two rows, F.linear and torch's
    argmax past them)."""
    return _head(x, weight) if fits(x, weight, bias) else gemv.linear_argmax(x, weight, bias)
