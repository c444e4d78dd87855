"""The KV pool at one step, as rows to draw: who owns each physical block, and who shares it.

A step event carries every sequence's block table; a block's reference count is the number of
tables that hold it (the BlockManager keeps exactly that invariant), and a block in no table is
on the free list. Drawn by the block-table page; notebook 01 (KV cache) explains the picture.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

FREE = "free"
FREE_COLOUR = "#e6e6e6"


# A GPU pool has tens of thousands of blocks (a trace may claim up to 2**24): the page draws the
# first ones and counts the rest, so its work grows with the blocks in use, not the pool.
MAX_DRAWN = 1024
MAX_RUNS_SHOWN = 64  # free-list runs written out before "… and n more"
MAX_LOGICAL_CELLS = 4096  # (sequence, logical block) cells in the block-table chart
MAX_TABLE_COLUMNS = 2048  # logical blocks a row of the table shows (32K tokens in blocks of 16)


def pool_columns(num_blocks: int) -> int:
    """Grid width: 8 blocks a row for small pools, 16 up to 256 blocks, then 32."""
    return 8 if num_blocks <= 64 else 16 if num_blocks <= 256 else 32


def block_rows(block_tables: dict[int, list[int]], num_blocks: int) -> pd.DataFrame:
    """One row per drawn physical block (the first MAX_DRAWN): owner (the lowest seq id holding
    it), holders, ref count."""
    holders: list[list[int]] = [[] for _ in range(min(num_blocks, MAX_DRAWN))]
    for seq_id in sorted(block_tables):
        for b in block_tables[seq_id]:
            if b < len(holders):
                holders[b].append(seq_id)
    cols = pool_columns(num_blocks)
    rows = []
    for b, seqs in enumerate(holders):
        ref = len(seqs)
        rows.append(
            {
                "block": b,
                "row": b // cols,
                "col": b % cols,
                "owner": f"seq {seqs[0]}" if seqs else FREE,
                "holders": ", ".join(f"seq {s}" for s in seqs) or "—",
                "ref_count": ref,
                "shared": ref > 1,
                "label": f"{b}" + (f" ×{ref}" if ref > 1 else ""),
            }
        )
    return pd.DataFrame(rows)


def logical_rows(
    block_tables: dict[int, list[int]], max_cells: int = MAX_LOGICAL_CELLS
) -> pd.DataFrame:
    """One row per (sequence, logical block): the physical block it maps to and its ref count.
    At most `max_cells` rows, taken sequence by sequence in id order."""
    ref = ref_counts(block_tables)
    rows = []
    for s in sorted(block_tables):
        for i, b in enumerate(block_tables[s][: max_cells - len(rows)]):
            rows.append((f"seq {s}", i, b, ref[b], ref[b] > 1))
    return pd.DataFrame(rows, columns=["seq", "logical", "physical", "ref_count", "shared"])


def ref_counts(block_tables: dict[int, list[int]]) -> dict[int, int]:
    """Block id -> how many tables hold it (blocks in no table are absent)."""
    ref: dict[int, int] = {}
    for table in block_tables.values():
        for b in table:
            ref[b] = ref.get(b, 0) + 1
    return ref


def table_matrix(
    block_tables: dict[int, list[int]], max_columns: int = MAX_TABLE_COLUMNS
) -> pd.DataFrame:
    """Block tables as a matrix: a row per sequence, a column per logical block (st.dataframe),
    the first `max_columns` logical blocks of each."""
    width = min(max((len(t) for t in block_tables.values()), default=0), max_columns)
    data = {
        f"seq {s}": [*block_tables[s][:width], *[None] * (width - len(block_tables[s]))]
        for s in sorted(block_tables)
    }
    frame = pd.DataFrame.from_dict(data, orient="index", columns=[f"L{i}" for i in range(width)])
    return frame.astype("Int64")  # nullable ints: short tables end in blanks, not NaN floats


def id_ranges(ids: list[int]) -> str:
    """Sorted ids as runs, "0–3, 7, 9–12": a long free list stays one readable line."""
    runs: list[list[int]] = []
    for b in sorted(ids):
        if runs and b == runs[-1][1] + 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return runs_text([(a, b) for a, b in runs])


def runs_text(runs: list[tuple[int, int]], limit: int = MAX_RUNS_SHOWN) -> str:
    """Runs (first, last) as "0–3, 7, 9–12", the first `limit` of them, then how many more."""
    text = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in runs[:limit])
    if len(runs) > limit:
        text += f", … and {len(runs) - limit:,} more runs"
    return text


def busiest_step(steps: list[dict[str, Any]]) -> int:
    """Index of the first step with the most shared blocks (ties: the most used): a good start."""

    def score(e: dict[str, Any]) -> tuple[int, int]:
        held = [b for t in e["block_tables"].values() for b in t]
        return len(held) - len(set(held)), len(held)

    return max(range(len(steps)), key=lambda i: score(steps[i]), default=0)


def free_runs(block_tables: dict[int, list[int]], num_blocks: int) -> list[tuple[int, int]]:
    """Blocks in no table as runs (first, last) by id, found from the blocks in use, never by
    walking the whole pool (the trace records which blocks are free, not the LRU order)."""
    runs, start = [], 0
    for b in sorted({b for t in block_tables.values() for b in t if b < num_blocks}):
        if b > start:
            runs.append((start, b - 1))
        start = b + 1
    if start < num_blocks:
        runs.append((start, num_blocks - 1))
    return runs


def pool_size(meta: dict[str, Any], steps: list[dict[str, Any]]) -> int:
    """num_blocks from the trace meta (load_trace checked every block id against it); else the
    most that any step holds: used + free blocks, or its highest block id + 1."""
    if "num_blocks" in meta:
        return int(meta["num_blocks"])
    size = 0
    for step in steps:
        used = {b for t in step["block_tables"].values() for b in t}
        size = max(size, len(used) + int(step["num_free_blocks"]), max(used, default=-1) + 1)
    return size


def colour_scale(seq_ids: list[int]) -> alt.Scale:
    """One colour per sequence, fixed for the whole trace so colours don't jump between steps."""
    domain = [f"seq {s}" for s in sorted(seq_ids)] + [FREE]
    palette = [
        "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b",
        "#9d755d", "#ff9da6", "#bab0ac", "#1f77b4", "#2ca02c",
    ]  # fmt: skip
    colours = [palette[i % len(palette)] for i in range(len(domain) - 1)] + [FREE_COLOUR]
    return alt.Scale(domain=domain, range=colours)


def pool_chart(blocks: pd.DataFrame, scale: alt.Scale) -> alt.LayerChart:
    """The physical pool as a grid of cells: colour = owner, thick border + ×n = shared."""
    base = alt.Chart(blocks).encode(
        x=alt.X("col:O", axis=None),
        y=alt.Y("row:O", axis=None),
        tooltip=["block", "holders", "ref_count"],
    )
    cells = base.mark_rect(cornerRadius=3).encode(
        color=alt.Color("owner:N", scale=scale, legend=alt.Legend(title="owner", orient="bottom")),
        stroke=alt.condition("datum.shared", alt.value("black"), alt.value("white")),
        strokeWidth=alt.condition("datum.shared", alt.value(3), alt.value(1)),
    )
    text = base.mark_text(fontSize=13).encode(
        text="label:N",
        color=alt.condition("datum.ref_count == 0", alt.value("#888"), alt.value("white")),
    )
    # Height per row, not in total: Streamlit's theme squeezes a fixed height on discrete axes.
    return (cells + text).properties(height=alt.Step(40))


def logical_chart(logical: pd.DataFrame, scale: alt.Scale) -> alt.LayerChart:
    """Each sequence's table: logical block i (x) → the physical block id written in the cell."""
    base = alt.Chart(logical).encode(
        x=alt.X("logical:O", title="logical block"),
        y=alt.Y("seq:N", title=None),
        tooltip=["seq", "logical", "physical", "ref_count"],
    )
    cells = base.mark_rect(cornerRadius=3).encode(
        color=alt.Color("seq:N", scale=scale, legend=None),
        stroke=alt.condition("datum.shared", alt.value("black"), alt.value("white")),
        strokeWidth=alt.condition("datum.shared", alt.value(3), alt.value(1)),
    )
    text = base.mark_text(color="white", fontSize=13).encode(text="physical:N")
    return (cells + text).properties(height=alt.Step(34))
