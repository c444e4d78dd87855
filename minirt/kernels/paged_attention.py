"""Paged attention, reference version: K/V live in fixed-size blocks found through block tables.

One function serves prefill, chunked prefill and decode: each sequence brings `q_len` new tokens
whose keys were just stored, and attends causally to its first `context_len` cached tokens.
Notebook 01 (KV cache) steps through it; the Triton kernels are checked against it, and share
`paged_kv_offsets`, how a kernel finds a tile of tokens' K/V through the block table.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def paged_kv_offsets(
    table, n, valid, kv_head, d,
    BLOCK_SIZE: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    """Element offsets [len(n), len(d)] of tokens `n`'s K (or V) rows for `kv_head` in one layer's
    cache, and their mask: token n lives in block table[n // BLOCK_SIZE], slot n % BLOCK_SIZE."""
    block = tl.load(table + n // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
    row = (block * BLOCK_SIZE + n % BLOCK_SIZE) * KV_HEADS + kv_head
    return row[:, None] * HEAD_DIM + d[None, :], valid[:, None] & (d < HEAD_DIM)[None, :]


def paged_attention_ref(
    q: torch.Tensor,  # [num_tokens, num_heads, head_dim], sequences back to back
    k_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int32 (padding entries are ignored)
    context_lens: torch.Tensor,  # [num_seqs]: cached tokens incl. this step's, per sequence
    query_start_loc: torch.Tensor,  # [num_seqs + 1]: where each sequence's queries start
    scale: float,
    max_query_len: int,  # known on the host: reading them from a device tensor would
    max_context_len: int,  # stall the CPU until the GPU catches up, in every layer
) -> torch.Tensor:  # [num_tokens, num_heads, head_dim]
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = block_tables.shape[0]
    kv_heads = k_cache.shape[2]
    q_lens = query_start_loc[1:] - query_start_loc[:-1]
    # max_context_len may be an upper bound (a CUDA graph passes max_model_len): clip it to what
    # the block tables can hold.
    max_q = max_query_len
    max_ctx = min(max_context_len, block_tables.shape[1] * k_cache.shape[1])

    # Gather each sequence's K/V from its blocks: [num_seqs, max_ctx, kv_heads, head_dim].
    tables = block_tables.clamp(min=0).long()
    k = k_cache[tables].flatten(1, 2)[:, :max_ctx]
    v = v_cache[tables].flatten(1, 2)[:, :max_ctx]
    # Slots past a sequence's context were never written: the pool is torch.empty, so they may
    # hold NaN, and 0 * NaN = NaN even under a mask. Zero them.
    k_pos = torch.arange(max_ctx, device=q.device)
    written = (k_pos[None, :] < context_lens[:, None])[:, :, None, None]
    k, v = k.where(written, 0), v.where(written, 0)

    # Scatter the queries into a padded [num_seqs, max_q, ...] batch.
    seqs = torch.arange(num_seqs, device=q.device)
    seq_of_token = torch.repeat_interleave(seqs, q_lens, output_size=num_tokens)
    row = torch.arange(num_tokens, device=q.device) - query_start_loc[seq_of_token]
    qp = q.new_zeros(num_seqs, max_q, num_heads, head_dim)
    qp[seq_of_token, row] = q

    # Query row r of sequence s sits at absolute position context_len - q_len + r; causal mask.
    q_pos = (context_lens - q_lens)[:, None] + torch.arange(max_q, device=q.device)[None, :]
    mask = k_pos[None, None, :] <= q_pos[:, :, None]  # [num_seqs, max_q, max_ctx]

    # Plain softmax attention, written out (the spec the Triton kernels must match). GQA: each KV
    # head serves `group` query heads, so fold the query heads as [kv_heads, group].
    group = num_heads // kv_heads
    qg = qp.view(num_seqs, max_q, kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
    kt = k.permute(0, 2, 3, 1).to(q.dtype)[:, :, None]  # [num_seqs, kv_heads, 1, head_dim, ctx]
    scores = (qg @ kt).float() * scale  # [num_seqs, kv_heads, group, max_q, max_ctx]
    scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    probs = scores.softmax(-1).to(q.dtype)
    out = probs @ v.permute(0, 2, 1, 3).to(q.dtype)[:, :, None]  # [.., group, max_q, head_dim]
    out = out.permute(0, 3, 1, 2, 4).reshape(num_seqs, max_q, num_heads, head_dim)
    return out[seq_of_token, row]
