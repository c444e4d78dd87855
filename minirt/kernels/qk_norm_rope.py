"""qk_norm_rope: Qwen3's per-head RMSNorm of q and k, then RoPE, in one pass.

Unfused that is three kernels per layer (norm q, norm k, rotate both), each reading and writing
q or k. At batch 1 a decode step is launch-bound, so three launches cost more than the bytes;
fused, each token's q and k are read once, normalised, rotated and written once.
Notebook 05 (profiling) counts the launches it saves. `qk_norm_rope_store` goes one step
further: the rotated keys go straight into their slots of the paged pool, with the values beside
them, so the layer's separate store_kv launch (and the round trip of k through memory) is gone.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from minirt.kernels.pdl import launch_args, pdl_wait
from minirt.kernels.rms_norm import rms_norm_ref
from minirt.kernels.rotary import rope_ref
from minirt.kernels.store_kv import store_kv, store_kv_ref

QK_PARTS = 2  # programs a token: one for its q heads, one for its k (and v) heads


def qk_norm_rope_ref(
    positions: torch.Tensor,  # [num_tokens] int64
    q: torch.Tensor,  # [num_tokens, heads, head_dim]
    k: torch.Tensor,  # [num_tokens, kv_heads, head_dim]
    q_weight: torch.Tensor,  # [head_dim]
    k_weight: torch.Tensor,  # [head_dim]
    eps: float,
    cos: torch.Tensor,  # [max_positions, head_dim // 2] fp32
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = rms_norm_ref(q, q_weight, eps), rms_norm_ref(k, k_weight, eps)
    return rope_ref(positions, q, k, cos, sin)


@triton.jit
def _norm_rotate(x_ptr, x_stride, out_ptr, out_row, w_ptr, token, c, s, eps,
                 HEADS: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_D: tl.constexpr, SATURATE: tl.constexpr = False):  # fmt: skip
    heads = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < HEADS) & (cols < HALF)
    src = token * x_stride + heads * (2 * HALF) + cols  # first halves; second: HALF further
    x1 = tl.load(x_ptr + src, mask=mask, other=0.0)
    x2 = tl.load(x_ptr + src + HALF, mask=mask, other=0.0)
    f1, f2 = x1.to(tl.float32), x2.to(tl.float32)
    ms = (tl.sum(f1 * f1, axis=1) + tl.sum(f2 * f2, axis=1)) / (2 * HALF)  # per head
    rstd = (1.0 / tl.sqrt(ms + eps))[:, None]
    w1 = tl.load(w_ptr + cols, mask=cols < HALF)
    w2 = tl.load(w_ptr + HALF + cols, mask=cols < HALF)
    n1 = ((f1 * rstd).to(x1.dtype) * w1).to(x1.dtype).to(tl.float32)  # round as the reference
    n2 = ((f2 * rstd).to(x1.dtype) * w2).to(x1.dtype).to(tl.float32)
    r1 = (n1 * c - n2 * s).to(x1.dtype)
    r2 = (n2 * c + n1 * s).to(x1.dtype)
    if SATURATE:  # into an FP8 pool: +-448 at most (E4M3 has no infinity)
        r1 = tl.minimum(tl.maximum(r1.to(tl.float32), -448.0), 448.0)  # FP8_MAX
        r2 = tl.minimum(tl.maximum(r2.to(tl.float32), -448.0), 448.0)
    dst = out_row * HEADS * 2 * HALF + heads * (2 * HALF) + cols  # a token's row, or a slot's
    tl.store(out_ptr + dst, r1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_ptr + dst + HALF, r2.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(
    pos_ptr, q_ptr, k_ptr, v_ptr, q_out_ptr, k_out_ptr, v_out_ptr, slot_ptr,
    qw_ptr, kw_ptr, cos_ptr, sin_ptr, q_stride, k_stride, v_stride, eps,
    Q_HEADS: tl.constexpr, K_HEADS: tl.constexpr, HALF: tl.constexpr,
    BLOCK_QH: tl.constexpr, BLOCK_KH: tl.constexpr, BLOCK_D: tl.constexpr,
    STORE: tl.constexpr = False,  # k and v into the pool at their slots (k_out, v_out: the pool)
    BLOCK_ROW: tl.constexpr = 1, SATURATE: tl.constexpr = False, PDL: tl.constexpr = 0,
    PARTS: tl.constexpr = 1,
):  # fmt: skip
    token = tl.program_id(0).to(tl.int64)  # PARTS programs per token: q, then k (and v)
    part = tl.program_id(1)
    # The step's inputs (positions, slots) and the cos/sin tables: read before the wait (pdl)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)[None, :]
    c = tl.load(cos_ptr + pos * HALF + cols, mask=cols < HALF, other=0.0)
    s = tl.load(sin_ptr + pos * HALF + cols, mask=cols < HALF, other=0.0)
    slot = tl.load(slot_ptr + token).to(tl.int64)  # int64: slot * row overflows int32
    pdl_wait(PDL)  # minirt.kernels.pdl: q, k, v are the kernel before's
    if part == 0:
        _norm_rotate(q_ptr, q_stride, q_out_ptr, token, qw_ptr, token, c, s, eps,
                     Q_HEADS, HALF, BLOCK_QH, BLOCK_D)  # fmt: skip
    if part == PARTS - 1:  # one program: both; two: the second does k (and v)
        if not STORE:
            _norm_rotate(k_ptr, k_stride, k_out_ptr, token, kw_ptr, token, c, s, eps,
                         K_HEADS, HALF, BLOCK_KH, BLOCK_D)  # fmt: skip
        else:
            if slot >= 0:  # -1: a padding row of a CUDA graph, stores nothing
                _norm_rotate(k_ptr, k_stride, k_out_ptr, slot, kw_ptr, token, c, s, eps,
                             K_HEADS, HALF, BLOCK_KH, BLOCK_D, SATURATE)  # fmt: skip
                ROW: tl.constexpr = K_HEADS * 2 * HALF
                i = tl.arange(0, BLOCK_ROW)
                value = tl.load(v_ptr + token * v_stride + i, mask=i < ROW)
                if SATURATE:
                    value = tl.minimum(tl.maximum(value.to(tl.float32), -448.0), 448.0)  # FP8_MAX
                tl.store(v_out_ptr + slot * ROW + i, value.to(v_out_ptr.dtype.element_ty),
                         mask=i < ROW)  # fmt: skip


def qk_norm_rope(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of `qk_norm_rope_ref`. q and k may be views of a packed qkv output (tokens
    strided, each token's heads contiguous); the results are new contiguous tensors."""
    num_tokens, q_heads, head_dim = q.shape
    k_heads, half = k.shape[1], head_dim // 2
    if q[0].stride() != (head_dim, 1) or k[0].stride() != (head_dim, 1):
        q, k = q.contiguous(), k.contiguous()
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    if num_tokens:
        _qk_norm_rope_kernel[(num_tokens, QK_PARTS)](
            positions, q, k, k, q_out, k_out, k_out, positions, q_weight, k_weight,
            cos.contiguous(), sin.contiguous(), q.stride(0), k.stride(0), k.stride(0), eps,
            Q_HEADS=q_heads, K_HEADS=k_heads, HALF=half,
            BLOCK_QH=triton.next_power_of_2(q_heads), BLOCK_KH=triton.next_power_of_2(k_heads),
            BLOCK_D=triton.next_power_of_2(half), PARTS=QK_PARTS,
        )  # fmt: skip
    return q_out, k_out


def qk_norm_rope_store_ref(
    positions: torch.Tensor,
    q: torch.Tensor,  # [num_tokens, heads, head_dim]
    k: torch.Tensor,  # [num_tokens, kv_heads, head_dim]
    v: torch.Tensor,  # [num_tokens, kv_heads, head_dim]
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,  # [num_tokens] int64; -1 = padding, store nothing
) -> torch.Tensor:
    """`qk_norm_rope_ref`, then `store_kv_ref` of the rotated keys and the values: the queries."""
    q, k = qk_norm_rope_ref(positions, q, k, q_weight, k_weight, eps, cos, sin)
    store_kv_ref(k, v, k_cache, v_cache, slot_mapping)
    return q


def qk_norm_rope_store(
    positions, q, k, v, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, slot_mapping
) -> torch.Tensor:
    """Triton twin of `qk_norm_rope_store_ref` (same arguments): one launch for a layer's q/k
    normalisation, rotation and K/V store."""
    num_tokens, q_heads, head_dim = q.shape
    k_heads, half = k.shape[1], head_dim // 2
    saturate = k_cache.dtype == torch.float8_e4m3fn
    if saturate and os.environ.get("TRITON_INTERPRET") == "1":  # see store_kv: the
        q, k = qk_norm_rope(positions, q, k, q_weight, k_weight, eps, cos, sin)  # interpreter's
        store_kv(k, v, k_cache, v_cache, slot_mapping)  # E4M3 cast needs its values rounded first
        return q
    if any(x[0].stride() != (head_dim, 1) for x in (q, k, v)):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    assert k_cache.is_contiguous() and v_cache.is_contiguous(), "bind the pool's layer slices"
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if num_tokens:
        _qk_norm_rope_kernel[(num_tokens, QK_PARTS)](
            positions, q, k, v, q_out, k_cache, v_cache, slot_mapping, q_weight, k_weight,
            cos.contiguous(), sin.contiguous(), q.stride(0), k.stride(0), v.stride(0), eps,
            Q_HEADS=q_heads, K_HEADS=k_heads, HALF=half,
            BLOCK_QH=triton.next_power_of_2(q_heads), BLOCK_KH=triton.next_power_of_2(k_heads),
            BLOCK_D=triton.next_power_of_2(half), STORE=True,
            BLOCK_ROW=triton.next_power_of_2(k_heads * head_dim), SATURATE=saturate,
            PARTS=QK_PARTS, **launch_args(q),
        )  # fmt: skip
    return q_out
