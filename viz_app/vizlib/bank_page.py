"""Shared-memory bank conflicts as a 32-thread x 32-bank heatmap, and the SGEMM series beside it.

The addresses come from the helpers of `minirt.tools.bank` (row / column / transposed / broadcast
access of a padded tile, optionally through CuTe's Swizzle<B, M, S>, or a named `PATTERNS` entry);
the cost is `minirt.tools.bank.simulate`'s. Ground truth: the newest committed
`bench/results/*/bank-*.json` (Nsight Compute per pattern) and `smem-gemm-*.json` (the SGEMM
kernels). Everything here is data shaping and drawing. Notebook 09 (bank conflicts).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from minirt.results import load_results
from minirt.tools import bank
from minirt.tools.results import find_results, results_root

ACCESSES = ("row", "column", "transposed", "broadcast", "pattern")
WIDTH_NAMES = {4: "4 B (fp32 / 32-bit)", 8: "8 B (fp64 / float2)", 16: "16 B (float4 / 128-bit)"}
HEATMAP_COLUMNS = [
    "thread", "address", "word", "bank", "bank_end", "phase", "wavefront", "conflict", "active",
]  # fmt: skip
SGEMM_COLUMNS = [
    "kernel", "dtype", "gflops", "fraction_of_cublas", "ld_conflicts", "ld_wavefronts",
    "st_conflicts", "st_wavefronts", "racecheck_hazards", "max_rel_err",
]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """What the page's sidebar chose. `index` is the row (row access), the column (column
    access) or the logical row (transposed) that the warp reads; `group` the threads per
    broadcast element."""

    access_bytes: int = 4
    rows: int = 32
    cols: int = 32
    access: str = "column"
    index: int = 3
    pad: int = 0
    swizzle: bool = False
    B: int = 5
    M: int = 0
    S: int = 5
    op: str = "ld"
    group: int = 32
    pattern: str = "ld32_tile_column"


def access_of(s: Settings) -> tuple[list[int | None], int, str]:
    """(addresses [32], access_bytes, op) of the settings; threads outside the tile are inactive.

    Element offsets are those of `minirt.tools.bank`'s helpers (a row holds cols + pad elements
    of `access_bytes` each); a swizzle maps every element offset through `bank.swizzle`.
    """
    if s.access not in ACCESSES:
        raise ValueError(f"access must be one of {ACCESSES}, got {s.access!r}")
    if s.access == "pattern":
        if s.pattern not in bank.PATTERNS:
            raise ValueError(f"{s.pattern!r} is not in minirt.tools.bank.PATTERNS")
        addresses, width, op = bank.PATTERNS[s.pattern]
        return list(addresses), width, op
    w = s.access_bytes
    if s.access == "broadcast":
        return bank.broadcast(s.group, w), w, s.op
    if s.access == "row":
        addresses, active = bank.row_access(s.cols, s.index, w, s.pad), s.cols
    elif s.access == "column":
        addresses, active = bank.column_access(s.cols, s.index, w, s.pad), s.rows
    else:  # the rows x cols tile stored transposed: a memory row holds `rows` elements
        addresses, active = bank.transposed_row_access(s.rows, s.index, w, s.pad), s.cols
    if s.swizzle:
        addresses = [bank.swizzle(a // w, s.B, s.M, s.S) * w for a in addresses]
    return [a if t < active else None for t, a in enumerate(addresses)], w, s.op


def _per_phase(addresses: list[int | None], access_bytes: int, op: str) -> int:
    """Threads served per 128-byte phase, as `bank.simulate` groups them (paired wide loads
    double it: see its docstring)."""
    per_phase = bank.WAVEFRONT_BYTES // access_bytes
    pairs = list(zip(addresses[0::2], addresses[1::2], strict=True))
    if (
        op == "ld"
        and access_bytes > bank.WORD_BYTES
        and all(a is not None and a == b for a, b in pairs)
    ):
        per_phase *= 2
    return per_phase


def heatmap_frame(addresses: list[int | None], access_bytes: int, op: str) -> pd.DataFrame:
    """One row per thread (32): its first bank and the banks it spans (`bank_end`), its phase,
    and `wavefront`, the pass of its phase that serves it (0 = the first; a bank serves one
    distinct word per pass). `conflict`: a bank it touches must serve several words."""
    per_phase = _per_phase(addresses, access_bytes, op)
    words = access_bytes // bank.WORD_BYTES
    rank: dict[tuple[int, int], int] = {}  # (phase, word) -> its pass in that bank
    load: dict[tuple[int, int], int] = defaultdict(int)  # (phase, bank) -> distinct words
    for t, a in enumerate(addresses):
        if a is None:
            continue
        for word in range(a // bank.WORD_BYTES, a // bank.WORD_BYTES + words):
            key = (t // per_phase, word)
            if key not in rank:
                rank[key] = load[(key[0], word % bank.BANKS)]
                load[(key[0], word % bank.BANKS)] += 1
    rows = []
    for t, a in enumerate(addresses):
        phase = t // per_phase
        if a is None:
            rows.append([t, None, None, None, None, phase, None, False, False])
            continue
        first = a // bank.WORD_BYTES
        span = range(first, first + words)
        rows.append([
            t, a, first, first % bank.BANKS, first % bank.BANKS + words, phase,
            max(rank[(phase, w)] for w in span),
            any(load[(phase, w % bank.BANKS)] > 1 for w in span), True,
        ])  # fmt: skip
    return pd.DataFrame(rows, columns=HEATMAP_COLUMNS)


def heatmap_chart(frame: pd.DataFrame) -> alt.Chart:
    """x = bank (a wide access spans 2 or 4 banks), y = thread, colour = the pass that serves it;
    a red outline marks a thread whose bank must serve more than one word (a conflict)."""
    data = frame[frame["active"]]
    passes = max(int(data["wavefront"].max()) + 1, 1) if len(data) else 1
    return (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X("bank:Q", title="bank", scale=alt.Scale(domain=[0, bank.BANKS], nice=False),
                    axis=alt.Axis(tickCount=bank.BANKS // 2)),
            x2="bank_end:Q",
            y=alt.Y("thread:O", title="thread", sort=list(range(bank.WARP)),
                    scale=alt.Scale(domain=list(range(bank.WARP)))),
            color=alt.Color("wavefront:O", title="pass in its phase",
                            scale=alt.Scale(scheme="viridis", domain=list(range(passes))),
                            legend=alt.Legend(columns=2, symbolLimit=0)),  # all 32 passes fit
            stroke=alt.condition("datum.conflict", alt.value("#e45756"), alt.value("white")),
            strokeWidth=alt.condition("datum.conflict", alt.value(2.5), alt.value(0.5)),
            tooltip=["thread", "address", "word", "bank", "phase", "wavefront", "conflict"],
        )
        .properties(height=560)
    )  # fmt: skip


def metric_values(result: bank.BankAccess) -> dict[str, str]:
    return {
        "Wavefronts": str(result.wavefronts),
        "Ideal": str(result.ideal),
        "Conflicts": str(result.conflicts),
        "n-way": f"{result.ways}-way",
    }


# ------------------------------------------------------------------ committed results


def latest(topic: str, root: str | Path | None = None) -> Path | None:
    """The newest `<root>/<device>/<topic>-YYYYmmdd-HHMMSS[-n].json` over every device (by the
    stamp in the name), or None when there is none; `root` defaults to bench/results."""
    found = find_results(topic, root if root is not None else results_root())
    return found[0].path if found else None


def load(path: str | Path) -> dict[str, Any]:
    return load_results(path)


def measured(
    record: dict[str, Any] | None, addresses: list[int | None], access_bytes: int, op: str
) -> dict[str, Any] | None:
    """The Nsight Compute row of a measured `PATTERNS` entry equal to this access (same address
    list, width and op), or None when no measured pattern is this access."""
    if record is None:
        return None
    for row in record.get("results", []):
        pattern = bank.PATTERNS.get(row.get("pattern"))
        if pattern is not None and (list(pattern[0]), pattern[1], pattern[2]) == (
            list(addresses),
            access_bytes,
            op,
        ):
            return row
    return None


def sgemm_frame(record: dict[str, Any]) -> pd.DataFrame:
    """The GEMM series, one row per kernel in the file's order; `dtype` is "fp32" where the row
    has none (runs before the fp16 steps). fraction_of_cublas is against the row's own dtype."""
    rows = [{**r, "dtype": r.get("dtype", "fp32")} for r in record.get("results", [])
            if "kernel" in r]  # fmt: skip
    return pd.DataFrame([{c: r.get(c) for c in SGEMM_COLUMNS} for r in rows], columns=SGEMM_COLUMNS)


def with_dashes(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame for a table: a value a row lacks (a metric its kernel was not measured on) as
    "—" rather than Streamlit's literal None; only the columns with gaps become text."""
    shown = frame.copy()
    for col in shown.columns[shown.isna().any()]:
        shown[col] = shown[col].map(_dash_or_number)
    return shown


def _dash_or_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value)}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def sgemm_chart(frame: pd.DataFrame) -> alt.Chart:
    """Fraction of the same-dtype cuBLAS per kernel (bars in the file's order; cuBLAS SGEMM and
    HGEMM in brown, fp16 kernels in orange), with GFLOP/s in the tooltip."""
    return (
        alt.Chart(frame)
        .transform_calculate(
            series="indexof(datum.kernel, 'cublas') == 0 ? 'cuBLAS' : datum.dtype"
        )
        .mark_bar()
        .encode(
            x=alt.X("fraction_of_cublas:Q", title="fraction of cuBLAS",
                    axis=alt.Axis(format="%")),
            y=alt.Y("kernel:N", sort=list(frame["kernel"]), title=None,
                    axis=alt.Axis(labelLimit=260)),
            color=alt.Color("series:N", title=None, scale=alt.Scale(
                domain=["cuBLAS", "fp32", "fp16"], range=["#9d755d", "#4c78a8", "#f58518"])),
            tooltip=["kernel", "dtype", alt.Tooltip("gflops:Q", format=",.0f"),
                     alt.Tooltip("fraction_of_cublas:Q", format=".1%"), "ld_conflicts",
                     "st_conflicts"],
        )
    )  # fmt: skip
