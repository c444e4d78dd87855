"""Waste of contiguous reservation vs paged blocks, on hand-built cases and a real engine run."""

import pytest

from minirt import LLM, SamplingParams
from minirt.tools.kv_waste import mean_waste, waste_from_lengths, waste_over_trace


def test_waste_from_lengths_matches_a_hand_count():
    w = waste_from_lengths([1, 16, 17, 40], block_size=16, reserve_len=64)
    assert w.used_tokens == 74
    assert w.paged_tokens == (1 + 1 + 2 + 3) * 16  # 112
    assert w.reserved_tokens == 4 * 64
    assert w.paged_waste == pytest.approx(1 - 74 / 112)
    assert w.contiguous_waste == pytest.approx(1 - 74 / 256)


def test_block_size_one_wastes_nothing_and_per_request_reservations_add_up():
    w = waste_from_lengths([5, 9], block_size=1, reserve_len=[8, 9])
    assert w.paged_waste == 0.0
    assert w.reserved_tokens == 17


def test_a_sequence_longer_than_its_reservation_is_refused():
    with pytest.raises(ValueError, match="does not fit its reservation"):
        waste_from_lengths([10], 4, 8)
    with pytest.raises(ValueError, match="2 lengths but 1 reservations"):
        waste_from_lengths([1, 2], 4, [8])


def _step(scheduled, tables):
    return {
        "scheduled": [
            {"seq_id": s, "num_new_tokens": n, "num_computed_tokens": c, "is_prefill": c == 0}
            for s, n, c in scheduled
        ],
        "block_tables": tables,
    }


def test_waste_over_trace_follows_block_tables_step_by_step():
    steps = [
        _step([(0, 5, 0), (1, 20, 0)], {0: [0], 1: [1, 2]}),  # 5 and 20 tokens, block 16
        _step([(0, 1, 5), (1, 1, 20)], {0: [0]}),  # 1 finished: its blocks are gone
    ]
    first, second = waste_over_trace(steps, 16, {0: 64, 1: 32})
    assert (first.used_tokens, first.paged_tokens, first.reserved_tokens) == (25, 48, 96)
    assert (second.num_seqs, second.used_tokens, second.paged_tokens) == (1, 6, 16)
    assert second.reserved_tokens == 64
    assert mean_waste([first, second]) == pytest.approx(
        {"paged_waste": 1 - 31 / 64, "contiguous_waste": 1 - 31 / 160}
    )


def test_on_a_real_run_paged_slack_stays_under_one_block_per_sequence(qwen3_checkpoint):
    folder, _ = qwen3_checkpoint
    llm = LLM(folder, device="cpu", trace=True, block_size=8, prefix_cache=None)
    prompts = [[65 + i] * n for i, n in enumerate((3, 8, 13, 30))]
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), False)
    steps = [e for e in llm.recorder.events if e["type"] == "step"]
    series = waste_over_trace(steps, 8, llm.max_model_len)
    assert len(series) == len(steps)
    assert series[0].used_tokens == 3 + 8 + 13 + 30
    for w, e in zip(series, steps, strict=True):
        assert w.paged_tokens == 8 * sum(len(t) for t in e["block_tables"].values())
        assert 0 <= w.paged_tokens - w.used_tokens < 8 * max(1, w.num_seqs)
        assert w.reserved_tokens == llm.max_model_len * w.num_seqs
