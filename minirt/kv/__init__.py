"""Where the KV cache lives: the preallocated pool, its sizing, the block manager (hash prefix
cache) and the radix cache (token-level prefix cache over the same pool)."""

from minirt.kv.block_manager import BlockManager, block_hash
from minirt.kv.pool import (
    allocate_kv_pool,
    as_bytes,
    kv_cache_bytes_per_token,
    max_concurrent_sequences,
    num_kv_blocks,
)
from minirt.kv.radix_cache import RadixCache

__all__ = [
    "BlockManager",
    "RadixCache",
    "allocate_kv_pool",
    "as_bytes",
    "block_hash",
    "kv_cache_bytes_per_token",
    "max_concurrent_sequences",
    "num_kv_blocks",
]
