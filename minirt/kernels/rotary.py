"""rope: rotate each (i, i + d/2) pair of q and k by position x frequency (rotate-half form).

The cos/sin tables are precomputed for every position (RotaryEmbedding holds them); the kernel
applies them to all query and key heads of a token in one program, so q and k are each read and
written once. Notebook 00 (tour) shows where positions come from in a ragged batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _rotate_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def rope_ref(
    positions: torch.Tensor,  # [num_tokens] int64
    q: torch.Tensor,  # [num_tokens, heads, head_dim]
    k: torch.Tensor,  # [num_tokens, kv_heads, head_dim]
    cos: torch.Tensor,  # [max_positions, head_dim // 2] fp32
    sin: torch.Tensor,  # [max_positions, head_dim // 2] fp32
) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = cos[positions][:, None, :], sin[positions][:, None, :]
    return _rotate_ref(q, c, s), _rotate_ref(k, c, s)


@triton.jit
def _rotate(x_ptr, out_ptr, base, c, s, HEADS: tl.constexpr, HALF: tl.constexpr,
            BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    heads = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < HEADS) & (cols < HALF)
    offs = base + heads * (2 * HALF) + cols  # first halves; the second half is HALF further on
    x1 = tl.load(x_ptr + offs, mask=mask, other=0.0)
    x2 = tl.load(x_ptr + offs + HALF, mask=mask, other=0.0)
    y1 = x1.to(tl.float32) * c - x2.to(tl.float32) * s
    y2 = x2.to(tl.float32) * c + x1.to(tl.float32) * s
    tl.store(out_ptr + offs, y1.to(x1.dtype), mask=mask)
    tl.store(out_ptr + offs + HALF, y2.to(x1.dtype), mask=mask)


@triton.jit
def _rope_kernel(
    pos_ptr, q_ptr, k_ptr, q_out_ptr, k_out_ptr, cos_ptr, sin_ptr,
    Q_HEADS: tl.constexpr, K_HEADS: tl.constexpr, HALF: tl.constexpr,
    BLOCK_QH: tl.constexpr, BLOCK_KH: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)[None, :]
    c = tl.load(cos_ptr + pos * HALF + cols, mask=cols < HALF, other=0.0)  # [1, HALF]
    s = tl.load(sin_ptr + pos * HALF + cols, mask=cols < HALF, other=0.0)
    _rotate(q_ptr, q_out_ptr, token * Q_HEADS * 2 * HALF, c, s, Q_HEADS, HALF, BLOCK_QH, BLOCK_D)
    _rotate(k_ptr, k_out_ptr, token * K_HEADS * 2 * HALF, c, s, K_HEADS, HALF, BLOCK_KH, BLOCK_D)


def rope(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of `rope_ref`."""
    num_tokens, q_heads, head_dim = q.shape
    k_heads, half = k.shape[1], head_dim // 2
    q, k = q.contiguous(), k.contiguous()
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    if num_tokens:
        _rope_kernel[(num_tokens,)](
            positions, q, k, q_out, k_out, cos.contiguous(), sin.contiguous(),
            Q_HEADS=q_heads, K_HEADS=k_heads, HALF=half,
            BLOCK_QH=triton.next_power_of_2(q_heads), BLOCK_KH=triton.next_power_of_2(k_heads),
            BLOCK_D=triton.next_power_of_2(half),
        )  # fmt: skip
    return q_out, k_out
