"""The CPU path: the references' roles, each in as few PyTorch operators as it takes.

On a GPU a decode step is a chain of kernels; on a CPU at batch 1 it is a chain of PyTorch
operators, and each one costs a few microseconds of dispatch whatever its size. The embedded
model's matrices are small, so a step spends more time starting operators than multiplying:
the references (written to be read, ~15 operators for one RMSNorm-and-rotate, ~30 for one
paged decode attention) cost twice the GEMMs. Here the same arithmetic calls PyTorch's fused CPU
operators instead: `scaled_dot_product_attention` (grouped-query heads included, in fp32 whatever
the KV dtype: a CPU's half-precision SDPA is slower), `index_select`, `index_copy_`, and q and k
normalised and rotated together. The role of each function and its signature are its
reference's; the tests hold every one to its reference on random inputs, and the engine to the
same greedy tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minirt.kernels.store_kv import store_kv_ref, to_cache_dtype


def rms_norm_cpu(x, weight, eps, residual=None):
    """`rms_norm_ref`'s arithmetic: statistics in fp32, rounded to the activation dtype, then
    scaled by the weight (the order transformers uses). PyTorch's F.rms_norm is no faster on a
    CPU (it runs these same operators, and more), and these give the reference's bits."""
    if residual is not None:
        x = x + residual
    out = _normalize(x, eps).to(x.dtype) * weight
    return out if residual is None else (out, x)


def _normalize(x, eps):
    h = x.float()
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


def rope_cpu(positions, q, k, cos, sin):
    """`rope_ref` with q and k rotated together: one set of operators for both."""
    heads = q.shape[1]
    out = _rotate(torch.cat((q, k), dim=1).float(), positions, cos, sin).to(q.dtype)
    return out[:, :heads], out[:, heads:]


def _rotate(x, positions, cos, sin):
    """Rotate-half RoPE as x * C + swap(x) * S, where swap exchanges the halves, C = [c, c] and
    S = [-s, s]: the reference's (x1 c - x2 s, x2 c + x1 s) to the last bit, in fewer operators."""
    wide_cos, wide_sin = _wide_tables(cos, sin)
    x1, x2 = x.chunk(2, dim=-1)
    return (
        x * wide_cos[positions][:, None]
        + torch.cat((x2, x1), dim=-1) * wide_sin[positions][:, None]
    )


_wide = (None, None, None)  # (cos, [cos, cos], [-sin, sin]) of the model rotated last


def _wide_tables(cos, sin):
    """C and S for every position, built once per model (every layer passes the same tables;
    one tuple, read once, so a thread running another model never mixes two models' tables)."""
    global _wide
    wide = _wide
    if wide[0] is not cos:
        wide = _wide = cos, torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)
    return wide[1], wide[2]


def qk_norm_rope_cpu(positions, q, k, q_weight, k_weight, eps, cos, sin):
    """`qk_norm_rope_ref`: per-head RMSNorm of q and k, then RoPE; q and k normalised in one
    call (the statistics are per head either way), each scaled by its own weight."""
    heads, dtype = q.shape[1], q.dtype
    qk = torch.cat((q, k), dim=1)
    qk = _normalize(qk, eps).to(dtype)
    weight = torch.cat((q_weight.expand(heads, -1), k_weight.expand(k.shape[1], -1)))
    out = _rotate((qk * weight).float(), positions, cos, sin).to(dtype)
    return out[:, :heads], out[:, heads:]


def store_kv_cpu(k, v, k_cache, v_cache, slot_mapping):
    """`store_kv_ref` as one `index_copy_` per cache (padding slots -1 go the reference's way)."""
    if slot_mapping.numel() and int(slot_mapping.min()) < 0:
        return store_kv_ref(k, v, k_cache, v_cache, slot_mapping)
    for x, cache in ((k, k_cache), (v, v_cache)):
        x = to_cache_dtype(x, cache)
        if cache.dtype == torch.float8_e4m3fn:  # no index_copy_ for FP8: copy the bytes
            x, cache = x.view(torch.uint8), cache.view(torch.uint8)
        cache.view(-1, *cache.shape[2:]).index_copy_(0, slot_mapping, x)


# Sequences whose KV one gather copies. The gathered K and V are fresh tensors every call; past
# ~32 MB the allocator takes them from the OS and gives them back, and touching new pages cost
# more than the copy itself (256 sequences x 300 tokens: 106 ms a layer at once, 29 ms by 16s).
GATHER_SEQS = 16


def decode_attention_cpu(
    q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len, num_splits=None
):
    """`decode_attention_ref`: each sequence's blocks gathered, then one SDPA call for the batch.

    Only as many tokens as the longest context are gathered (`context_lens` lives on the CPU, so
    reading it costs nothing). With ragged contexts the unwritten slots are zeroed (the pool is
    torch.empty: they may hold NaN) and masked; a padding row (context 0) attends to nothing."""
    lens = context_lens.tolist()
    if len(lens) > GATHER_SEQS:  # a few sequences at a time (see GATHER_SEQS)
        parts = range(0, len(lens), GATHER_SEQS)
        return torch.cat([decode_attention_cpu(q[i : i + GATHER_SEQS], k_cache, v_cache,
                                               block_tables[i : i + GATHER_SEQS],
                                               context_lens[i : i + GATHER_SEQS], scale,
                                               max_context_len) for i in parts])  # fmt: skip
    n, block_size = max(max(lens), 1), k_cache.shape[1]
    tables = block_tables[:, : -(-n // block_size)]
    ragged = min(lens) < n
    if ragged:  # a shorter row's table ends in -1 padding: read block 0 there, masked below
        tables = tables.clamp(min=0)

    def gather(cache):  # [seqs, kv_heads, n, d]: index_select is the cheapest gather on a CPU
        rows = cache.index_select(0, tables.flatten()).view(len(lens), -1, *cache.shape[2:])
        return rows[:, :n].transpose(1, 2).float()  # fp32 math: a CPU's half SDPA is slower

    k, v = gather(k_cache), gather(v_cache)
    mask = None
    if ragged:
        written = (torch.arange(n) < context_lens[:, None])[:, None, :, None]
        k, v = k.where(written, 0), v.where(written, 0)
        mask = written.transpose(2, 3)  # [seqs, 1, 1, n]: which keys each query may see
    out = F.scaled_dot_product_attention(
        q[:, :, None].float(), k, v, attn_mask=mask, scale=scale, enable_gqa=True
    )[:, :, 0].to(q.dtype)
    return out.where(context_lens[:, None, None] > 0, 0) if min(lens) == 0 else out


def prefill_attention_cpu(
    q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale, max_query_len,
    max_context_len,
):  # fmt: skip
    """`prefill_attention_ref` a sequence at a time: its own blocks gathered (its context, no
    padding to the batch's longest), then one SDPA call, causal with the diagonal moved right by
    the tokens it had cached (a prefix hit, an earlier chunk). The reference scores the whole
    batch as one [seqs, heads, queries, keys] tensor, most of it masked. The rows of a mixed
    step that decode (one query each) go through `decode_attention_cpu` together."""
    starts, lens, block_size = query_start_loc.tolist(), context_lens.tolist(), k_cache.shape[1]
    out = torch.empty_like(q)
    one = [s for s in range(len(lens)) if starts[s + 1] - starts[s] == 1]
    if one:
        seqs, rows = torch.tensor(one), torch.tensor([starts[s] for s in one])
        out[rows] = decode_attention_cpu(q[rows], k_cache, v_cache, block_tables[seqs],
                                         context_lens[seqs], scale, max_context_len)  # fmt: skip
    for s, ctx in enumerate(lens):
        first, end = starts[s], starts[s + 1]
        if end - first <= 1:
            continue
        blocks = block_tables[s, : -(-ctx // block_size)]
        k, v = (c.index_select(0, blocks).flatten(0, 1)[:ctx].transpose(0, 1).float()
                for c in (k_cache, v_cache))  # [kv_heads, ctx, head_dim] # fmt: skip
        rows = end - first  # query r sits at position ctx - rows + r
        mask = None if rows == ctx else torch.arange(ctx) <= torch.arange(ctx - rows, ctx)[:, None]
        o = F.scaled_dot_product_attention(q[first:end].transpose(0, 1).float(), k, v,
                                           attn_mask=mask, is_causal=mask is None, scale=scale,
                                           enable_gqa=True)  # fmt: skip
        out[first:end] = o.transpose(0, 1)
    return out


def gemv_layout(model: torch.nn.Module) -> int:
    """Store the q/k/v, o and gate/up weights column-major (same shape and values:
    `W.t().contiguous().t()`); returns how many. At batch 1 a CPU step's projections are GEMVs,
    `x @ W^T` with one row of x, and MKL runs them over contiguous rows of `W^T` faster: on one
    core of the course's 2-core machine the embedded model decodes at ~215-227 tokens/s instead
    of ~180-193 (same greedy tokens). The down projection is faster as it is. Only the order of
    the sums changes: outputs move by rounding, as they do between CPUs."""
    count = 0
    for layer in model.model.layers:
        for owner, name in ((layer.self_attn, "qkv_proj"), (layer.self_attn, "o_proj"),
                            (layer.mlp, "gate_up_proj")):  # fmt: skip
            linear = getattr(owner, name, None)  # a MoE block has no gate_up_proj
            if isinstance(linear, torch.nn.Linear) and linear.weight.dim() == 2:
                linear.weight.data = linear.weight.data.t().contiguous().t()
                count += 1
    return count
