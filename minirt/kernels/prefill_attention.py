"""prefill_attention: many new queries per sequence, causal, over paged KV (FlashAttention-style).

Each program owns a tile of BLOCK_M queries of one sequence and one head, and streams that
sequence's keys and values through in tiles of BLOCK_N, found through the block table — so the
prefix another request cached, or the earlier chunks of a chunked prefill, are read exactly like
the tokens just stored. The softmax is computed online (running max and sum), never as an
[S, S] matrix. Tiles wholly below the diagonal skip the mask. Notebook 04 derives it on the CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minirt.kernels.paged_attention import paged_attention_ref, paged_kv_offsets


def prefill_attention_ref(
    q: torch.Tensor,  # [num_tokens, num_heads, head_dim], sequences back to back
    k_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int32
    context_lens: torch.Tensor,  # [num_seqs]: cached tokens incl. this step's
    query_start_loc: torch.Tensor,  # [num_seqs + 1]
    scale: float,
    max_query_len: int,
    max_context_len: int,
) -> torch.Tensor:  # [num_tokens, num_heads, head_dim]
    """The spec is general paged attention (minirt.kernels.paged_attention)."""
    return paged_attention_ref(
        q, k_cache, v_cache, block_tables, context_lens, query_start_loc, scale,
        max_query_len, max_context_len,
    )  # fmt: skip


@triton.jit
def _attend_tile(
    acc, m, l, q, k_cache_ptr, v_cache_ptr, table, kv_head, n0, q_pos, ctx, qk_scale,
    MASKED: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One step of online softmax: fold keys [n0, n0 + BLOCK_N) into (acc, m, l)."""
    n = n0 + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    valid = n < ctx
    kv_offs, kv_mask = paged_kv_offsets(table, n, valid, kv_head, d, BLOCK_SIZE, KV_HEADS, HEAD_DIM)
    k = tl.load(k_cache_ptr + kv_offs, mask=kv_mask, other=0.0)
    k = k.to(q.dtype)  # a no-op, or an FP8 pool's values upcast
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
    if MASKED:  # near the diagonal: key n is visible to the query at q_pos iff n <= q_pos
        s = tl.where((n[None, :] <= q_pos[:, None]) & valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(s - m_new[:, None])
    l = l * alpha + tl.sum(p, axis=1)
    v = tl.load(v_cache_ptr + kv_offs, mask=kv_mask, other=0.0).to(q.dtype)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, m_new, l


# Triton compiles a kernel again for each new kind of argument: an int that is 1 or a multiple
# of 16, a pointer that is or is not 16-byte aligned. The block table's width changes with the
# batch, and the engine hands over its metadata as views into one packed buffer, at offsets that
# change too: each new kind would compile the kernel mid-serving (1.1 s for one step on the
# H100). Marked, one compiled kernel serves them all (their loads are scalar: nothing is lost).
METADATA = ["block_tables_ptr", "context_lens_ptr", "query_start_ptr"]


@triton.jit(do_not_specialize=["table_stride"], do_not_specialize_on_alignment=METADATA)
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, query_start_ptr,
    out_ptr, qk_scale, table_stride,
    NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile, seq, head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    if tile * BLOCK_M < q_len:  # shorter sequences of the batch have fewer tiles
        ctx = tl.load(context_lens_ptr + seq)
        first = ctx - q_len + tile * BLOCK_M  # absolute position of this tile's first query
        r = tl.arange(0, BLOCK_M)
        d = tl.arange(0, BLOCK_D)
        q_pos = first + r
        rows = (q_start + tile * BLOCK_M + r).to(tl.int64) * NUM_HEADS + head
        io_mask = (tile * BLOCK_M + r < q_len)[:, None] & (d < HEAD_DIM)[None, :]
        q = tl.load(q_ptr + rows[:, None] * HEAD_DIM + d[None, :], mask=io_mask, other=0.0)
        kv_head = head // (NUM_HEADS // KV_HEADS)
        table = block_tables_ptr + seq.to(tl.int64) * table_stride
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        # Keys [0, below) are visible to every query of the tile: no mask needed there.
        below = (first + 1) // BLOCK_N * BLOCK_N
        for n0 in range(0, below, BLOCK_N):
            acc, m, l = _attend_tile(acc, m, l, q, k_cache_ptr, v_cache_ptr, table, kv_head, n0,
                                     q_pos, ctx, qk_scale, False, KV_HEADS, HEAD_DIM,
                                     BLOCK_SIZE, BLOCK_N, BLOCK_D, PRECISION)  # fmt: skip
        end = tl.minimum(ctx, first + BLOCK_M)  # the last query of the tile sees up to here
        for n0 in range(below, end, BLOCK_N):
            acc, m, l = _attend_tile(acc, m, l, q, k_cache_ptr, v_cache_ptr, table, kv_head, n0,
                                     q_pos, ctx, qk_scale, True, KV_HEADS, HEAD_DIM,
                                     BLOCK_SIZE, BLOCK_N, BLOCK_D, PRECISION)  # fmt: skip
        out = acc / l[:, None]
        tl.store(out_ptr + rows[:, None] * HEAD_DIM + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=io_mask)  # fmt: skip


def prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    max_query_len: int,
    max_context_len: int,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Triton twin of `prefill_attention_ref`; `block_m`, `block_n`, warps and stages tune it."""
    num_tokens, num_heads, head_dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    num_seqs = block_tables.shape[0]
    big = q.is_cuda and q.dtype != torch.float32  # tensor-core tiles; small ones elsewhere
    block_m = block_m or (128 if big else 32)
    block_n = block_n or (128 if big else 32)  # 128 x 128, 8 warps: best of 6 on the H100
    num_warps = num_warps or (8 if big else 4)
    num_stages = num_stages or (3 if big else 2)
    q = q.contiguous()
    out = torch.empty_like(q)
    if num_tokens == 0:
        return out
    _prefill_kernel[(triton.cdiv(max_query_len, block_m), num_seqs, num_heads)](
        q, k_cache, v_cache, block_tables, context_lens, query_start_loc, out,
        scale * 1.4426950408889634, block_tables.stride(0),
        NUM_HEADS=num_heads, KV_HEADS=kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out
