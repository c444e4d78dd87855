"""store_kv: write each new token's K and V into its slot of the paged pool.

A slot is `block * block_size + offset`, computed on the host from the block table (the
`slot_mapping`). Slot -1 means "store nothing": a CUDA graph pads its batch with such rows.
Notebook 01 (KV cache) shows which bytes of the pool one token's store touches. Into an FP8
pool (`kv_cache_dtype="fp8"`, E4M3) a value saturates at +-448: the format has no infinity.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

FP8_MAX = 448.0  # the largest finite E4M3 value


def to_cache_dtype(x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
    """`x` as the cache stores it; into an FP8 cache it saturates at +-FP8_MAX first (a K or V
    past the range becomes the largest value, never NaN, whatever the device's cast does)."""
    if cache.dtype == torch.float8_e4m3fn:
        x = x.clamp(-FP8_MAX, FP8_MAX)
    return x.to(cache.dtype)


def store_kv_ref(
    k: torch.Tensor,  # [num_tokens, kv_heads, head_dim]
    v: torch.Tensor,  # [num_tokens, kv_heads, head_dim]
    k_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    slot_mapping: torch.Tensor,  # [num_tokens] int64; -1 = padding, store nothing
) -> None:
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = to_cache_dtype(k[keep], k_cache)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = to_cache_dtype(v[keep], v_cache)


@triton.jit
def _store_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    k_stride, v_stride,  # elements between tokens of k and v (they may be views of a qkv output)
    ROW: tl.constexpr,  # kv_heads * head_dim: one token's keys, contiguous in the pool
    BLOCK: tl.constexpr,  # ROW rounded up to a power of two
    SATURATE: tl.constexpr,  # an FP8 pool: clamp to +-FP8_MAX before the cast
):  # fmt: skip
    token = tl.program_id(0)  # one program per token
    slot = tl.load(slot_ptr + token).to(tl.int64)  # int64: slot * ROW overflows int32 in a big pool
    if slot >= 0:
        cols = tl.arange(0, BLOCK)
        mask = cols < ROW
        key = tl.load(k_ptr + token * k_stride + cols, mask=mask)
        value = tl.load(v_ptr + token * v_stride + cols, mask=mask)
        if SATURATE:
            key = tl.minimum(tl.maximum(key.to(tl.float32), -448.0), 448.0)  # FP8_MAX
            value = tl.minimum(tl.maximum(value.to(tl.float32), -448.0), 448.0)
        tl.store(k_cache_ptr + slot * ROW + cols, key.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + slot * ROW + cols, value.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Triton twin of `store_kv_ref` (same arguments)."""
    num_tokens, kv_heads, head_dim = k.shape
    row = kv_heads * head_dim
    if k[0].stride() != (head_dim, 1) or v[0].stride() != (head_dim, 1):
        k, v = k.contiguous(), v.contiguous()  # a token's heads must be one contiguous row
    assert k_cache.is_contiguous() and v_cache.is_contiguous(), "bind the pool's layer slices"
    if num_tokens == 0:
        return
    saturate = k_cache.dtype == torch.float8_e4m3fn
    if saturate and os.environ.get("TRITON_INTERPRET") == "1":
        # The interpreter's float -> E4M3 cast drops the carry when rounding up crosses a power
        # of two (-127.9 becomes -64, not -128); the GPU's cast does not. Values that are E4M3
        # already cast exactly, so round them here first (the kernel's saturation still runs).
        k, v = (to_cache_dtype(x, k_cache).to(x.dtype) for x in (k, v))
    _store_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping, k.stride(0), v.stride(0),
        ROW=row, BLOCK=triton.next_power_of_2(row),
        SATURATE=saturate,
    )  # fmt: skip
