"""The router and its statistics, against the definitions written out directly."""

import math

import pytest
import torch

from minirt.moe import capacity_mask, expert_capacity, route, router_stats


def test_route_equals_mixtral_softmax_over_the_top_k_logits():
    logits = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    weights, experts = route(logits, 4)
    top, idx = torch.topk(logits, 4, dim=-1)  # Mixtral: top-k of the logits, softmax of those
    torch.testing.assert_close(weights, torch.softmax(top, -1))
    assert torch.equal(experts, idx)
    raw, _ = route(logits, 4, norm_topk_prob=False)  # Qwen3 with norm_topk_prob=False
    torch.testing.assert_close(raw, torch.softmax(logits, -1).gather(1, idx))
    with pytest.raises(ValueError, match="top_k"):
        route(logits, 17)


def test_capacity_keeps_each_experts_first_rows_in_token_order():
    experts = torch.tensor([[0, 1], [0, 2], [0, 1], [3, 0]])  # expert 0 asked 4 times
    keep = capacity_mask(experts, 4, capacity=2)
    assert keep.tolist() == [[True, True], [True, True], [False, True], [True, False]]
    assert expert_capacity(4, 2, 4, 1.0) == 2 and expert_capacity(5, 2, 4, 1.25) == 4


def test_router_stats_count_load_imbalance_and_drops():
    g = torch.Generator().manual_seed(1)
    experts = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(40)])  # [40, 2]
    experts[:10, 0] = 0  # make expert 0 popular
    s = router_stats(experts, 8, capacity_factor=1.0, num_ranks=2)
    counts = [int((experts == e).sum()) for e in range(8)]
    assert s.tokens_per_expert == counts and sum(counts) == 80
    assert s.imbalance == max(counts) / 10
    assert s.tokens_per_rank == [sum(counts[:4]), sum(counts[4:])]
    cap = math.ceil(1.0 * 40 * 2 / 8)
    assert s.capacity == cap and s.dropped == sum(max(0, c - cap) for c in counts)
    kept = capacity_mask(experts, 8, cap)
    assert s.dropped == int((~kept).sum())  # the mask drops exactly what the stats count
    d = s.to_dict()
    assert d["drop_rate"] == s.dropped / 80 and d["rank_imbalance"] == s.rank_imbalance
    with pytest.raises(ValueError, match="split evenly"):
        router_stats(experts, 8, num_ranks=3)
