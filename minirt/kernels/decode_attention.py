"""decode_attention: one new query per sequence against its paged KV, split along the context.

Decode is memory-bound: every step reads each sequence's whole KV once. With few sequences, one
program per (sequence, KV head) leaves most SMs idle, so each context is cut into partitions read
in parallel (split-K, "flash-decoding"): as many as the batch needs to fill the GPU, each sequence
its own length (`split_plan`). Each writes a partial output and its log-sum-exp, and a small
second kernel merges them (none is needed with one split). The query heads that share a KV head
(GQA) are one program's rows, so each K/V tile is loaded once for the whole group. Notebook 04.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minirt.kernels.paged_attention import paged_attention_ref, paged_kv_offsets
from minirt.kernels.pdl import launch_args, pdl_wait

TARGET_PROGRAMS = 1024  # (sequence, KV head, split) programs a launch aims for: ~8 an SM
MAX_SPLITS = 64  # caps the partials' memory (a long context gets longer partitions instead)


def default_tiles(num_splits: int) -> tuple[int, int]:
    """(block_n, num_stages) by the split count. One or two splits (a batch of 64 or more) mean
    long partitions: 128-token tiles, three loads in flight, read the KV 7 % faster at batch 256
    (H100: 2.83 against 2.63 TB/s over contexts of 100-2,048 tokens). More splits mean short
    partitions, where 32-token tiles waste least at each end; with 128-token tiles at four
    splits the batch-64 step over 128-384-token contexts was 3 % slower
    (`docs/measurements/decode-tiles-h100-20261206.json`)."""
    return (128, 3) if num_splits <= 2 else (32, 2)


def decode_attention_ref(
    q: torch.Tensor,  # [num_seqs, num_heads, head_dim]: one query per sequence
    k_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor,  # [num_blocks, block_size, kv_heads, head_dim]
    block_tables: torch.Tensor,  # [num_seqs, max_blocks] int32
    context_lens: torch.Tensor,  # [num_seqs]: tokens incl. this step's; 0 = padding row
    scale: float,
    max_context_len: int,  # an upper bound (a CUDA graph passes max_model_len)
    num_splits: int | None = None,  # the kernel's choice; the result does not depend on it
) -> torch.Tensor:  # [num_seqs, num_heads, head_dim]
    num_seqs = q.shape[0]
    starts = torch.arange(num_seqs + 1, device=q.device)
    out = paged_attention_ref(
        q, k_cache, v_cache, block_tables, context_lens.clamp(min=1), starts, scale, 1,
        max_context_len,
    )  # fmt: skip
    return out.where(context_lens[:, None, None] > 0, 0)  # a padding row attends to nothing


def split_plan(num_programs: int, num_splits: int | None = None) -> int:
    """How many parts each (sequence, KV head) pair's context is cut into: enough programs to
    fill the GPU, from the batch alone. Each sequence then cuts *its own* context into that many
    partitions (rounded up to a tile, so a short one uses fewer), in the kernel. The bound a CUDA
    graph is captured with (max_model_len: 40,960 for Qwen3) must not size the grid: cut by it,
    every short context would be one split of 1,024 tokens (a batch of one: 8 programs on a
    132-SM GPU) and most programs would find nothing to read."""
    if num_splits is not None:
        return max(1, num_splits)
    wanted = triton.next_power_of_2(triton.cdiv(TARGET_PROGRAMS, num_programs))
    return max(1, min(MAX_SPLITS, wanted))


@triton.jit
def _partition(ctx, NUM_SPLITS: tl.constexpr, BLOCK_N: tl.constexpr):
    """A sequence's tokens per split: its context / NUM_SPLITS, rounded up to whole tiles."""
    return tl.maximum(tl.cdiv(tl.cdiv(ctx, NUM_SPLITS), BLOCK_N), 1) * BLOCK_N


# The block table's width and where the metadata views start change with the batch: as in
# minirt.kernels.prefill_attention, neither may compile the kernel again mid-serving.
@triton.jit(
    do_not_specialize=["table_stride"],
    do_not_specialize_on_alignment=["block_tables_ptr", "context_lens_ptr"],
)
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr,
    part_out_ptr, part_lse_ptr,  # [num_seqs, num_heads, num_splits, head_dim], [.., num_splits]
    out_ptr,  # [num_seqs, num_heads, head_dim]: written here when NUM_SPLITS == 1
    qk_scale, table_stride,
    NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr = 0,
):  # fmt: skip
    seq, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ctx = tl.load(context_lens_ptr + seq)  # a step input: read before the wait (pdl)
    partition = _partition(ctx, NUM_SPLITS, BLOCK_N)
    start = split * partition
    pdl_wait(PDL)  # minirt.kernels.pdl: q and the new K/V are the kernel before's
    g = tl.arange(0, BLOCK_G)  # the query heads sharing this KV head (padded to >= 16 rows)
    d = tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + g
    q_mask = (g < GROUP)[:, None] & (d < HEAD_DIM)[None, :]
    rows = (seq * NUM_HEADS + heads)[:, None] * HEAD_DIM + d[None, :]  # [BLOCK_G, BLOCK_D]
    if start < ctx:  # splits past this sequence's context have nothing to read
        end = tl.minimum(start + partition, ctx)
        q = tl.load(q_ptr + rows, mask=q_mask, other=0.0)
        m = tl.full([BLOCK_G], float("-inf"), tl.float32)  # running max of the scores (log2 units)
        l = tl.zeros([BLOCK_G], tl.float32)  # running sum of exp2(score - m)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        table = block_tables_ptr + seq.to(tl.int64) * table_stride
        for n0 in range(start, end, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            valid = n < end
            kv_offs, kv_mask = paged_kv_offsets(
                table, n, valid, kv_head, d, BLOCK_SIZE, KV_HEADS, HEAD_DIM
            )  # [BLOCK_N, BLOCK_D]
            k = tl.load(k_cache_ptr + kv_offs, mask=kv_mask, other=0.0)
            k = k.to(q.dtype)  # a no-op, or an FP8 pool's values upcast
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_G, BLOCK_N]
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp2(m - m_new)  # rescales what was summed under the old max
            p = tl.exp2(s - m_new[:, None])
            l = l * alpha + tl.sum(p, axis=1)
            v = tl.load(v_cache_ptr + kv_offs, mask=kv_mask, other=0.0).to(q.dtype)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m = m_new
        if NUM_SPLITS == 1:  # nothing to merge: the output itself, and no second kernel
            tl.store(out_ptr + rows, (acc / l[:, None]).to(out_ptr.dtype.element_ty), mask=q_mask)
        else:
            part = (seq * NUM_HEADS + heads) * NUM_SPLITS + split  # [BLOCK_G]
            tl.store(part_out_ptr + part[:, None] * HEAD_DIM + d[None, :], acc / l[:, None],
                     mask=q_mask)  # fmt: skip
            tl.store(part_lse_ptr + part, m + tl.log2(l), mask=g < GROUP)
    elif NUM_SPLITS == 1:  # an empty context (a padding row): zeros, as the merge would give
        zeros = tl.zeros([BLOCK_G, BLOCK_D], out_ptr.dtype.element_ty)
        tl.store(out_ptr + rows, zeros, mask=q_mask)


@triton.jit(do_not_specialize_on_alignment=["context_lens_ptr"])
def _decode_combine_kernel(
    part_out_ptr, part_lse_ptr, context_lens_ptr, out_ptr,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr = 0,
):  # fmt: skip
    seq, head = tl.program_id(0), tl.program_id(1)
    ctx = tl.load(context_lens_ptr + seq)  # a step input: read before the wait (pdl)
    used = tl.cdiv(ctx, _partition(ctx, NUM_SPLITS, BLOCK_N))  # splits that wrote something
    pdl_wait(PDL)  # minirt.kernels.pdl: the partials are the kernel before's
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    part = (seq * NUM_HEADS + head) * NUM_SPLITS + s
    lse = tl.load(part_lse_ptr + part, mask=s < used, other=float("-inf"))
    top = tl.where(used > 0, tl.max(lse, axis=0), 0.0)
    w = tl.where(s < used, tl.exp2(lse - top), 0.0)  # each split's share of the softmax mass
    o = tl.load(part_out_ptr + part[:, None] * HEAD_DIM + d[None, :],
                mask=(s < used)[:, None] & (d < HEAD_DIM)[None, :], other=0.0)  # fmt: skip
    out = tl.sum(w[:, None] * o, axis=0) / tl.maximum(tl.sum(w, axis=0), 1e-30)  # 0 if no context
    tl.store(out_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + d,
             out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)  # fmt: skip


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    max_context_len: int,
    num_splits: int | None = None,
    block_n: int | None = None,
    num_warps: int = 4,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Triton twin of `decode_attention_ref`; `block_n`, `num_warps`, `num_stages` tune it.

    Launch shapes depend only on the batch and the head counts (not on `context_lens`' values,
    nor on `max_context_len`), so a CUDA graph captured once replays for any contexts.
    """
    num_seqs, num_heads, head_dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // kv_heads
    splits = split_plan(num_seqs * kv_heads, num_splits)
    tiles = default_tiles(splits)
    block_n, num_stages = block_n or tiles[0], num_stages or tiles[1]
    q = q.contiguous()
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    part_out = torch.empty(num_seqs, num_heads, splits, head_dim, dtype=torch.float32,
                           device=q.device)  # fmt: skip
    part_lse = torch.empty(num_seqs, num_heads, splits, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    if num_seqs == 0:
        return out
    block_d = max(16, triton.next_power_of_2(head_dim))
    precision = "ieee" if q.dtype == torch.float32 else "tf32"  # fp32 stays exact; 16-bit: MMA
    _decode_split_kernel[(num_seqs, kv_heads, splits)](
        q, k_cache, v_cache, block_tables, context_lens, part_out, part_lse, out,
        scale * 1.4426950408889634, block_tables.stride(0),  # log2(e): exp2 is the cheap one
        NUM_HEADS=num_heads, KV_HEADS=kv_heads, GROUP=group, HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, NUM_SPLITS=splits,
        BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n, BLOCK_D=block_d,
        PRECISION=precision, num_warps=num_warps, num_stages=num_stages, **launch_args(q),
    )  # fmt: skip
    if splits == 1:
        return out
    _decode_combine_kernel[(num_seqs, num_heads)](
        part_out, part_lse, context_lens, out,
        NUM_HEADS=num_heads, HEAD_DIM=head_dim, NUM_SPLITS=splits, BLOCK_N=block_n,
        BLOCK_S=triton.next_power_of_2(splits), BLOCK_D=block_d, **launch_args(q),
    )  # fmt: skip
    return out
