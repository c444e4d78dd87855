"""The small layers of a Llama-style decoder: RMSNorm, rotary embeddings, Linear, the SwiGLU MLP.

Each matches Hugging Face `transformers` numerically in fp32 (tests/model/test_vs_transformers.py);
parameter names match the checkpoint's so loading is a plain name-for-name copy. The arithmetic
lives in minirt.kernels (a reference and a fused Triton twin each); `kernels` says which runs.
"""

from __future__ import annotations

import torch
from torch import nn

from minirt.kernels.backend import TORCH, KernelBackend


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 whatever the activation dtype."""

    kernels: KernelBackend = TORCH  # CausalLM.use_kernels sets it per model

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """norm(x); with `residual`, the fused (norm(x + residual), x + residual) of one pass."""
        return self.kernels.rms_norm(x, self.weight, self.eps, residual)


class RotaryEmbedding(nn.Module):
    """RoPE: rotate pairs (i, i + d/2) of each head by position x frequency (rotate-half form)."""

    def __init__(self, head_dim: int, max_positions: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
        # [max_positions, head_dim // 2] each; a buffer, so .to(device) moves it with the model.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    kernels: KernelBackend = TORCH

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        # q: [num_tokens, heads, head_dim], k: [num_tokens, kv_heads, head_dim]
        return self.kernels.rope(positions, q, k, self.cos, self.sin)


class Linear(nn.Linear):
    """nn.Linear whose product runs on the backend's `linear` (a GEMV for a few rows on the GPU,
    minirt.kernels.gemv; cuBLAS or the CPU's matmul otherwise)."""

    kernels: KernelBackend = TORCH

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.linear(x, self.weight, self.bias)


def norm_linear(norm: RMSNorm, linear: nn.Module, x: torch.Tensor, residual: torch.Tensor | None):
    """linear(norm(x + residual)) and the new residual stream (x itself when residual is None):
    one kernel where the backend fuses them (the GEMV reads the row, adds, normalises) and
    `linear` is a plain Linear, or a QuantLinear whose kernel takes the norm at x's rows
    (`quant_prologue`); any other keeps its own kernel after the norm."""
    fused = norm.kernels.rms_norm_linear
    if fused is not None and type(linear) in (Linear, PackedLinear) and not watched(linear):
        return fused(x, residual, norm.weight, norm.eps, linear.weight, linear.bias)
    if fused is not None:
        out = quant_prologue(linear, x, norm=(norm.weight, norm.eps), residual=residual)
        if out is not None:
            return out
    h, residual = (norm(x), x) if residual is None else norm(x, residual)
    return linear(h), residual


def quant_prologue(linear: nn.Module, x: torch.Tensor, **prologue):
    """(y, residual stream) from a QuantLinear that computes the prologue (norm=, residual= or
    silu_mul=) inside its own kernel at x's rows (`QuantLinear.with_prologue`: the 8-bit GEMV
    at one or two rows); None for anything else, and for a watched layer (its hooks must see
    the input)."""
    fn = getattr(linear, "with_prologue", None)  # minirt.quant.linear.QuantLinear's
    return fn(x, **prologue) if fn is not None and not watched(linear) else None


def watched(module: nn.Module) -> bool:
    """A hook watches the module's input (calibration, minirt.quant): then it must be called."""
    return bool(module._forward_pre_hooks or module._forward_hooks)


class PackedLinear(Linear):
    """Projections of the same input stacked into one Linear: one GEMM instead of several.

    Checkpoints store q/k/v (and gate/up) as separate matrices; vLLM packs them because at small
    batch a decode step is a chain of tiny GEMMs, each paying a launch and a ramp-up, and fewer,
    bigger ones read the weights closer to HBM speed. `part(name)` is the rows `name` fills
    (the loader copies each checkpoint tensor there).
    """

    def __init__(self, in_features: int, parts: dict[str, int], bias: bool = False):
        super().__init__(in_features, sum(parts.values()), bias=bias)
        self.parts = parts

    def part(self, name: str) -> slice:
        names = list(self.parts)
        start = sum(self.parts[n] for n in names[: names.index(name)])
        return slice(start, start + self.parts[name])


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up as one packed GEMM."""

    kernels: KernelBackend = TORCH

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_up_proj = PackedLinear(
            hidden, {"gate_proj": intermediate, "up_proj": intermediate}
        )
        self.down_proj = Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.gate_up_proj(x))

    def down(self, gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up, then the down projection: one kernel where the backend fuses them."""
        fused, down = self.kernels.silu_mul_linear, self.down_proj
        if fused is not None and type(down) is Linear and not watched(down):  # not quantised
            return fused(gate_up, down.weight, down.bias)
        out = quant_prologue(down, gate_up, silu_mul=True) if fused is not None else None
        if out is not None:  # quantised: the same fusion in the quantised layer's kernel
            return out[0]
        gate, up = gate_up.chunk(2, dim=-1)  # views: [num_tokens, intermediate] each
        return down(self.kernels.silu_mul(gate, up))
