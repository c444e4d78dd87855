"""Why the KV pool is allocated once: time the alternatives on this machine.

`time_pool_allocation` compares torch.empty (reserve, don't touch) with torch.zeros (write every
byte); `time_kv_growth` compares per-request tensors that grow by one token each decode step
(allocate + copy, O(n^2) bytes moved) with writes into a preallocated pool. Notebook 01.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from minirt.config import ModelConfig


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_pool_allocation(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, repeats: int = 5
) -> dict[str, float]:
    """Median seconds to allocate a pool of `shape` with torch.empty and with torch.zeros."""
    return {
        "bytes": float(torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()),
        "empty_s": _median_s(lambda: torch.empty(shape, dtype=dtype), repeats),
        "zeros_s": _median_s(lambda: torch.zeros(shape, dtype=dtype), repeats),
    }


def time_kv_growth(
    config: ModelConfig,
    num_seqs: int = 8,
    num_tokens: int = 256,
    block_size: int = 16,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Seconds to store `num_tokens` decode tokens' K/V for `num_seqs` sequences, two ways.

    "grow": each sequence owns a [2, layers, t, kv_heads, head_dim] tensor, re-made with torch.cat
    at every token (what a framework without a cache manager ends up doing). "pool": one
    preallocated [2, layers, blocks, block_size, kv_heads, head_dim] tensor, written in place.
    """
    c = config
    token = torch.randn(2, c.num_hidden_layers, 1, c.num_key_value_heads, c.head_dim).to(dtype)

    def grow() -> None:
        caches = [token[:, :, :0].clone() for _ in range(num_seqs)]
        for _ in range(num_tokens):
            for i in range(num_seqs):
                caches[i] = torch.cat([caches[i], token], dim=2)  # new buffer, old copied

    blocks_per_seq = -(-num_tokens // block_size)
    pool = torch.empty(
        (2, c.num_hidden_layers, num_seqs * blocks_per_seq, block_size)
        + (c.num_key_value_heads, c.head_dim),
        dtype=dtype,
    )

    def in_pool() -> None:
        for t in range(num_tokens):
            for i in range(num_seqs):
                block = i * blocks_per_seq + t // block_size
                pool[:, :, block, t % block_size] = token[:, :, 0]  # one slot, in place

    grow_s, pool_s = _median_s(grow, 3), _median_s(in_pool, 3)
    return {"grow_s": grow_s, "pool_s": pool_s, "ratio": grow_s / pool_s}
