"""A seeded MoE block and token batch that every process can rebuild identically, and the
per-rank function that runs it expert-parallel: what tests, `minirt.bench moe` and notebook 12
hand to `run_ranks` (spawned processes get a recipe, not the weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from minirt.moe.block import MoEBlock
from minirt.moe.parallel import ExpertParallelMoE


@dataclass(frozen=True)
class Recipe:
    hidden: int = 64
    intermediate: int = 32
    num_experts: int = 8
    top_k: int = 2
    num_tokens: int = 24
    shared_intermediate: int = 0
    skew: float = 0.0  # > 0: expert 0's logits get +skew, the last expert's +0 (an uneven load)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build(recipe: Recipe) -> tuple[MoEBlock, torch.Tensor]:
    """(block, x [num_tokens, hidden]) from the recipe's seed: the same in every process."""
    torch.manual_seed(recipe.seed)
    block = MoEBlock(recipe.hidden, recipe.intermediate, recipe.num_experts, recipe.top_k,
                     shared_intermediate=recipe.shared_intermediate)  # fmt: skip
    if recipe.skew:
        with torch.no_grad():  # logits + skew x (1 .. 0) over the experts, for x = |randn|
            bias = recipe.skew * torch.linspace(1, 0, recipe.num_experts)
            block.gate.weight.add_(bias[:, None] / (0.8 * recipe.hidden))  # E|x| = 0.8
    g = torch.Generator().manual_seed(recipe.seed + 1)
    x = torch.randn(recipe.num_tokens, recipe.hidden, generator=g)
    return block, x.abs() if recipe.skew else x  # positive x so the skewed bias shows


def token_slice(num_tokens: int, rank: int, world_size: int) -> slice:
    """The contiguous share of the batch rank `rank` owns (as data-parallel attention would)."""
    bounds = torch.linspace(0, num_tokens, world_size + 1).round().long().tolist()
    return slice(bounds[rank], bounds[rank + 1])


def ep_worker(rank: int, world_size: int, recipe: Recipe, options: dict | None = None) -> dict:
    """Run on every rank: this rank's slice of the batch through the expert-parallel block.

    options: gemm ("ref"), micro_batches (1), fp8_dispatch (False), reps (1; the fastest's stats),
    device ("cpu"; "cuda" puts rank r on GPU r, with backend="nccl"), dtype (float32),
    phase_times (True; off on a GPU: only the total, so that micro-batches can overlap).
    """
    opts = {"gemm": "ref", "micro_batches": 1, "fp8_dispatch": False, "reps": 1, "device": "cpu",
            "dtype": torch.float32, "phase_times": True} | (options or {})  # fmt: skip
    device = torch.device(f"cuda:{rank}" if opts["device"] == "cuda" else opts["device"])
    block, x = build(recipe)
    block, x = block.to(device, opts["dtype"]), x.to(device, opts["dtype"])
    ep = ExpertParallelMoE(block, fp8_dispatch=opts["fp8_dispatch"])
    mine = x[token_slice(recipe.num_tokens, rank, world_size)]
    best = None
    for _ in range(opts["reps"]):  # keep the fastest repetition: the others met interruptions
        y, stats = ep.forward(mine, opts["gemm"], opts["micro_batches"], opts["phase_times"])
        total = max(p["end_ms"] for p in stats.phases)
        if best is None or total < best[0]:
            best = (total, stats)
    return {"y": y.cpu(), "stats": best[1].to_dict()}
