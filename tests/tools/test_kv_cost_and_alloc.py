"""Decode with and without a KV cache gives the same tokens; allocation timings are reported."""

import pytest
import torch

from minirt import LLM
from minirt.tools.kv_alloc import time_kv_growth, time_pool_allocation
from minirt.tools.kv_cost import decode_with_cache, decode_without_cache


def test_no_cache_loop_makes_the_same_tokens_with_quadratic_work(qwen3_checkpoint):
    folder, _ = qwen3_checkpoint
    llm = LLM(folder, device="cpu", trace=True, prefix_cache=None)
    prompt = list(range(65, 75))  # 10 tokens
    cached = decode_with_cache(llm, prompt, 6)
    recomputed = decode_without_cache(llm, prompt, 6)
    assert cached.token_ids == recomputed.token_ids
    assert cached.tokens_computed == [10, 1, 1, 1, 1, 1]
    assert recomputed.tokens_computed == [10, 11, 12, 13, 14, 15]
    assert len(cached.forward_ms) == len(recomputed.forward_ms) == 6


def test_no_cache_loop_refuses_an_engine_whose_prefix_cache_would_act_as_a_cache(
    qwen3_checkpoint,
):
    folder, _ = qwen3_checkpoint
    with pytest.raises(ValueError, match="prefix_cache=None"):
        decode_without_cache(LLM(folder, device="cpu", trace=True), [65, 66], 2)


def test_allocation_timings_are_reported_for_both_ways():
    t = time_pool_allocation((2, 2, 4, 16, 2, 8), torch.float32, repeats=1)
    assert t["bytes"] == 2 * 2 * 4 * 16 * 2 * 8 * 4
    assert t["empty_s"] >= 0 and t["zeros_s"] >= 0
    from minirt.config import ModelConfig

    cfg = ModelConfig(num_hidden_layers=2, num_key_value_heads=1, head_dim=8)
    g = time_kv_growth(cfg, num_seqs=2, num_tokens=20, block_size=8)
    assert g["grow_s"] > 0 and g["pool_s"] > 0 and g["ratio"] == g["grow_s"] / g["pool_s"]
