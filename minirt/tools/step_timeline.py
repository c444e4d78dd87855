"""One engine step as a timeline: torch.profiler's Chrome trace, read back into lanes and drawn.

`trace_decode_step` profiles exactly one decode step and returns the events of its Chrome trace
(the JSON `prof.export_chrome_trace` writes). `timeline_rows` sorts them into three lanes on one
time axis: the host's operators (top-level `aten::` ops), the host's calls into the CUDA runtime
(kernel launches, graph launches, copies, syncs) and the GPU's kernels. On a CPU only the first
lane exists. Notebook 05 (profiling) draws it, and `rows_by_mode` reads the H100's committed
step (`python -m minirt.bench timeline`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

LANES = ("CPU op", "CPU → CUDA runtime", "GPU kernel")
# Chrome-trace categories (`cat`) of torch.profiler's kineto events, by lane
_CATEGORIES = {
    "cpu_op": "CPU op",
    "cuda_runtime": "CPU → CUDA runtime",
    "cuda_driver": "CPU → CUDA runtime",
    "kernel": "GPU kernel",
    "gpu_memcpy": "GPU kernel",
    "gpu_memset": "GPU kernel",
}


def trace_decode_step(llm, batch: int = 1, prompt_len: int = 32) -> list[dict[str, Any]]:
    """The Chrome-trace events of one decode step of `batch` sequences (after their prefill).

    Drives the engine step by step (as `minirt.bench.spec` does): the prefill runs unprofiled,
    the next step, in which every sequence decodes one token, runs under torch.profiler, and the
    sequences then run to their end so the engine is left idle.
    """
    from torch.profiler import ProfilerActivity, profile

    from minirt import SamplingParams
    from minirt.sched import Sequence

    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    for i in range(batch):
        llm.scheduler.add(Sequence(-1 - i, [65 + i % 26] * prompt_len, params))
    llm.step()  # the prefill: every prompt in one step, each sequence's first token out
    activities = [ProfilerActivity.CPU]
    if llm.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        llm.step()  # one decode step
    while llm.scheduler.has_unfinished():
        llm.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "step.json")
        prof.export_chrome_trace(str(path))
        return json.loads(path.read_text())["traceEvents"]


def timeline_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete events ("ph": "X") of a Chrome trace as rows {lane, name, start_us, dur_us},
    times from the first row. Host operators are kept at the top level only: an `aten::linear`
    is drawn, the `aten::addmm` it calls is inside it."""
    picked = [e for e in events if e.get("ph") == "X" and e.get("cat") in _CATEGORIES]
    picked.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0))))
    rows, open_until = [], {}  # per host thread: where its current top-level op ends
    for e in picked:
        lane, start, dur = _CATEGORIES[e["cat"]], float(e["ts"]), float(e.get("dur", 0))
        if lane == "CPU op":
            if start < open_until.get(e.get("tid"), float("-inf")):
                continue  # nested in a top-level op already drawn
            open_until[e.get("tid")] = start + dur
        rows.append({"lane": lane, "name": e["name"], "start_us": start, "dur_us": dur})
    t0 = min((r["start_us"] for r in rows), default=0.0)
    for r in rows:
        r["start_us"] -= t0
    return rows


def rows_by_mode(record: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """A committed `python -m minirt.bench timeline` run as {mode: rows}, the rows as
    `timeline_rows` gives them ("eager": every kernel launched from Python, "graphs": the step
    replayed from its CUDA graph); {} without a record."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in [] if record is None else record["results"]:
        if r["name"] == "step_event":
            row = {
                "lane": r["lane"],
                "name": r["op"],
                "start_us": r["start_us"],
                "dur_us": r["dur_us"],
            }
            out.setdefault(r["mode"], []).append(row)
    return out


def _busy_us(rows: list[dict[str, Any]]) -> float:
    """Time covered by at least one row (overlaps counted once)."""
    busy, end = 0.0, float("-inf")
    for r in sorted(rows, key=lambda r: r["start_us"]):
        start, stop = r["start_us"], r["start_us"] + r["dur_us"]
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy


def timeline_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per lane: events, busy time, and the share of the step's span it covers."""
    span = max((r["start_us"] + r["dur_us"] for r in rows), default=0.0)
    out = []
    for lane in LANES:
        mine = [r for r in rows if r["lane"] == lane]
        if mine:
            busy = _busy_us(mine)
            out.append({"lane": lane, "events": len(mine), "busy_us": busy, "span_us": span,
                        "busy share": busy / span if span else 0.0})  # fmt: skip
    return out


def plot_step_timeline(rows: list[dict[str, Any]], title: str, top: int = 6):
    """The lanes on one time axis; the `top` host operators by total time get their own colour."""
    lanes = [lane for lane in LANES if any(r["lane"] == lane for r in rows)]
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["name"]] = totals.get(r["name"], 0.0) + r["dur_us"]
    named = sorted(totals, key=lambda n: -totals[n])[:top]
    colour = {n: f"C{i}" for i, n in enumerate(named)}
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.7 * len(lanes)))
    for y, lane in enumerate(lanes):
        mine = [r for r in rows if r["lane"] == lane]
        ax.broken_barh([(r["start_us"], max(r["dur_us"], 0.5)) for r in mine], (y - 0.35, 0.7),
                       facecolors=[colour.get(r["name"], "0.7") for r in mine])  # fmt: skip
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set(xlabel="µs from the step's first event", title=title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colour.values()]
    ax.legend(handles, [n[:32] for n in colour], fontsize=7, ncol=3, loc="upper right")
    fig.tight_layout()
    return fig
