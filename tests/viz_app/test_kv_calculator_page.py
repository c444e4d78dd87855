"""The KV calculator shows minirt.kv's numbers, and they follow every widget change."""

import pytest

from minirt.config import PRESETS, ModelConfig
from minirt.kv import kv_cache_bytes_per_token, max_concurrent_sequences
from minirt.kv.pool import dtype_bytes

PAGE = "pages/03_KV_calculator.py"


def numbers(at) -> dict[str, int]:
    """The page's "Exact numbers" table as {quantity: value}."""
    frame = at.dataframe[0].value
    return dict(zip(frame["quantity"], frame["value"], strict=True))


def expected_max_seqs(config: ModelConfig, seq_len: int, gpu_gb: float, dtype="bfloat16") -> int:
    weights = config.num_parameters() * dtype_bytes(dtype)
    return max_concurrent_sequences(config, gpu_gb * 1e9, seq_len, dtype, weights, 16)


@pytest.fixture
def calculator(open_page):
    return open_page(PAGE)


def test_defaults_are_qwen3_8b_on_an_h100_with_minirt_kv_numbers(calculator, metric):
    at, cfg = calculator, PRESETS["qwen3-8b"]
    n = numbers(at)
    assert n["KV bytes per token"] == kv_cache_bytes_per_token(cfg, "bfloat16") == 147_456
    assert n["KV bytes per sequence"] == 147_456 * 4096
    assert n["device bytes"] == 80_000_000_000
    assert n["max concurrent sequences"] == expected_max_seqs(cfg, 4096, 80)
    assert metric(at, "KV per token") == "144.00 KiB"
    assert not at.exception


def test_doubling_the_sequence_length_doubles_kv_per_sequence_and_updates_concurrency(
    calculator, metric
):
    at, cfg = calculator, PRESETS["qwen3-8b"]
    before = numbers(at)
    at.number_input(key="kv_seq_len").set_value(8192).run()
    after = numbers(at)
    assert after["KV bytes per sequence"] == 2 * before["KV bytes per sequence"]
    assert after["blocks per sequence"] == 8192 // 16
    assert after["max concurrent sequences"] == expected_max_seqs(cfg, 8192, 80)
    assert metric(at, "KV per sequence") == "1.12 GiB"


def test_an_fp8_kv_cache_halves_the_bytes_per_token(calculator):
    at = calculator
    bf16 = numbers(at)["KV bytes per token"]
    at.selectbox(key="kv_dtype").set_value("float8_e4m3fn").run()
    assert numbers(at)["KV bytes per token"] == bf16 // 2


def test_a_bigger_gpu_holds_more_sequences(calculator):
    at = calculator
    at.selectbox(key="kv_gpu").set_value("H200 141 GB").run()
    n = numbers(at)
    assert n["device bytes"] == 141_000_000_000
    assert n["max concurrent sequences"] == expected_max_seqs(PRESETS["qwen3-8b"], 4096, 141)


def test_a_custom_config_uses_the_kv_formula_on_the_typed_shape(calculator):
    at = calculator
    at.selectbox(key="kv_model").set_value("custom").run()
    at.number_input(key="kv_L").set_value(10)
    at.number_input(key="kv_kv_heads").set_value(3)
    at.number_input(key="kv_head_dim").set_value(64).run()
    assert numbers(at)["KV bytes per token"] == 2 * 10 * 3 * 64 * 2


def test_weights_that_do_not_fit_are_reported_not_a_negative_budget(calculator):
    at = calculator
    at.selectbox(key="kv_model").set_value("llama-3-70b").run()
    at.selectbox(key="kv_gpu").set_value("L4 24 GB").run()
    assert numbers(at)["max concurrent sequences"] == 0
    assert any("weights alone" in e.value for e in at.error)
    assert not at.exception


def test_llama_70b_on_an_h100_says_why_nothing_fits_and_draws_no_concurrency_line(calculator):
    at = calculator
    at.selectbox(key="kv_model").set_value("llama-3-70b").run()
    assert numbers(at)["max concurrent sequences"] == 0
    (error,) = at.error
    assert "0 concurrent sequences" in error.value and "8 bits" in error.value
    assert "2+ GPUs" in error.value
    assert (
        len(at.get("vega_lite_chart")) == 1
    )  # the memory bar only: no line of zeros on a log axis
    assert any("no sequence of any length fits" in c.value for c in at.caption)


def test_lengths_at_which_nothing_fits_are_left_off_the_log_chart_and_named():
    from vizlib import kv_calc

    frame = kv_calc.concurrency_frame(PRESETS["llama-3-70b"], "bfloat16", 16, 80, "int8", 1 << 17)
    none = frame[frame["max_sequences"] == 0]
    assert not none.empty and (frame["max_sequences"] > 0).any()
    caption = kv_calc.concurrency_caption(frame, 4096, 7)
    assert f"From {int(none['seq_len'].min()):,} tokens on not one sequence fits" in caption
    chart = kv_calc.concurrency_chart(frame, 4096, 7).to_dict()
    drawn = chart["datasets"][chart["layer"][0]["data"]["name"]]
    assert all(r["max_sequences"] > 0 for r in drawn)
