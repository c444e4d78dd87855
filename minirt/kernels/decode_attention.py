"""decode_attention: one new query per sequence against its paged KV, split along the context.

Decode is memory-bound: every step reads each sequence's whole KV once. With few sequences, one
program per (sequence, KV head) leaves most SMs idle, so each context is cut into partitions read
in parallel (split-K, "flash-decoding"): as many as the batch needs to fill the GPU, each sequence
its own length (`split_plan`). Each writes a partial output and its log-sum-exp and counts
itself done (an atomic counter per sequence and KV head); the last split to finish merges them
all. A second merge kernel would cost the step one more launch and wait per layer: at batch 1
that is ~2 µs of 28 layers' ~30. The query heads that share a KV head (GQA) are one program's
rows, so each K/V tile is loaded once for the whole group. Notebook 04.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from minirt.kernels import qk_norm_rope as qkn
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


_counters: dict[torch.device, torch.Tensor] = {}


def split_counters(device: torch.device, n: int) -> torch.Tensor:
    """n int32 zeros that stay zero between launches (the merging program resets its own): how
    many splits of each (sequence, KV head) have finished. One buffer a device, shared by every
    launch on it, allocated before any CUDA graph captures it (the default plan splits only
    batches of fewer than TARGET_PROGRAMS pairs, so the first size covers every graph)."""
    have = _counters.get(device)
    if have is None or have.numel() < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("decode_attention: run once before capturing a larger batch")
        have = _counters[device] = torch.zeros(max(n, TARGET_PROGRAMS), dtype=torch.int32,
                                               device=device)  # fmt: skip
    return have


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


# The block table's width and where the metadata views (a graph's positions and slots too) start
# change with the batch: as in minirt.kernels.prefill_attention, neither may compile the kernel
# again mid-serving.
@triton.jit(
    do_not_specialize=["table_stride"],
    do_not_specialize_on_alignment=["block_tables_ptr", "context_lens_ptr", "pos_ptr", "slot_ptr"],
)
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr,
    part_out_ptr, part_lse_ptr,  # [num_seqs, num_heads, num_splits, head_dim], [.., num_splits]
    counter_ptr,  # [num_seqs * KV_HEADS] int32 zeros: the splits done (`split_counters`)
    out_ptr,  # [num_seqs, num_heads, head_dim]
    qk_scale, table_stride,
    # decode_attention_qkv only (NEW): this step's token, q/k/v straight from the projection
    pos_ptr, slot_ptr, q_new_ptr, k_new_ptr, v_new_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr,
    q_stride, k_stride, v_stride, eps,
    NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr = 0,
    NEW: tl.constexpr = False, SATURATE: tl.constexpr = False, GROUP_P2: tl.constexpr = 1,
):  # fmt: skip
    pdl_wait(PDL)  # minirt.kernels.pdl
    seq, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ctx = tl.load(context_lens_ptr + seq)
    partition = _partition(ctx, NUM_SPLITS, BLOCK_N)
    start = split * partition
    g = tl.arange(0, BLOCK_G)  # the query heads sharing this KV head (padded to >= 16 rows)
    d = tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + g
    q_mask = (g < GROUP)[:, None] & (d < HEAD_DIM)[None, :]
    rows = (seq * NUM_HEADS + heads)[:, None] * HEAD_DIM + d[None, :]  # [BLOCK_G, BLOCK_D]
    if start < ctx:  # splits past this sequence's context have nothing to read
        end = tl.minimum(start + partition, ctx)
        if NEW:  # q/k-norm + RoPE into q (this program's copy), the new K/V into the pool by
            # the split that reads them; the barrier makes those stores visible to its threads
            qkn.decode_new_token(
                seq, kv_head, end == ctx, pos_ptr, slot_ptr, q_new_ptr, k_new_ptr, v_new_ptr,
                q_ptr, k_cache_ptr, v_cache_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr,
                q_stride, k_stride, v_stride, eps, GROUP, KV_HEADS, HEAD_DIM // 2,
                GROUP_P2, BLOCK_D // 2, SATURATE,
            )  # fmt: skip
            tl.debug_barrier()
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
        if NUM_SPLITS == 1:  # nothing to merge: the output itself
            tl.store(out_ptr + rows, (acc / l[:, None]).to(out_ptr.dtype.element_ty), mask=q_mask)
        else:
            part = (seq * NUM_HEADS + heads) * NUM_SPLITS  # [BLOCK_G]: each head's first split
            tl.store(part_out_ptr + (part + split)[:, None] * HEAD_DIM + d[None, :],
                     acc / l[:, None], mask=q_mask)  # fmt: skip
            tl.store(part_lse_ptr + part + split, m + tl.log2(l), mask=g < GROUP)
            # Count this split done; the last of the pair's `used` splits merges them all. The
            # barrier puts every thread's stores before the count, the release makes them
            # visible with it, and the merging program's acquire sees them all.
            tl.debug_barrier()
            counter = counter_ptr + seq * KV_HEADS + kv_head
            done = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu")
            used = tl.cdiv(ctx, partition)  # splits that have something to read
            if done == used - 1:
                tl.store(counter, 0)  # zero again for the next launch
                _merge(part_out_ptr, part_lse_ptr, out_ptr, part, rows, g < GROUP, q_mask,
                       used, HEAD_DIM, BLOCK_G, BLOCK_D)  # fmt: skip
    elif split == 0:  # an empty context (a padding row): zeros, and nothing to merge
        zeros = tl.zeros([BLOCK_G, BLOCK_D], out_ptr.dtype.element_ty)
        tl.store(out_ptr + rows, zeros, mask=q_mask)


@triton.jit
def _merge(part_out_ptr, part_lse_ptr, out_ptr, part, rows, g_ok, q_mask, used,
           HEAD_DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """The splits' partial outputs, weighted by their share of the softmax mass (from each one's
    log-sum-exp, rescaled to a running maximum as in the split loop), into the output rows.
    `.cg` loads read L2, where the other programs' stores are, never a stale L1 line."""
    d = tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    w = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for s in range(0, used):
        lse = tl.load(part_lse_ptr + part + s, mask=g_ok, other=0.0, cache_modifier=".cg")
        o = tl.load(part_out_ptr + (part + s)[:, None] * HEAD_DIM + d[None, :], mask=q_mask,
                    other=0.0, cache_modifier=".cg")  # fmt: skip
        m_new = tl.maximum(m, lse)
        alpha = tl.exp2(m - m_new)
        share = tl.exp2(lse - m_new)
        w = w * alpha + share
        acc = acc * alpha[:, None] + share[:, None] * o
        m = m_new
    tl.store(out_ptr + rows, (acc / w[:, None]).to(out_ptr.dtype.element_ty), mask=q_mask)


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
    q = q.contiguous()
    return _launch(q, k_cache, v_cache, block_tables, context_lens, scale, None, num_splits,
                   block_n, num_warps, num_stages)  # fmt: skip


def decode_attention_qkv_ref(
    positions, q, k, v, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, slot_mapping,
    block_tables, context_lens, scale, max_context_len,
) -> torch.Tensor:  # fmt: skip
    """A decode step's attention from the projection's raw q, k, v [num_seqs, heads, head_dim]:
    `qk_norm_rope_store_ref` (Qwen3's q/k-norm, RoPE, the K/V store), then
    `decode_attention_ref`."""
    q = qkn.qk_norm_rope_store_ref(positions, q, k, v, q_weight, k_weight, eps, cos, sin,
                                   k_cache, v_cache, slot_mapping)  # fmt: skip
    return decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, scale,
                                max_context_len)  # fmt: skip


def decode_attention_qkv(
    positions, q, k, v, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, slot_mapping,
    block_tables, context_lens, scale, max_context_len,
) -> torch.Tensor:  # fmt: skip
    """Triton twin of `decode_attention_qkv_ref`: one kernel a layer instead of two. Each
    program normalises and rotates its group's queries itself (the head's splits each do: a
    few hundred bytes from L2), and the split that ends at the new token stores its K/V before
    it reads them. At batch 1 the separate q/k-norm kernel cost a launch and a wait per layer."""
    fp8 = k_cache.dtype == torch.float8_e4m3fn
    if fp8 and os.environ.get("TRITON_INTERPRET") == "1":  # see qk_norm_rope_store
        q = qkn.qk_norm_rope_store(positions, q, k, v, q_weight, k_weight, eps, cos, sin,
                                   k_cache, v_cache, slot_mapping)  # fmt: skip
        return decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale,
                                max_context_len)  # fmt: skip
    head_dim = q.shape[2]
    if any(x[0].stride() != (head_dim, 1) for x in (q, k, v)):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    new = (positions, slot_mapping, q, k, v, q_weight, k_weight, cos.contiguous(),
           sin.contiguous(), q.stride(0), k.stride(0), v.stride(0), eps)  # fmt: skip
    q_rot = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # each program's queries
    return _launch(q_rot, k_cache, v_cache, block_tables, context_lens, scale, new,
                   saturate=fp8)  # fmt: skip


def _launch(q, k_cache, v_cache, block_tables, context_lens, scale, new, num_splits=None,
            block_n=None, num_warps=4, num_stages=None, saturate=False):  # fmt: skip
    """The split kernel's launch: q [num_seqs, heads, head_dim] the queries, or with `new`
    (decode_attention_qkv's arguments) where each program writes its rotated ones."""
    num_seqs, num_heads, head_dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // kv_heads
    splits = split_plan(num_seqs * kv_heads, num_splits)
    tiles = default_tiles(splits)
    block_n, num_stages = block_n or tiles[0], num_stages or tiles[1]
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    part_out = torch.empty(num_seqs, num_heads, splits, head_dim, dtype=torch.float32,
                           device=q.device)  # fmt: skip
    part_lse = torch.empty(num_seqs, num_heads, splits, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    if num_seqs == 0:
        return out
    counters = split_counters(q.device, num_seqs * kv_heads)
    block_d = max(16, triton.next_power_of_2(head_dim))
    precision = "ieee" if q.dtype == torch.float32 else "tf32"  # fp32 stays exact; 16-bit: MMA
    fresh = new is not None
    if not fresh:  # unused pointers and numbers
        new = (context_lens, context_lens, q, q, q, q, q, q, q, 0, 0, 0, 0.0)
    _decode_split_kernel[(num_seqs, kv_heads, splits)](
        q, k_cache, v_cache, block_tables, context_lens, part_out, part_lse, counters, out,
        scale * 1.4426950408889634, block_tables.stride(0), *new,  # log2(e): exp2 is cheaper
        NUM_HEADS=num_heads, KV_HEADS=kv_heads, GROUP=group, HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size, NUM_SPLITS=splits,
        BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n, BLOCK_D=block_d,
        PRECISION=precision, num_warps=num_warps, num_stages=num_stages,
        NEW=fresh, SATURATE=saturate, GROUP_P2=triton.next_power_of_2(group), **launch_args(q),
    )  # fmt: skip
    return out
