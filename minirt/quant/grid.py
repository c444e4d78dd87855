"""The quantization grid at any bit width: INT4's group-wise rule for 2..8 bits, to study error.

`fake_quant_groups(w, bits, group_size, symmetric)` rounds each group of `group_size` inputs of
each row to 2**bits levels and back, with the same rule as `formats.quantize_int4` (which it
equals at 4 bits): symmetric scale = max|w| / (2**(bits-1) - 1), asymmetric scale = range / (2**bits
- 1) over a range that includes 0. Nothing here is packed; `grid_levels` gives the values one
group can take, for drawing. Notebook 08 and the Quantization dashboard page use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_TINY = 1e-12  # as formats: a group of zeros gets this scale instead of dividing by zero


@dataclass
class GroupGrid:
    """Per group [out, in // group_size]: the scale and the zero point (as a real code)."""

    scales: torch.Tensor
    zeros: torch.Tensor
    qmin: int  # smallest code
    qmax: int  # largest code


def group_grid(w: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> GroupGrid:
    """Scales and zero points of each group of `w` [out, in] at `bits` bits."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must lie in 2..8, got {bits}")
    out_f, in_f = w.shape
    if group_size <= 0 or in_f % group_size:
        raise ValueError(
            f"group_size ({group_size}) must divide in_features ({in_f}); pass in_features for "
            "one group per row"
        )
    g = w.detach().float().reshape(out_f, in_f // group_size, group_size)
    levels = 2**bits
    if symmetric:
        # -2^(b-1) .. 2^(b-1) - 1 around the zero point 2^(b-1); max|w| lands on the top code.
        half = levels // 2
        scales = (g.abs().amax(-1) / (half - 1)).clamp(min=_TINY)
        zeros = torch.full_like(scales, float(half))
    else:
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
        scales = ((hi - lo) / (levels - 1)).clamp(min=_TINY)
        zeros = torch.round(-lo / scales).clamp(0, levels - 1)
    return GroupGrid(scales, zeros, 0, levels - 1)


def fake_quant_groups(
    w: torch.Tensor, bits: int = 4, group_size: int = 128, symmetric: bool = True
) -> torch.Tensor:
    """`w` [out, in] rounded to its group grid and back (fp32); equals INT4's at bits=4."""
    grid = group_grid(w, bits, group_size, symmetric)
    out_f, in_f = w.shape
    g = w.detach().float().reshape(out_f, in_f // group_size, group_size)
    s, z = grid.scales[..., None], grid.zeros[..., None]
    codes = (torch.round(g / s) + z).clamp(grid.qmin, grid.qmax)
    return ((codes - z) * s).reshape(out_f, in_f)


def grid_levels(w: torch.Tensor, bits: int, group_size: int, symmetric: bool, row: int, group: int):
    """The 2**bits values group `group` of row `row` can take, ascending: [2**bits] fp32."""
    grid = group_grid(w, bits, group_size, symmetric)
    codes = torch.arange(grid.qmin, grid.qmax + 1, dtype=torch.float32)
    return (codes - grid.zeros[row, group]) * grid.scales[row, group]


def relative_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||w_hat - w|| / ||w|| (Frobenius)."""
    return ((w_hat.float() - w.float()).norm() / w.float().norm().clamp(min=_TINY)).item()
