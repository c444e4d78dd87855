"""The router: which k of E experts each token goes to, with what weight, and what that did to
the load. Qwen3-MoE / Mixtral style: softmax over all experts in fp32, keep the top k,
renormalise them to sum to 1 (`norm_topk_prob`). A capacity factor bounds each expert's rows;
assignments past it are dropped (the token keeps its residual). Notebook 12 measures the load.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def route(
    logits: torch.Tensor, top_k: int, norm_topk_prob: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [tokens, E] -> (weights [tokens, k] fp32, experts [tokens, k] int64).

    Softmax then top-k then renormalise equals Mixtral's top-k of the logits then a softmax over
    those k: both are exp(l_i) / sum of the k chosen exp(l_j).
    """
    num_experts = logits.shape[-1]
    if not 1 <= top_k <= num_experts:
        raise ValueError(
            f"top_k must be in [1, {num_experts}] (the number of experts), got {top_k}"
        )
    probs = torch.softmax(logits.float(), dim=-1)  # [tokens, E]
    weights, experts = torch.topk(probs, top_k, dim=-1)  # [tokens, k] each
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def expert_capacity(num_tokens: int, top_k: int, num_experts: int, factor: float) -> int:
    """GShard's capacity: rows one expert may take, factor x its fair share of tokens x k."""
    if factor <= 0:
        raise ValueError(
            f"capacity_factor must be > 0 (1.0 = exactly the fair share), got {factor}"
        )
    return math.ceil(factor * num_tokens * top_k / num_experts)


def capacity_mask(experts: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Which assignments [tokens, k] survive: each expert keeps its first `capacity` rows, in
    token order (earlier tokens first, as GShard and Switch do), and drops the rest."""
    flat = experts.reshape(-1)  # [tokens * k], token-major
    one_hot = torch.nn.functional.one_hot(flat, num_experts)  # [tokens * k, E]
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1  # [tokens * k]: rank within its expert
    return (position < capacity).reshape(experts.shape)


@dataclass
class RouterStats:
    """The load one routing decision puts on the experts (and on the ranks that hold them)."""

    num_tokens: int
    top_k: int
    num_experts: int
    tokens_per_expert: list[int]  # assignments each expert received (before dropping)
    capacity: int | None = None  # rows per expert under the capacity factor; None = unbounded
    dropped: int = 0  # assignments past an expert's capacity
    num_ranks: int = 1  # experts split contiguously over this many expert-parallel ranks

    @property
    def imbalance(self) -> float:
        """Busiest expert over the mean: 1.0 = perfectly even; the slowest GEMM sets the pace."""
        mean = sum(self.tokens_per_expert) / self.num_experts
        return max(self.tokens_per_expert) / mean if mean else 1.0

    @property
    def tokens_per_rank(self) -> list[int]:
        """Rows each rank's experts receive: what its all-to-all receives and its GEMMs compute."""
        per = self.num_experts // self.num_ranks
        return [sum(self.tokens_per_expert[r * per : (r + 1) * per]) for r in range(self.num_ranks)]

    @property
    def rank_imbalance(self) -> float:
        loads = self.tokens_per_rank
        mean = sum(loads) / len(loads)
        return max(loads) / mean if mean else 1.0

    @property
    def drop_rate(self) -> float:
        total = self.num_tokens * self.top_k
        return self.dropped / total if total else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(imbalance=self.imbalance, tokens_per_rank=self.tokens_per_rank,
                 rank_imbalance=self.rank_imbalance, drop_rate=self.drop_rate)  # fmt: skip
        return d


def router_stats(
    experts: torch.Tensor,
    num_experts: int,
    capacity_factor: float | None = None,
    num_ranks: int = 1,
) -> RouterStats:
    """Count what `experts` [tokens, k] asks of each expert, and what a capacity would drop."""
    if num_experts % num_ranks:
        raise ValueError(
            f"{num_experts} experts do not split evenly over {num_ranks} ranks; pick a divisor"
        )
    tokens, k = experts.shape
    counts = torch.bincount(experts.reshape(-1), minlength=num_experts)  # [E]
    capacity, dropped = None, 0
    if capacity_factor is not None:
        capacity = expert_capacity(tokens, k, num_experts, capacity_factor)
        dropped = int((counts - capacity).clamp(min=0).sum())
    return RouterStats(tokens, k, num_experts, counts.tolist(), capacity, dropped, num_ranks)
