"""KV-cache size per token, per sequence and per batch, and how many sequences a GPU holds.

Built on the pool's own sizing functions (`minirt.kv`), so the table a notebook prints is the
arithmetic the engine uses: 2 (K, V) x layers x kv_heads x head_dim x bytes per token.
Notebook 01 (KV cache) prints `kv_size_rows` for the presets and plots capacity vs length;
notebook 08 (quantization) asks `capacity_rows` what a weight and a KV format each free.
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


# Bits one weight takes in each stored format: its code plus its share of the scales. Every
# parameter is counted at that width (embeddings and norms often stay bf16: a slight overcount).
WEIGHT_BITS: dict[str, float] = {
    "bf16": 16.0,
    "fp8": 8.0,  # one fp32 scale per output row of thousands of weights: negligible
    "int4 g128": 4.25,  # minirt's W4A16: a 4-bit code and an fp32 scale per 128 weights
    "fp4 (nvfp4)": 4.5,  # an E2M1 code and an fp8 scale per 16 weights
}


def capacity_row(
    name: str,
    config: ModelConfig,
    weights: str,
    kv_dtype: str,
    seq_len: int,
    memory_bytes: float = H100_MEMORY_BYTES,
    block_size: int = 16,
) -> dict:
    """What fits on one device when the weights are stored as `weights` (a key of WEIGHT_BITS)
    and the KV pool as `kv_dtype`: the weights' GB, the GB left to the pool, and how many
    sequences of `seq_len` tokens that pool holds (whole blocks; 0 when the weights don't fit)."""
    if weights not in WEIGHT_BITS:
        raise ValueError(f"unknown weight format {weights!r}; one of {sorted(WEIGHT_BITS)}")
    weight_bytes = config.num_parameters() * WEIGHT_BITS[weights] / 8
    return {
        "model": name,
        "weights": weights,
        "kv": kv_dtype,
        "weights_gb": weight_bytes / 1e9,
        "kv_pool_gb": max(0.0, memory_bytes - weight_bytes) / 1e9,
        "max_seqs": max_concurrent_sequences(
            config, memory_bytes, seq_len, kv_dtype, weight_bytes, block_size
        ),
    }


def capacity_rows(
    name: str,
    seq_len: int = 4096,
    memory_bytes: float = H100_MEMORY_BYTES,
    weights: Iterable[str] = tuple(WEIGHT_BITS),
    kv_dtypes: Iterable[str] = ("bfloat16", "float8_e4m3fn"),
) -> list[dict]:
    """`capacity_row` of one preset for every weight format x KV dtype."""
    kv_dtypes = tuple(kv_dtypes)
    return [
        capacity_row(name, PRESETS[name], w, kv, seq_len, memory_bytes)
        for w in weights
        for kv in kv_dtypes
    ]
