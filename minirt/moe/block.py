"""A sparse MoE block (Qwen3-MoE / Mixtral, optionally DeepSeek's shared expert), one process.

y = sum over the token's k experts of weight x expert(x) (+ shared(x)). The steps are the ones
expert parallelism spreads over GPUs: route, sort the (token, expert) rows by expert (on one GPU;
across GPUs this is the *dispatch*), grouped GEMMs, then weight and sum each token's k rows back
(the *combine*). `moe_reference` is the plain per-token loop the tests compare with. Notebook 12.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minirt.model.layers import MLP
from minirt.moe.experts import Experts, sort_by_expert
from minirt.moe.router import RouterStats, capacity_mask, expert_capacity, route, router_stats


@dataclass
class Routing:
    weights: torch.Tensor  # [tokens, k] fp32; dropped assignments have weight 0
    experts: torch.Tensor  # [tokens, k] int64
    keep: torch.Tensor  # [tokens, k] bool: False where a capacity dropped the assignment
    stats: RouterStats


class MoEBlock(nn.Module):
    """Router + E routed experts (+ an optional always-on shared expert)."""

    def __init__(
        self,
        hidden: int,
        intermediate: int,
        num_experts: int,
        top_k: int,
        norm_topk_prob: bool = True,
        shared_intermediate: int = 0,
        capacity_factor: float | None = None,
    ):
        super().__init__()
        self.num_experts, self.top_k, self.norm_topk_prob = num_experts, top_k, norm_topk_prob
        self.capacity_factor = capacity_factor
        self.gate = nn.Linear(hidden, num_experts, bias=False)  # the router, [E, H]
        self.experts = Experts(num_experts, hidden, intermediate)
        # DeepSeek-V3 style: every token also goes through one dense expert; it needs no routing
        # and no communication, so under expert parallelism it can overlap with the dispatch.
        self.shared_expert = MLP(hidden, shared_intermediate) if shared_intermediate else None

    @classmethod
    def from_config(cls, config, top_k: int = 8, **kwargs) -> MoEBlock:
        """A block of a `ModelConfig` with num_experts > 0 (e.g. PRESETS["qwen3-30b-a3b"])."""
        if config.num_experts <= 0:
            raise ValueError("this ModelConfig has num_experts = 0: it is a dense model")
        return cls(config.hidden_size, config.intermediate_size, config.num_experts, top_k,
                   **kwargs)  # fmt: skip

    def route(self, x: torch.Tensor, num_ranks: int = 1) -> Routing:
        """x [tokens, H] -> the routing decision, with the capacity applied and counted."""
        weights, experts = route(self.gate(x), self.top_k, self.norm_topk_prob)
        stats = router_stats(experts, self.num_experts, self.capacity_factor, num_ranks)
        keep = torch.ones_like(experts, dtype=torch.bool)
        if self.capacity_factor is not None:
            cap = expert_capacity(x.shape[0], self.top_k, self.num_experts, self.capacity_factor)
            keep = capacity_mask(experts, self.num_experts, cap)
            weights = weights * keep  # a dropped row adds nothing (its residual carries on)
        return Routing(weights, experts, keep, stats)

    def forward(self, x: torch.Tensor, gemm: str = "ref", routing: Routing | None = None):
        """x [tokens, H] -> [tokens, H]. `gemm`: "ref", "loop" or "triton" (minirt.moe.GEMMS)."""
        r = routing if routing is not None else self.route(x)
        tokens, k = r.experts.shape
        flat_expert = r.experts.reshape(-1)  # [tokens * k], row i is token i // k
        order, offsets = sort_by_expert(flat_expert, self.num_experts)
        rows = x[order // k]  # [tokens * k, H] the "dispatch" of one GPU: a gather
        out = self.experts(rows, offsets, gemm)  # [tokens * k, H]
        out = out * r.weights.reshape(-1)[order, None].to(out.dtype)
        y = torch.zeros_like(x).index_add_(0, order // k, out)  # the "combine": weighted sum
        if self.shared_expert is not None:
            y = y + self.shared_expert(x)
        return y


def moe_reference(block: MoEBlock, x: torch.Tensor) -> torch.Tensor:
    """The block, token by token: for each token, the weighted sum of its experts' MLPs. Slow and
    obvious; the grouped path, its capacity and its expert-parallel form must all equal it."""
    r = block.route(x)
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(block.top_k):
            if r.keep[t, j]:
                e = int(r.experts[t, j])
                y[t] += r.weights[t, j].to(x.dtype) * block.experts.expert(e, x[t : t + 1])[0]
    if block.shared_expert is not None:
        y = y + block.shared_expert(x)
    return y
