"""Random paged-attention inputs: K/V scattered over shuffled blocks, unused slots poisoned.

Slots a kernel must never read (past a sequence's context, blocks nobody owns) hold NaN, so a
kernel that reads one produces NaN and fails the comparison instead of passing by luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch


@dataclass
class Paged:
    q: torch.Tensor  # [num_tokens, heads, head_dim]
    k_cache: torch.Tensor  # [num_blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # [num_seqs, width] int32, -1 padded
    context_lens: torch.Tensor  # [num_seqs] int32
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32
    scale: float
    max_query_len: int
    max_context_len: int

    def prefill_args(self):
        return (self.q, self.k_cache, self.v_cache, self.block_tables, self.context_lens,
                self.query_start_loc, self.scale, self.max_query_len,
                self.max_context_len)  # fmt: skip

    def decode_args(self, bound: int | None = None):
        return (self.q, self.k_cache, self.v_cache, self.block_tables, self.context_lens,
                self.scale, bound or self.max_context_len)  # fmt: skip


def make_paged(q_lens, ctx_lens, heads=4, kv_heads=2, head_dim=16, block_size=16,
               dtype=torch.float32, device="cpu", seed=0, spare_blocks=3) -> Paged:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    need = [-(-c // block_size) for c in ctx_lens]
    num_blocks = sum(need) + spare_blocks
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"))
    v_cache = torch.full(shape, float("nan"))
    order = torch.randperm(num_blocks, generator=g).tolist()  # a sequence's blocks are scattered
    width = max(need + [1])
    tables = torch.full((len(ctx_lens), width), -1, dtype=torch.int32)
    for s, (n, c) in enumerate(zip(need, ctx_lens, strict=True)):
        blocks, order = order[:n], order[n:]
        tables[s, :n] = torch.tensor(blocks, dtype=torch.int32)
        for t in range(c):  # only the context's slots get values
            b, o = blocks[t // block_size], t % block_size
            k_cache[b, o] = torch.randn(kv_heads, head_dim, generator=g)
            v_cache[b, o] = torch.randn(kv_heads, head_dim, generator=g)
    q = torch.randn(sum(q_lens), heads, head_dim, generator=g)
    starts = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    return Paged(
        q=q.to(device, dtype), k_cache=k_cache.to(device, dtype),
        v_cache=v_cache.to(device, dtype), block_tables=tables.to(device),
        context_lens=torch.tensor(ctx_lens, dtype=torch.int32).to(device),
        query_start_loc=starts.to(device), scale=head_dim**-0.5,
        max_query_len=max(q_lens), max_context_len=max(ctx_lens),
    )  # fmt: skip


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, in fp32: one number that reads the same for every dtype."""
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm().clamp(min=1e-12)).item()


# Relative error bounds per dtype: fp32 computes exactly the reference's math; 16-bit dtypes
# round P to 8 (bf16) or 11 (fp16) mantissa bits before the P @ V product.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


@pytest.fixture
def paged():
    return make_paged
