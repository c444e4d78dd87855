"""Figures of host<->device transfers: stream timelines as Gantt charts, and copy bandwidth by size.

A `Timeline` (simulated by `minirt.tools.streams.simulate`, or measured on a GPU by
`minirt.transfer.run_cuda` and committed as a trace) draws as one row per lane — each stream,
then the CPU — with one bar per interval, coloured by what it was (a copy, a kernel, CPU work, or
the CPU held inside a CUDA call). Measured and simulated timelines draw the same way, so they can
be set side by side. Notebook 06 (pinned memory and streams) uses these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from minirt.tools.streams import Hardware, Timeline, simulate

KIND_COLORS = {
    "h2d": "tab:blue",
    "d2h": "tab:purple",
    "d2d": "tab:cyan",
    "kernel": "tab:orange",
    "host": "tab:green",
    "blocked": "tab:red",
}
KIND_LABELS = {
    "h2d": "copy host → device",
    "d2h": "copy device → host",
    "d2d": "copy device → device",
    "kernel": "kernel",
    "host": "CPU work",
    "blocked": "CPU held in a CUDA call",
}


def plot_timeline(
    timeline: Timeline, ax: Axes | None = None, title: str | None = None, legend: bool = True
) -> Figure:
    """One horizontal bar per interval, one row per lane (streams top, the CPU at the bottom).
    Draws on `ax` when given (returns its figure), else on a new figure."""
    own = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(timeline.lanes())))
    lanes = timeline.lanes()
    row = {lane: len(lanes) - 1 - i for i, lane in enumerate(lanes)}  # first lane on top
    for iv in timeline.intervals:
        color = KIND_COLORS.get(iv.kind, "grey")
        ax.barh(row[iv.lane], iv.ms, left=iv.start_ms, height=0.6, color=color, edgecolor="k",
                linewidth=0.4)  # fmt: skip
        if iv.ms > 0.08 * max(timeline.total_ms, 1e-9):  # label bars wide enough to hold it
            ax.text(iv.start_ms + iv.ms / 2, row[iv.lane], iv.name, ha="center", va="center",
                    fontsize=7, color="white" if iv.kind != "host" else "black")  # fmt: skip
    ax.set_yticks(list(row.values()), [f"{lane} " for lane in row])
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.set_xlim(0, 1.02 * timeline.total_ms or 1.0)
    ax.set_xlabel("ms")
    ax.set_title(title if title is not None else timeline.program, fontsize=9, loc="left")
    if legend:
        kinds = list(dict.fromkeys(iv.kind for iv in timeline.intervals))
        ax.legend(handles=_legend(kinds), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if own:
        ax.figure.tight_layout()
    return ax.figure


def plot_timelines(
    timelines: Sequence[Timeline] | Mapping[str, Timeline], ncols: int = 1, width: float = 10
) -> Figure:
    """Several timelines on one time axis (a Mapping's keys become their titles), one legend."""
    items = (
        list(timelines.items())
        if isinstance(timelines, Mapping)
        else [(t.program, t) for t in timelines]
    )
    nrows = -(-len(items) // ncols)
    lanes = max(len(t.lanes()) for _, t in items)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, nrows * (0.55 + 0.38 * lanes)),
                             sharex=True, squeeze=False)  # fmt: skip
    for ax, (title, t) in zip(axes.flat, items, strict=False):
        plot_timeline(t, ax=ax, title=title, legend=False)
    axes.flat[0].set_xlim(0, 1.02 * max(t.total_ms for _, t in items) or 1.0)  # shared by all
    for ax in axes.flat[len(items) :]:
        ax.set_visible(False)
    for ax in axes.flat[: len(items) - ncols]:
        ax.set_xlabel("")
    kinds = list(dict.fromkeys(iv.kind for _, t in items for iv in t.intervals))
    fig.legend(handles=_legend(kinds), fontsize=7, loc="lower center", ncols=len(kinds),
               bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _legend(kinds: Sequence[str]) -> list[Patch]:
    return [Patch(color=KIND_COLORS.get(k, "grey"), label=KIND_LABELS.get(k, k)) for k in kinds]


def bandwidth_points(
    record: Mapping[str, Any], direction: str, memory: str
) -> list[tuple[int, float]]:
    """(bytes, GB/s) of the 'bandwidth' rows of a `python -m minirt.bench transfers` record."""
    rows = [r for r in record["results"] if r["experiment"] == "bandwidth"
            and r["direction"] == direction and r["memory"] == memory]  # fmt: skip
    return sorted((r["nbytes"], r["gbps"]) for r in rows)


def plot_bandwidth(runs: Mapping[str, Mapping[str, Any]], hw: Hardware | None = None) -> Figure:
    """GB/s against copy size, H2D and D2H side by side, pinned and pageable: the measured points
    of each run (`runs`: label -> record; filled markers for the first, hollow for the others)
    and, as lines, what `simulate` predicts for the same copies on `hw`."""
    from minirt.transfer import copy_program

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    colors = {"pinned": "tab:blue", "pageable": "tab:red"}
    for ax, direction in zip(axes, ("h2d", "d2h"), strict=True):
        for memory, color in colors.items():
            for i, (label, record) in enumerate(runs.items()):
                pts = bandwidth_points(record, direction, memory)
                ax.plot([b for b, _ in pts], [g for _, g in pts], "o" if i == 0 else "s",
                        color=color, mfc=color if i == 0 else "none", ms=5, ls="none",
                        label=f"{memory}, {label}")  # fmt: skip
            if hw is not None:
                sizes = [b for b, _ in pts]
                pred = [b / (simulate(copy_program(direction, b, memory == "pinned"), hw)
                             .of("copy").ms * 1e6) for b in sizes]  # fmt: skip
                ax.plot(sizes, pred, color=color, lw=1, label=f"{memory}, simulated")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bytes per copy")
        ax.set_title("host → device" if direction == "h2d" else "device → host", fontsize=9)
        ax.grid(True, which="major", lw=0.3)
    axes[0].set_ylabel("GB/s")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
