"""FlashAttention on the CPU: tiles and online softmax against the naive spec, and the traffic
model's growth with sequence length (notebook 04)."""

import math

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.tools.flash import (
    attention_kernel_table,
    decode_kernel_table,
    exp_time_over_matmul_time,
    hbm_traffic,
    measured_peaks,
    naive_attention,
    online_softmax_steps,
    plot_kernel_fractions,
    plot_tiles,
    plot_traffic,
    tiled_attention,
    traffic_table,
)


def _qkv(s_q, s_k, d=8, heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, s_q, d, generator=g)
    return q, torch.randn(heads, s_k, d, generator=g), torch.randn(heads, s_k, d, generator=g)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block_m, block_n", [(3, 4), (16, 16), (1, 7), (64, 5)])
def test_tiled_attention_matches_naive_when_blocks_do_not_divide_the_length(
    causal, block_m, block_n
):
    q, k, v = _qkv(37, 37)
    out = tiled_attention(q, k, v, block_m, block_n, causal)
    torch.testing.assert_close(out, naive_attention(q, k, v, causal), atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    s_q=st.integers(1, 24),
    extra_keys=st.integers(0, 16),
    d=st.sampled_from([1, 4, 16]),
    block_m=st.integers(1, 12),
    block_n=st.integers(1, 12),
    causal=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_tiled_attention_equals_naive_for_any_shape_and_tiles(
    s_q, extra_keys, d, block_m, block_n, causal, seed
):
    q, k, v = _qkv(s_q, s_q + extra_keys, d, seed=seed)  # queries are the last s_q positions
    out = tiled_attention(q, k, v, block_m, block_n, causal)
    torch.testing.assert_close(out, naive_attention(q, k, v, causal), atol=1e-5, rtol=1e-5)


def test_causal_tiles_after_the_diagonal_are_skipped_and_only_the_diagonal_is_masked():
    q, k, v = _qkv(8, 8)
    events = []
    tiled_attention(q, k, v, 2, 2, causal=True, record=events)
    kinds = {(e.q_tile, e.k_tile): e.kind for e in events}
    assert len(kinds) == 16
    for (i, j), kind in kinds.items():
        assert kind == ("full" if j < i else "masked" if j == i else "skipped")
    events = []
    tiled_attention(q, k, v, 2, 2, causal=False, record=events)
    assert {e.kind for e in events} == {"full"}
    plt.close(plot_tiles(events))


def test_causal_attention_with_more_queries_than_keys_is_refused():
    q, k, v = _qkv(5, 3)
    with pytest.raises(ValueError, match="s_q <= s_k"):
        tiled_attention(q, k, v, 2, 2, causal=True)


def test_online_softmax_steps_reproduce_the_full_softmax():
    row = torch.randn(23, generator=torch.Generator().manual_seed(3)) * 4
    steps = online_softmax_steps(row, block=5)
    assert len(steps) == 5 and steps[0]["rescale"] == 0.0
    last = steps[-1]
    assert last["m"] == pytest.approx(float(row.max()))
    denominator = float(torch.exp(row.double()).sum())
    assert last["l"] * math.exp(last["m"]) == pytest.approx(denominator, rel=1e-12)
    probs = torch.exp(row.double() - last["m"]) / last["l"]
    torch.testing.assert_close(probs, torch.softmax(row.double(), dim=0))
    # the rescale factor is 1 exactly when a block does not raise the running max
    for before, after in zip(steps, steps[1:], strict=False):
        assert (after["rescale"] == 1.0) == (after["m"] == before["m"])


def test_online_softmax_skips_a_masked_prefix():
    row = torch.tensor([-math.inf, -math.inf, 1.0, 2.0])
    steps = online_softmax_steps(row, block=2)
    assert steps[0]["l"] == 0.0
    assert steps[-1]["l"] * math.exp(steps[-1]["m"]) == pytest.approx(math.e + math.e**2)


def test_traffic_counts_match_the_hand_computation():
    t = hbm_traffic(seq_len=4, head_dim=2, heads=1, bytes_per_el=1, block_m=2)
    # standard: reads Q K (16) + S (16) + P (16) + V (8) = 56; writes S, P (32) + O (8) = 40
    assert (t["naive_read"], t["naive_write"]) == (56, 40)
    # flash: Q (8) + K and V for 2 query tiles (2 x 2 x 8 = 32); writes O (8) + LSE (16)
    assert (t["flash_read"], t["flash_write"]) == (40, 24)
    causal = hbm_traffic(4, 2, 1, 1, 2, causal=True)
    assert causal["flash_read"] == 8 + 2 * 2 * (2 + 4)  # tile 0 reads keys 0-1, tile 1 all four


def test_flash_writes_and_scratch_grow_linearly_while_standard_grows_quadratically():
    small, big = (hbm_traffic(n, 128, 32, 2, 128) for n in (4096, 8192))
    assert big["flash_write"] == 2 * small["flash_write"]
    assert big["flash_scratch"] == 2 * small["flash_scratch"]
    assert big["naive_scratch"] == 4 * small["naive_scratch"]
    assert 3.9 < big["naive_total"] / small["naive_total"] <= 4


def test_flash_total_is_at_most_d_over_2_block_m_of_standard_for_long_sequences():
    # K/V re-reads (2 N^2 d / block_m) against S and P traffic (4 N^2): ratio d / (2 block_m)
    for block_m in (64, 128, 256):
        t = hbm_traffic(16384, 128, 1, 2, block_m)
        assert t["flash_total"] / t["naive_total"] == pytest.approx(128 / (2 * block_m), rel=0.05)
    causal = hbm_traffic(16384, 128, 1, 2, 128, causal=True)
    assert causal["flash_read"] < 0.51 * hbm_traffic(16384, 128, 1, 2, 128)["flash_read"]
    assert hbm_traffic(16384, 128, cluster=2)["flash_read"] < causal["flash_read"] * 1.01


RECORD = {
    "results": [
        {"name": "hbm_copy", "gb_per_s": 3000.0},
        {"name": "bf16_matmul", "tflop_per_s": 800.0},
        {"name": "prefill_attention_kernel", "seq_len": 1024, "batch": 16, "heads": 16,
         "head_dim": 128, "ms": 1.0, "tflop_per_s": 200.0, "sdpa_flash_tflop_per_s": 400.0,
         "ratio": 0.5},
        {"name": "decode_attention_kernel", "batch": 64, "context": 4096, "ms": 0.2,
         "gb_per_s": 2400.0, "copy_gb_per_s": 3000.0, "fraction_of_copy": 0.8},
    ]
}  # fmt: skip


def test_kernel_tables_read_a_record_and_return_nothing_without_one():
    assert attention_kernel_table(None, 800.0) == [] and decode_kernel_table(None) == []
    (row,) = attention_kernel_table(RECORD, 800.0)
    assert row["minirt_of_peak"] == 0.25 and row["fa2_of_peak"] == 0.5
    assert row["fa2_of_datasheet"] == pytest.approx(400 / 989)
    assert row["minirt_over_fa2"] == 0.5
    (dec,) = decode_kernel_table(RECORD)
    assert dec["fraction_of_copy"] == 0.8 and dec["context"] == 4096
    assert measured_peaks(RECORD) == {"copy_gb_per_s": 3000.0, "bf16_tflop_per_s": 800.0}
    assert measured_peaks(None) is None and measured_peaks({"results": []}) is None
    plt.close(plot_kernel_fractions([row], 800.0))


def test_exp_costs_about_half_the_matmul_time_at_head_dim_128_on_h100_figures():
    # 989 TFLOP/s matmul vs 3.9 TFLOP/s exp: (1 / 3.9) / (512 / 989)
    assert exp_time_over_matmul_time(128, 989.0, 3.9) == pytest.approx(0.4953, abs=1e-3)


def test_flash_moves_more_flops_per_byte_and_the_table_agrees_with_the_counts():
    rows = [hbm_traffic(n, 128, 32, 2, 128, causal=True) for n in (1024, 16384)]
    table = traffic_table(rows)
    assert [t["N"] for t in table] == [1024, 16384]
    for r, t in zip(rows, table, strict=True):
        assert r["flops"] == 4 * 128 * r["seq_len"] * (r["seq_len"] + 1) // 2 * 32
        assert t["standard/flash"] == pytest.approx(r["naive_total"] / r["flash_total"])
        assert t["flash_flop/B"] > 3 * t["standard_flop/B"]
    # at N >> d the standard algorithm stays near d / (4 bytes) FLOPs per byte (causal: half)
    assert table[-1]["standard_flop/B"] == pytest.approx(128 / 4, rel=0.01)


def test_traffic_plot_draws_from_rows():
    rows = [hbm_traffic(n, 64) for n in (512, 1024)]
    plt.close(plot_traffic(rows, memory_bytes=80e9))
