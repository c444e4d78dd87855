"""Reading traces: batch descriptions, slot mapping, block-table history, decode gaps."""

import pytest

from minirt.tools.trace_view import (
    decode_gaps_ms,
    describe_batch,
    slot_mapping,
    step_table,
    table_history,
    without_timings,
)


def _step(step, time_s, scheduled, tables):
    return {
        "type": "step", "step": step, "time_s": time_s, "num_prefill_tokens": 0,
        "num_decode_tokens": 0, "num_running": len(tables), "num_waiting": 0, "preempted": [],
        "finished": [], "block_tables": tables, "num_free_blocks": 0, "num_cached_blocks": 0,
        "prefix_hit_tokens": 0, "schedule_ms": 0.1, "forward_ms": 1.0,
        "scheduled": [
            {"seq_id": s, "num_new_tokens": n, "num_computed_tokens": c, "is_prefill": p}
            for s, n, c, p in scheduled
        ],
    }  # fmt: skip


STEPS = [
    _step(0, 0.010, [(0, 5, 0, True), (1, 3, 16, True)], {0: [7, 2], 1: [4, 9]}),
    _step(1, 0.015, [(0, 1, 5, False), (1, 1, 19, False)], {0: [7, 2], 1: [4, 9]}),
    _step(2, 0.030, [(0, 1, 6, False)], {0: [7, 2, 5]}),
    _step(3, 0.031, [(0, 1, 7, False)], {}),
]


def test_describe_batch_names_prefill_chunks_and_decodes():
    assert describe_batch(STEPS[0]) == "0:P0+5 1:P16+3"
    assert describe_batch(STEPS[1]) == "0:D 1:D"


def test_slot_mapping_matches_block_table_arithmetic():
    # block size 16: seq 0's position 5 is offset 5 of block 7; seq 1's 19 is offset 3 of block 9
    rows = slot_mapping(STEPS[1], block_size=16)
    assert rows == [
        {"seq_id": 0, "position": 5, "block": 7, "offset": 5, "slot": 7 * 16 + 5},
        {"seq_id": 1, "position": 19, "block": 9, "offset": 3, "slot": 9 * 16 + 3},
    ]
    assert slot_mapping(STEPS[3], block_size=16) == []  # finished: no blocks left to map


def test_table_history_records_each_change():
    assert table_history(STEPS, 0) == [
        {"step": 0, "blocks": 2, "block_table": [7, 2]},
        {"step": 2, "blocks": 3, "block_table": [7, 2, 5]},
        {"step": 3, "blocks": 0, "block_table": []},
    ]


def test_decode_gaps_are_times_between_decode_steps():
    assert decode_gaps_ms(STEPS, 0) == pytest.approx([15.0, 1.0])
    assert decode_gaps_ms(STEPS, 1) == []


def test_step_table_has_no_timings():
    text = step_table(STEPS)
    assert text.splitlines()[0].split()[:3] == ["step", "prefill", "decode"]
    assert "forward" not in text and "time_s" not in without_timings(STEPS[0])
