"""The number formats round-trip within half a step (INT) or one mantissa rounding (FP8)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.quant import formats as F


def weight(out_f=64, in_f=256, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_f, in_f, generator=g) * 0.05 + shift


@pytest.mark.parametrize("group_size", [128, 32])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_round_trip_errs_at_most_half_a_step_per_group(group_size, symmetric):
    w = weight(seed=group_size + symmetric)
    q = F.quantize_int4(w, group_size, symmetric)
    assert q.packed.dtype == torch.int32 and q.packed.shape == (64, 256 // 8)
    assert q.scales.shape == (64, 256 // group_size)
    err = (F.dequantize_int4(q) - w).abs().reshape(64, -1, group_size).amax(-1)
    assert (err <= q.scales / 2 * (1 + 1e-5)).all()


def test_int4_asymmetric_beats_symmetric_on_a_shifted_distribution():
    w = weight(shift=0.2)  # all positive: symmetric wastes the negative half of its codes
    sym = (F.dequantize_int4(F.quantize_int4(w, 128, True)) - w).pow(2).mean()
    asym = (F.dequantize_int4(F.quantize_int4(w, 128, False)) - w).pow(2).mean()
    assert asym < 0.5 * sym


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_int4_packing_is_exact(rows, words, seed):
    codes = torch.randint(0, 16, (rows, 8 * words), generator=torch.Generator().manual_seed(seed))
    packed = F.pack_int4(codes.to(torch.uint8))
    assert packed.shape == (rows, words) and packed.dtype == torch.int32
    assert torch.equal(F.unpack_int4(packed), codes.to(torch.uint8))


def test_int4_nibble_order_is_low_nibble_first():
    codes = torch.arange(8, dtype=torch.uint8)[None, :]  # columns 0..7 hold codes 0..7
    assert F.pack_int4(codes).item() == 0x76543210
    assert F.pack_int4(torch.full((1, 8), 15, dtype=torch.uint8)).item() == -1  # 0xFFFFFFFF


def test_fp8_weights_err_by_one_mantissa_rounding_within_range():
    w = weight(seed=3)
    q = F.quantize_fp8(w)
    assert q.data.dtype == torch.float8_e4m3fn and q.scales.shape == (64,)
    x = w / q.scales[:, None]  # the values the cast saw
    normal = x.abs() >= 2**-6  # E4M3's smallest normal; below it the step is absolute (2^-9)
    rel = ((F.dequantize_fp8(q) - w).abs() / w.abs())[normal]
    assert rel.max() <= 2**-4  # 3 mantissa bits, round to nearest (the brief's 2^-3 with room)
    step = 2**-10 * q.scales[:, None].expand_as(w)  # half of a subnormal step, in w's units
    assert ((F.dequantize_fp8(q) - w).abs()[~normal] <= step[~normal]).all()


def test_fp8_saturates_above_448_instead_of_overflowing():
    x = torch.tensor([[1000.0, -1e6, 448.0, 460.0]])
    assert F.to_fp8(x, 1.0).float().tolist() == [[448.0, -448.0, 448.0, 448.0]]
    # A static scale: 3.2 / 0.01 = 320 is an E4M3 value; -10 / 0.01 = -1000 saturates at -448.
    static = F.fake_quant_fp8(torch.tensor([[3.2, -10.0]]), static_scale=0.01)
    assert torch.allclose(static, torch.tensor([[3.2, -4.48]]))


def test_fp8_dynamic_activations_use_one_scale_per_token():
    x = torch.tensor([[1.0, 2.0], [1000.0, -2000.0]])
    assert torch.equal(F.fake_quant_fp8(x), x)  # each row's max lands exactly on 448
    codes, scales = F.quantize_fp8_rows(x)  # the same scales, as codes the 8-bit GEMM reads
    assert codes.dtype == torch.float8_e4m3fn and codes.float().abs().amax(-1).tolist() == [448] * 2
    assert torch.equal(codes.float() * scales[:, None], F.fake_quant_fp8(x))


def test_int8_round_trip_errs_at_most_half_a_step_per_channel():
    w = weight(seed=4)
    q = F.quantize_int8(w)
    assert q.data.dtype == torch.int8 and q.data.abs().max() <= 127
    err = (F.dequantize_int8(q) - w).abs().amax(1)
    assert (err <= q.scales / 2 * (1 + 1e-5)).all()


def test_smoothing_moves_activation_outliers_into_the_weights():
    w = weight(seed=5)
    act_amax = torch.ones(256)
    act_amax[7] = 50.0  # an outlier channel
    s = F.smoothquant_factors(act_amax, w, alpha=0.5)
    assert s[7] > 5 * s[:7].max()
    q = F.quantize_int8(w, s)  # stores W * s; x / s times it gives back x @ W^T
    x = torch.randn(4, 256) * act_amax
    ref = x @ w.T
    assert torch.allclose((x / s) @ F.dequantize_int8(q).T, ref, rtol=0.05, atol=0.05 * ref.std())


def test_bad_shapes_raise_errors_that_say_what_to_do():
    with pytest.raises(ValueError, match="not divisible by group_size.*pad"):
        F.quantize_int4(torch.randn(4, 200), 128)
    with pytest.raises(ValueError, match="multiple of 8"):
        F.quantize_int4(torch.randn(4, 256), 12)
    with pytest.raises(ValueError, match="2-D weight"):
        F.quantize_fp8(torch.randn(4, 4, 4))
    with pytest.raises(ValueError, match="one factor per input channel"):
        F.quantize_int8(torch.randn(4, 8), smooth=torch.ones(3))
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        F.smoothquant_factors(torch.ones(8), torch.randn(4, 8), alpha=1.5)


@pytest.mark.parametrize("group_size", [32, 128])
def test_interleaved_packing_puts_nibbles_k_and_k_plus_4_side_by_side(group_size):
    """Codes equal to their column number (mod 16) make the layout readable off the words."""
    in_f, c = 2 * group_size, group_size // 8
    w = torch.randn(3, in_f)
    q = F.quantize_int4(w, group_size, symmetric=False, interleaved=True)
    codes = F.int4_codes(q)  # column order
    raw = F.unpack_int4(q.packed)  # position 8 * word + nibble
    for word in range(in_f // 8):
        g, wi = divmod(word, c)
        for k in range(8):
            column = g * group_size + 2 * ((k % 4) * c + wi) + k // 4
            assert torch.equal(raw[:, 8 * word + k], codes[:, column])
    gptq = F.quantize_int4(w, group_size, symmetric=False)
    assert torch.equal(codes, F.unpack_int4(gptq.packed))  # same codes, other order
    assert torch.equal(F.interleave_int4(gptq).packed, q.packed)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_per_row_scales_are_exact_quotients_on_every_device(device):
    """The Triton kernels divide amax by the largest code exactly; the references must too (a
    GPU divides by a Python number as a multiply by its reciprocal: off by a bit in some rows)."""
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(0)).to(device) * 3
    amax = x.abs().amax(-1).double().cpu()
    for quantize, qmax in ((F.quantize_fp8_rows, F.FP8_MAX), (F.quantize_int8_rows, F.INT8_MAX)):
        exact = (amax / qmax).float()  # the correctly rounded fp32 quotient
        assert torch.equal(quantize(x)[1].cpu(), exact)
    assert torch.equal(F.quantize_fp8(x).scales.cpu(), (amax / F.FP8_MAX).float())
