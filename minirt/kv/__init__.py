"""Where the KV cache lives: the preallocated pool, its sizing, and the block manager."""

from minirt.kv.block_manager import BlockManager, block_hash
from minirt.kv.pool import (
    allocate_kv_pool,
    kv_cache_bytes_per_token,
    max_concurrent_sequences,
    num_kv_blocks,
)

__all__ = [
    "BlockManager",
    "allocate_kv_pool",
    "block_hash",
    "kv_cache_bytes_per_token",
    "max_concurrent_sequences",
    "num_kv_blocks",
]
