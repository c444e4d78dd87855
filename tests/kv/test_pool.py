import pytest
import torch

from minirt.config import PRESETS, ModelConfig
from minirt.kv import (
    allocate_kv_pool,
    kv_cache_bytes_per_token,
    max_concurrent_sequences,
    num_kv_blocks,
)


def test_kv_bytes_per_token_matches_the_published_figures():
    assert kv_cache_bytes_per_token(PRESETS["qwen3-0.6b"], torch.bfloat16) == 112 * 1024
    assert kv_cache_bytes_per_token(PRESETS["llama-3-8b"], "bfloat16") == 128 * 1024
    assert kv_cache_bytes_per_token(PRESETS["llama-3-8b"], "float32") == 256 * 1024


def test_num_blocks_is_the_budget_divided_by_the_block_bytes():
    c = PRESETS["qwen3-0.6b"]
    block = 16 * 112 * 1024
    assert num_kv_blocks(c, 16, "bfloat16", 10 * block + block - 1) == 10


def test_a_budget_smaller_than_one_block_is_refused_with_the_needed_size():
    with pytest.raises(ValueError, match="holds no block.*1,835,008 bytes"):
        num_kv_blocks(PRESETS["qwen3-0.6b"], 16, "bfloat16", 1000)


def test_max_concurrency_counts_whole_blocks_beside_the_weights():
    c = PRESETS["llama-3-8b"]
    mem, seq = 80e9, 4096
    weights = c.num_parameters() * 2
    n = max_concurrent_sequences(c, mem, seq, "bfloat16", weights)
    per_seq = 4096 * 128 * 1024
    assert n == int((mem - weights) // per_seq)


def test_pool_has_the_six_dimensional_layout():
    c = ModelConfig(num_hidden_layers=3, num_key_value_heads=2, head_dim=8)
    pool = allocate_kv_pool(c, 5, 4, torch.float32, torch.device("cpu"))
    assert pool.shape == (2, 3, 5, 4, 2, 8)
    # one token's heads are contiguous; a block is block_size * heads * head_dim elements
    assert pool.stride()[-3:] == (16, 8, 1) and pool.stride(2) == 4 * 16
