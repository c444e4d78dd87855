"""Mixture of experts: the router, grouped experts, the block, and expert parallelism.

Notebook 12 (MoE communication) walks through it; `minirt.tools.moe` models what the all-to-all
costs at DeepSeek-V3 and Qwen3-30B-A3B scale, and `python -m minirt.bench moe` measures it.
"""

from minirt.moe.block import MoEBlock, Routing, moe_reference
from minirt.moe.experts import GEMMS, Experts, sort_by_expert
from minirt.moe.parallel import EPStats, ExpertParallelMoE
from minirt.moe.router import RouterStats, capacity_mask, expert_capacity, route, router_stats

__all__ = [
    "GEMMS",
    "EPStats",
    "ExpertParallelMoE",
    "Experts",
    "MoEBlock",
    "RouterStats",
    "Routing",
    "capacity_mask",
    "expert_capacity",
    "moe_reference",
    "route",
    "router_stats",
    "sort_by_expert",
]
