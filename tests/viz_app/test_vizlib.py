"""The dashboard's data shaping agrees with the runtime: ref counts and free blocks as the
BlockManager keeps them, block counts as the KV sizing functions give them."""

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.config import PRESETS
from minirt.kv import BlockManager, max_concurrent_sequences
from vizlib import blocks, kv_calc
from vizlib.runs import parse_prompts

# (op, seq): allocate a sequence with a prompt drawn from two shared prefixes, fork, or free
OPS = st.lists(
    st.tuples(st.sampled_from(["allocate", "fork", "free"]), st.integers(0, 5), st.integers(0, 1)),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_block_rows_ref_counts_and_free_list_are_the_block_managers(ops):
    bm = BlockManager(num_blocks=24, block_size=4)
    prefixes = [list(range(100, 113)), list(range(200, 210))]
    for op, seq, which in ops:
        tokens = prefixes[which] + [seq]
        if op == "allocate" and seq not in bm.tables and bm.can_allocate(tokens, len(tokens)):
            bm.allocate(seq, tokens, len(tokens))
            bm.commit(seq, tokens, len(tokens))  # publish full blocks: later prompts share them
        elif op == "fork" and seq in bm.tables and seq + 10 not in bm.tables:
            bm.fork(seq, seq + 10)
        elif op == "free" and seq in bm.tables:
            bm.free(seq)
    state = bm.to_dict()
    tables = {int(k): v for k, v in state["tables"].items()}  # what a trace step holds
    rows = blocks.block_rows(tables, state["num_blocks"])
    assert rows["ref_count"].tolist() == state["ref_count"]
    runs = blocks.free_runs(tables, state["num_blocks"])
    assert [b for first, last in runs for b in range(first, last + 1)] == sorted(state["free"])
    assert (rows["owner"] == blocks.FREE).sum() == len(state["free"])


def test_table_matrix_pads_short_tables_with_blanks():
    frame = blocks.table_matrix({3: [7, 1], 0: [5]})
    assert list(frame.index) == ["seq 0", "seq 3"]
    assert frame.loc["seq 3"].tolist() == [7, 1]
    assert frame.loc["seq 0", "L0"] == 5 and pd.isna(frame.loc["seq 0", "L1"])


def test_pool_size_without_meta_is_used_plus_free_blocks():
    steps = [{"block_tables": {0: [0, 1], 1: [0, 2]}, "num_free_blocks": 5}]
    assert blocks.pool_size({}, steps) == 8
    assert blocks.pool_size({"num_blocks": 9}, steps) == 9


def test_id_ranges_writes_consecutive_blocks_as_runs():
    assert blocks.id_ranges([9, 0, 1, 2, 3, 7, 10]) == "0–3, 7, 9–10"
    assert blocks.id_ranges([]) == ""


def test_pool_size_without_meta_covers_the_highest_block_id_of_any_step():
    steps = [
        {"block_tables": {0: [0, 1]}, "num_free_blocks": 2},
        {"block_tables": {0: [0, 1], 1: [9]}, "num_free_blocks": 0},
    ]
    assert blocks.pool_size({}, steps) == 10


def test_a_pool_of_millions_of_blocks_costs_what_its_used_blocks_cost():
    size = 2**24
    tables = {0: [0, 5], 1: [5, size - 1]}
    rows = blocks.block_rows(tables, size)
    assert len(rows) == blocks.MAX_DRAWN and rows.loc[5, "ref_count"] == 2
    assert blocks.free_runs(tables, size) == [(1, 4), (6, size - 2)]
    assert blocks.ref_counts(tables) == {0: 1, 5: 2, size - 1: 1}


def test_long_free_lists_and_tables_are_cut_to_what_a_page_can_show():
    runs = [(2 * i, 2 * i) for i in range(100)]
    assert blocks.runs_text(runs, limit=3) == "0, 2, 4, … and 97 more runs"
    tables = {0: list(range(10)), 1: list(range(10, 20))}
    assert len(blocks.logical_rows(tables, max_cells=15)) == 15
    assert blocks.logical_rows(tables, max_cells=15)["seq"].tolist().count("seq 1") == 5
    assert blocks.table_matrix(tables, max_columns=4).shape == (2, 4)


def test_busiest_step_is_the_first_with_the_most_shared_blocks():
    steps = [
        {"block_tables": {0: [0, 1, 2]}},
        {"block_tables": {0: [0, 1], 1: [0, 3]}},
        {"block_tables": {0: [0, 1], 1: [0, 1]}},
        {"block_tables": {0: [0, 1], 1: [0, 1], 2: [5]}},
    ]
    assert blocks.busiest_step(steps) == 3


def test_parse_prompts_reads_one_prompt_a_line_with_escaped_newlines():
    assert parse_prompts("def f():\\n    pass\n\n  \nimport os") == (
        "def f():\n    pass",
        "import os",
    )


def test_a_partly_filled_block_still_counts_whole_in_the_batch():
    n = kv_calc.kv_numbers(PRESETS["qwen3-0.6b"], "bfloat16", 17, 3, 16, 80)
    assert n["blocks_per_sequence"] == 2 and n["batch_blocks"] == 6
    assert n["batch_bytes"] == 6 * n["bytes_per_block"]


def test_concurrency_curve_is_max_concurrent_sequences_at_each_length():
    cfg = PRESETS["llama-3-8b"]
    frame = kv_calc.concurrency_frame(cfg, "bfloat16", 16, 80, "bfloat16", 8192)
    assert frame["seq_len"].tolist() == [128, 256, 512, 1024, 2048, 4096, 8192]
    weights = cfg.num_parameters() * 2
    assert frame["max_sequences"].tolist() == [
        max_concurrent_sequences(cfg, 80e9, s, "bfloat16", weights, 16) for s in frame["seq_len"]
    ]


def test_fmt_bytes_uses_binary_units():
    assert kv_calc.fmt_bytes(512) == "512 B"
    assert kv_calc.fmt_bytes(147_456) == "144.00 KiB"
    assert kv_calc.fmt_bytes(3 * 2**30) == "3.00 GiB"


def test_every_dtype_offered_is_one_the_kv_pool_knows():
    from minirt.kv.pool import dtype_bytes

    assert [dtype_bytes(d) for d in kv_calc.DTYPES] == [2, 2, 4, 1, 1]
