"""KV-cache size per token, per sequence and per batch, and how many sequences a GPU holds.

Built on the pool's own sizing functions (`minirt.kv`), so the table a notebook prints is the
arithmetic the engine uses: 2 (K, V) x layers x kv_heads x head_dim x bytes per token.
Notebook 01 (KV cache) prints `kv_size_rows` for the presets and plots capacity vs length.
"""

from __future__ import annotations

from collections.abc import Iterable

from minirt.checks import as_float, as_int
from minirt.config import PRESETS, ModelConfig
from minirt.kv import kv_cache_bytes_per_token, max_concurrent_sequences
from minirt.kv.pool import dtype_bytes

GIB = 2**30
H100_MEMORY_BYTES = 80e9  # "80 GB" on the datasheet, decimal gigabytes


def kv_size_row(
    name: str,
    config: ModelConfig,
    seq_len: int,
    memory_bytes: float = H100_MEMORY_BYTES,
    dtype: str = "bfloat16",
    block_size: int = 16,
) -> dict:
    """One model's KV numbers; weights are assumed stored in the KV dtype's width."""
    seq_len, block_size = as_int("seq_len", seq_len, 1), as_int("block_size", block_size, 1)
    memory_bytes = as_float("memory_bytes", memory_bytes, 0.0)
    per_token = kv_cache_bytes_per_token(config, dtype)
    weights = config.num_parameters() * dtype_bytes(dtype)
    return {
        "model": name,
        "layers": config.num_hidden_layers,
        "kv_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "kib_per_token": per_token / 1024,
        "gib_per_seq": per_token * seq_len / GIB,
        "weights_gib": weights / GIB,
        "max_seqs": max_concurrent_sequences(
            config, memory_bytes, seq_len, dtype, weights, block_size
        ),
    }


def kv_size_rows(
    names: Iterable[str] = ("qwen3-0.6b", "llama-3-8b", "llama-3-70b", "qwen3-30b-a3b"),
    seq_len: int = 4096,
    memory_bytes: float = H100_MEMORY_BYTES,
    dtype: str = "bfloat16",
    block_size: int = 16,
) -> list[dict]:
    """`kv_size_row` for presets of `minirt.config.PRESETS` (a model whose weights don't fit: 0)."""
    return [kv_size_row(n, PRESETS[n], seq_len, memory_bytes, dtype, block_size) for n in names]
