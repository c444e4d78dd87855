"""The experts: E SwiGLU MLPs stored as two 3-D weights, computed grouped.

Routing gives each token k experts; `sort_by_expert` lays the (token, expert) pairs out so that
each expert's rows are contiguous, and `Experts` runs gate_up and down as two grouped GEMMs over
those groups. Weights use Hugging Face Qwen3-MoE's layout ([E, 2I, H] and [E, H, I]), so a
checkpoint loads as a copy. Which GEMM runs (reference, loop, Triton) is a parameter. Notebook 12.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from minirt.kernels import grouped_gemm as gg
from minirt.kernels.activation import silu_mul_ref

GroupedGemm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
GEMMS: dict[str, GroupedGemm] = {
    "ref": gg.grouped_gemm_ref,
    "loop": gg.grouped_gemm_loop,
    "triton": gg.grouped_gemm,
}


def sort_by_expert(experts: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """experts [n] (one expert id per row) -> (order [n], offsets [E + 1]).

    `rows[order]` puts expert 0's rows first, then expert 1's...; a stable sort, so rows keep
    their original order inside a group. offsets[e]:offsets[e + 1] are expert e's rows.
    """
    order = torch.argsort(experts, stable=True)  # [n]
    counts = torch.bincount(experts, minlength=num_experts)  # [E]
    offsets = torch.zeros(num_experts + 1, dtype=torch.int64, device=experts.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return order, offsets


class Experts(nn.Module):
    """E SwiGLU MLPs: down(silu(gate(x)) * up(x)), each over its own group of rows."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.num_experts, self.hidden, self.intermediate = num_experts, hidden, intermediate
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))
        for w, fan_in in ((self.gate_up_proj, hidden), (self.down_proj, intermediate)):
            nn.init.normal_(w, std=fan_in**-0.5)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor, gemm: str = "ref") -> torch.Tensor:
        """x [rows, H] sorted by expert, offsets [E + 1] -> [rows, H] (unweighted outputs)."""
        fn = GEMMS[gemm]
        # transpose(1, 2) is a view: the kernels read w[e] as [K, N] through its strides
        gate_up = fn(x, self.gate_up_proj.transpose(1, 2), offsets)  # [rows, 2I]
        gate, up = gate_up.chunk(2, dim=-1)
        return fn(silu_mul_ref(gate, up), self.down_proj.transpose(1, 2), offsets)  # [rows, H]

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e alone on x [n, H], as a plain MLP: the reference the grouped path must equal."""
        gate, up = (x @ self.gate_up_proj[e].T).chunk(2, dim=-1)
        return (torch.nn.functional.silu(gate) * up) @ self.down_proj[e].T

    def shard(self, rank: int, num_ranks: int) -> Experts:
        """The experts rank `rank` holds under expert parallelism: a contiguous E / ranks slice."""
        if self.num_experts % num_ranks:
            raise ValueError(
                f"{self.num_experts} experts do not split over {num_ranks} ranks; use a divisor"
            )
        per = self.num_experts // num_ranks
        w = self.gate_up_proj
        part = Experts(per, self.hidden, self.intermediate).to(w.device, w.dtype)
        with torch.no_grad():
            part.gate_up_proj.copy_(self.gate_up_proj[rank * per : (rank + 1) * per])
            part.down_proj.copy_(self.down_proj[rank * per : (rank + 1) * per])
        return part
