"""The b-bit group grid: INT4's rule at 4 bits, finer with more bits and smaller groups."""

from __future__ import annotations

import pytest
import torch

from minirt.quant import formats as F
from minirt.quant.grid import fake_quant_groups, grid_levels, group_grid, relative_error


def weight(seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 256, generator=g) * 0.05 + shift


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [32, 128])
def test_four_bits_is_minirts_int4(symmetric, group_size):
    w = weight(shift=0.03)
    want = F.dequantize_int4(F.quantize_int4(w, group_size, symmetric))
    assert torch.equal(fake_quant_groups(w, 4, group_size, symmetric), want)


def test_error_falls_with_bits_and_with_smaller_groups():
    w = weight()
    w[3, 7] = 1.0  # an outlier: its group (or row) pays
    by_bits = [relative_error(w, fake_quant_groups(w, b, 32)) for b in range(2, 9)]
    assert all(a > b for a, b in zip(by_bits, by_bits[1:], strict=False))
    by_group = [relative_error(w, fake_quant_groups(w, 4, g)) for g in (256, 128, 32)]
    assert by_group[0] > by_group[1] > by_group[2]


@pytest.mark.parametrize("symmetric", [True, False])
def test_every_value_lands_on_its_groups_grid_within_half_a_step(symmetric):
    w = weight(seed=1)
    w_hat = fake_quant_groups(w, 3, 64, symmetric)
    grid = group_grid(w, 3, 64, symmetric)
    levels = grid_levels(w, 3, 64, symmetric, row=2, group=1)
    assert len(levels) == 8 and torch.all(levels[1:] > levels[:-1])
    got = w_hat[2, 64:128]
    assert all(torch.isclose(levels, v, rtol=0, atol=1e-7).any() for v in got)
    step = grid.scales[2, 1]
    inside = (w[2, 64:128] >= levels[0]) & (w[2, 64:128] <= levels[-1])
    assert ((got - w[2, 64:128]).abs()[inside] <= step / 2 * (1 + 1e-5)).all()


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="bits must lie in 2..8"):
        fake_quant_groups(weight(), 1, 32)
    with pytest.raises(ValueError, match="must divide in_features"):
        fake_quant_groups(weight(), 4, 100)
