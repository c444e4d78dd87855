"""The roofline of a quantized GEMM: the byte and rate ratios each format promises on paper."""

import pytest

from minirt.quant.speed import (
    FORMATS,
    fused_act_quant_s,
    gemm_bytes,
    ideal_gemm_s,
    ideal_speedup,
    weight_share,
)
from minirt.tools.roofline import H100_SXM


def test_w4a16_gemv_can_be_at_most_16_over_4_25_times_faster_than_bf16():
    # M = 1 on 4096 x 4096: the weights are all the bytes, so the ratio is their bits per weight.
    assert ideal_speedup(1, 4096, 4096, "w4a16-g128") == pytest.approx(16 / 4.25, rel=2e-3)
    assert ideal_speedup(1, 4096, 4096, "w4a16-g32") == pytest.approx(16 / 5, rel=2e-3)


def test_at_prefill_sizes_only_the_8_bit_tensor_cores_still_pay():
    assert ideal_speedup(4096, 4096, 4096, "fp8") == pytest.approx(2.0)
    assert ideal_speedup(4096, 4096, 4096, "int8") == pytest.approx(2.0)
    assert ideal_speedup(4096, 4096, 4096, "w4a16-g128") == pytest.approx(1.0)


def test_ideal_time_is_the_slower_of_memory_and_compute():
    m, n, k = 64, 1024, 2048
    for name in FORMATS:
        memory = gemm_bytes(m, n, k, name) / H100_SXM.mem_bandwidth
        compute = 2 * m * n * k / (H100_SXM.peak_flops * FORMATS[name].rate)
        assert ideal_gemm_s(m, n, k, name) == max(memory, compute)


def test_bf16_bytes_are_w_x_and_y_once():
    assert gemm_bytes(3, 5, 8, "bf16") == 2 * (5 * 8 + 3 * 8 + 3 * 5)


def test_weights_are_nearly_all_the_bytes_at_decode_and_a_third_at_square_prefill():
    assert weight_share(1, 4096, 4096) > 0.999
    assert weight_share(4096, 4096, 4096) == pytest.approx(1 / 3)


def test_fused_per_token_quantisation_reads_x_once_and_writes_its_codes_and_scales():
    assert fused_act_quant_s(2, 10) * H100_SXM.mem_bandwidth == pytest.approx(2 * 10 * 3 + 2 * 4)


def test_an_unknown_format_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown GEMM format 'fp4'.*bf16"):
        ideal_speedup(1, 8, 8, "fp4")
