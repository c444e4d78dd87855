"""The KV pool: one tensor, allocated once, after the weights are loaded.

Layout `(2, num_layers, num_blocks, block_size, kv_heads, head_dim)`: K and V, then one
contiguous slab per layer, indexed by block; a token's heads are contiguous (a store writes one
small run, a decode read streams whole blocks). Notebook 01 (KV cache) computes with the sizing.
"""

from __future__ import annotations

import os

import torch

from minirt.config import ModelConfig

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "int8": 1}


def dtype_bytes(dtype: torch.dtype | str) -> int:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPE_BYTES:
        raise ValueError(f"unknown KV dtype {dtype!r}; one of {sorted(_DTYPE_BYTES)}")
    return _DTYPE_BYTES[name]


def kv_cache_bytes_per_token(config: ModelConfig, dtype: torch.dtype | str = "bfloat16") -> int:
    """2 (K and V) x layers x kv_heads x head_dim x bytes: what one token costs in every layer."""
    c = config
    return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * dtype_bytes(dtype)


def num_kv_blocks(
    config: ModelConfig, block_size: int, dtype: torch.dtype | str, budget_bytes: int
) -> int:
    """How many whole blocks fit in `budget_bytes`; raises when not even one does."""
    block_bytes = block_size * kv_cache_bytes_per_token(config, dtype)
    n = int(budget_bytes) // block_bytes
    if n < 1:
        raise ValueError(
            f"a KV budget of {int(budget_bytes):,} bytes holds no block: one block of {block_size} "
            f"tokens needs {block_bytes:,} bytes for this model; raise kv_cache_bytes (or "
            "gpu_memory_utilization), or lower block_size"
        )
    return n


def max_concurrent_sequences(
    config: ModelConfig,
    memory_bytes: float,
    seq_len: int,
    dtype: torch.dtype | str = "bfloat16",
    weight_bytes: float = 0.0,
    block_size: int = 16,
) -> int:
    """Sequences of `seq_len` tokens whose KV fits beside the weights (whole blocks each)."""
    blocks_per_seq = -(-seq_len // block_size)
    free = max(0.0, memory_bytes - weight_bytes)
    block_bytes = block_size * kv_cache_bytes_per_token(config, dtype)
    return int(free // block_bytes) // blocks_per_seq


def kv_budget_bytes(
    device: torch.device, kv_cache_bytes: int | None, gpu_memory_utilization: float
) -> int:
    """The KV budget: explicit bytes, or on CUDA what is left of utilisation x total memory."""
    if kv_cache_bytes is not None:
        return int(kv_cache_bytes)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        used = total - free  # weights, activations of a warm-up, other processes
        return int(total * gpu_memory_utilization - used)
    return 256 * 2**20


def allocate_kv_pool(
    config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """torch.empty, not zeros: nothing is read before it is written, so don't pay to clear it.
    With MINIRT_POISON_KV=1 (the test suite sets it) the pool starts full of NaN instead, so a
    kernel or a cache that reads a slot nobody wrote turns its output into NaN, not into a
    plausible token computed from whatever the memory held."""
    c = config
    shape = (2, c.num_hidden_layers, num_blocks, block_size, c.num_key_value_heads, c.head_dim)
    pool = torch.empty(shape, dtype=dtype, device=device)
    if poison_requested():
        pool.fill_(float("nan"))
    return pool


def as_bytes(pool: torch.Tensor) -> torch.Tensor:
    """A one-byte (FP8) pool viewed as uint8, for the copies PyTorch only has for plain types
    (index_copy_, index_put); other pools as they are. Copies move bits, so either view does."""
    return pool.view(torch.uint8) if pool.dtype == torch.float8_e4m3fn else pool


def poison_requested() -> bool:
    """Debug mode: fill fresh KV memory (device pool, host swap pool) with NaN."""
    return os.environ.get("MINIRT_POISON_KV", "") not in ("", "0")
