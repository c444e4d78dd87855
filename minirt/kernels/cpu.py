"""The CPU path: the references' roles, each in as few PyTorch operators as it takes.

On a GPU a decode step is a chain of kernels; on a CPU at batch 1 it is a chain of PyTorch
operators, and each one costs a few microseconds of dispatch whatever its size. The embedded
model's matrices are small, so a step spends more time starting operators than multiplying:
the references (written to be read, ~15 operators for one RMSNorm-and-rotate, ~30 for one
paged decode attention) cost twice the GEMMs. Here the same arithmetic calls PyTorch's fused CPU
operators instead: `rms_norm`, `scaled_dot_product_attention` (grouped-query heads included),
`index_copy_`. The role of each function and its signature are its reference's; the tests hold
every one to its reference on random inputs, and the engine to the same greedy tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minirt.kernels.store_kv import store_kv_ref


def rms_norm_cpu(x, weight, eps, residual=None):
    """`rms_norm_ref` as one fused operator: statistics in fp32, rounded to the activation
    dtype, then scaled by the weight (the order transformers uses)."""
    if residual is not None:
        x = x + residual
    out = F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype) * weight
    return out if residual is None else (out, x)


def rope_cpu(positions, q, k, cos, sin):
    """`rope_ref` with q and k rotated together: one set of operators for both."""
    heads = q.shape[1]
    qk = torch.cat((q, k), dim=1).float()
    c, s = cos[positions][:, None, :], sin[positions][:, None, :]
    x1, x2 = qk.chunk(2, dim=-1)
    out = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(q.dtype)
    return out[:, :heads], out[:, heads:]


def qk_norm_rope_cpu(positions, q, k, q_weight, k_weight, eps, cos, sin):
    """`qk_norm_rope_ref`: per-head RMSNorm of q and k, then RoPE."""
    q, k = rms_norm_cpu(q, q_weight, eps), rms_norm_cpu(k, k_weight, eps)
    return rope_cpu(positions, q, k, cos, sin)


def store_kv_cpu(k, v, k_cache, v_cache, slot_mapping):
    """`store_kv_ref` as one `index_copy_` per cache (padding slots -1 go the reference's way)."""
    if bool((slot_mapping < 0).any()):
        return store_kv_ref(k, v, k_cache, v_cache, slot_mapping)
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def decode_attention_cpu(
    q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len, num_splits=None
):
    """`decode_attention_ref`: each sequence's blocks gathered, then one SDPA call for the batch.

    Only as many tokens as the longest context are gathered (`context_lens` lives on the CPU, so
    reading it costs nothing). With ragged contexts the unwritten slots are zeroed (the pool is
    torch.empty: they may hold NaN) and masked; a padding row (context 0) attends to nothing."""
    lens = context_lens.tolist()
    n, block_size = max(max(lens), 1), k_cache.shape[1]
    tables = block_tables[:, : -(-n // block_size)].clamp(min=0).long()
    k = k_cache[tables].flatten(1, 2)[:, :n].transpose(1, 2).to(q.dtype)  # [seqs, kv_heads, n, d]
    v = v_cache[tables].flatten(1, 2)[:, :n].transpose(1, 2).to(q.dtype)
    mask = None
    if min(lens) < n:
        written = (torch.arange(n) < context_lens[:, None])[:, None, :, None]
        k, v = k.where(written, 0), v.where(written, 0)
        mask = written.transpose(2, 3)  # [seqs, 1, 1, n]: which keys each query may see
    out = F.scaled_dot_product_attention(
        q[:, :, None], k, v, attn_mask=mask, scale=scale, enable_gqa=True
    )[:, :, 0]
    return out.where(context_lens[:, None, None] > 0, 0)
