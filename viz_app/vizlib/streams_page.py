"""CUDA streams, copy engines and the host thread as a Gantt chart: measured, simulated, uploaded.

A timeline is `minirt.tools.streams.Timeline`: one interval per operation per lane (each stream,
and "cpu" for the host thread), of kind h2d / d2h / d2d / kernel / host / blocked. They come from

- a committed H100 run (`python -m minirt.bench transfers` writes `bench/results/<device>/
  transfers-<date>.json`, whose rows carry each experiment's `Program`, beside
  `transfers-trace-<date>.json`, the measured timelines as 'interval' trace events); the page
  plays the same `Program` on `minirt.tools.streams.simulate` with the hardware fitted to that
  run (`Measurements.hardware`) and shows both;
- the simulator alone, on a program built from the page's toggles (`live_program`);
- an uploaded minirt trace with 'interval' events.

Everything here is data shaping and drawing; the timelines themselves are minirt's.
Notebook 06 (pinned memory and streams).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from minirt.results import load_results
from minirt.tools.results import ResultFile, find_results
from minirt.tools.streams import (
    COMPUTE,
    CPU,
    Measurements,
    Program,
    Timeline,
    fit_report,
)
from minirt.trace import FORMAT, VERSION, TraceError, load_trace

KINDS = ("h2d", "d2h", "d2d", "kernel", "host", "blocked")  # minirt.trace's interval kinds
KIND_COLORS = ("#4c78a8", "#72b7b2", "#9d755d", "#f58518", "#54a24b", "#e45756")
COPY_KINDS = ("h2d", "d2h", "d2d")
MATMUL_FLOPS = 2.0 * 4096**3  # one 4096^3 matmul, minirt.transfer's unit of compute
MiB = 1 << 20
FRAME_COLUMNS = ["lane", "name", "kind", "start_ms", "end_ms", "ms", "nbytes", "size", "label"]
# The experiments of minirt.transfer, as the page names them (rows of a transfers result).
EXPERIMENTS = {
    "overlap": "overlap — a copy beside an independent matmul",
    "stream_order": "stream order — a kernel reads what a copy on another stream writes",
    "stale_read": "stale read — the CPU reads a non_blocking D2H result",
    "cpu_hold": "CPU hold — a copy issued behind 2 ms of queued GPU work",
    "bandwidth": "bandwidth — one copy, by size, pinned or pageable",
    "matmul": "matmul — the compute rate (calibration)",
}
DEFAULT_PROGRAM = "overlap two streams"  # what the page opens on


class StreamsError(ValueError):
    """A committed transfers run this page can't draw: the message says what is wrong."""


# --------------------------------------------------------------------------- timelines in traces


@dataclass(frozen=True)
class Run:
    """One program's timeline in a trace: `label` tells apart two runs of the same name."""

    label: str
    name: str
    timeline: Timeline


def runs_from_events(events: list[dict[str, Any]]) -> list[Run]:
    """The trace's 'interval' events as one `Run` per contiguous block of the same `run` name.

    A recorder writes each program's events together, so a block is one run; two blocks of the
    same name (one program measured twice, e.g. in two experiments) stay two runs, "name (#2)",
    where `Timeline.from_events(events, name)` would put both on one timeline.
    """
    intervals = [e for e in events if e.get("type") == "interval"]
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for name, block in itertools.groupby(intervals, key=lambda e: e.get("run", "")):
        seen[name] = seen.get(name, 0) + 1
        label = name or "(unnamed run)"
        if seen[name] > 1:
            label = f"{label} (#{seen[name]})"
        runs.append(Run(label, name, Timeline.from_events(list(block), name)))
    return runs


def trace_document(timeline: Timeline, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A timeline as a minirt trace (what `load_trace` reads and this page's upload draws)."""
    return {"format": FORMAT, "version": VERSION, "meta": dict(meta or {}),
            "events": timeline.to_events()}  # fmt: skip


# --------------------------------------------------------------------------- committed H100 runs


@dataclass(frozen=True)
class TransferSet:
    """One committed transfers run: `<device>/transfers-<date>.json` and its trace beside it."""

    path: Path
    trace_path: Path
    device: str
    stamp: str  # YYYYmmdd-HHMMSS
    n: int = 0

    @property
    def label(self) -> str:
        extra = f" (#{self.n + 1})" if self.n else ""
        date = ResultFile(self.path, self.device, "transfers", self.stamp).date
        return f"{self.device} / {date}{extra}"


def discover(root: str | Path | None = None) -> list[TransferSet]:
    """Every `<root>/<device>/transfers-<date>.json` with its `transfers-trace-<date>.json`,
    newest first (`root` defaults to the repository's bench/results). Found by name only."""
    found = []
    for f in find_results("transfers", root):
        trace = f.path.with_name(f.path.name.replace("transfers-", "transfers-trace-", 1))
        if trace.is_file():
            found.append(TransferSet(f.path, trace, f.device, f.stamp, f.n))
    return found


@dataclass
class MeasuredProgram:
    """One row of a transfers run that carries a program, with its measured timeline."""

    experiment: str
    row: dict[str, Any]
    program: Program
    measured: Timeline

    @property
    def label(self) -> str:
        case = self.row.get("case")
        return (
            f"{self.program.name} ({case})"
            if case and case not in self.program.name
            else (self.program.name)
        )


@dataclass
class LoadedSet:
    measurements: Measurements
    programs: list[MeasuredProgram] = field(default_factory=list)

    def experiments(self) -> list[str]:
        """The experiments with programs, in the page's order (unknown ones last)."""
        names = list(dict.fromkeys(p.experiment for p in self.programs))
        order = list(EXPERIMENTS)
        return sorted(names, key=lambda e: (order.index(e) if e in order else len(order), e))

    def of(self, experiment: str) -> list[MeasuredProgram]:
        return [p for p in self.programs if p.experiment == experiment]


def load_set(result_set: TransferSet) -> LoadedSet:
    """Read a committed run: its rows (`load_results`), its trace (`load_trace`), and each
    program row matched to its measured timeline. StreamsError when the two don't fit."""
    name = f"{result_set.device}/{result_set.path.name}"
    try:
        record = load_results(result_set.path)
        trace = load_trace(result_set.trace_path)
    except TraceError as e:
        raise StreamsError(f"its trace {result_set.trace_path.name} is unreadable: {e}") from None
    except (ValueError, OSError) as e:
        raise StreamsError(f"{name} is unreadable: {e}") from None
    record["path"] = str(result_set.path)
    if record.get("topic") != "transfers":
        raise StreamsError(f"{name} is a {record.get('topic')!r} result, not a transfers run")
    runs = runs_from_events(trace.events)
    rows = [r for r in record.get("results", []) if isinstance(r, dict) and "program" in r]
    # The benchmark writes the rows and the trace's runs in the same order; match by position
    # when the names agree, else by name (first unused run of that name).
    if [r["program"]["name"] for r in rows] != [run.name for run in runs]:
        unused = list(runs)
        matched = []
        for r in rows:
            run = next((x for x in unused if x.name == r["program"]["name"]), None)
            if run is None:
                raise StreamsError(
                    f"{result_set.trace_path.name} has no timeline for {r['program']['name']!r}"
                )
            unused.remove(run)
            matched.append(run)
        runs = matched
    programs = [
        MeasuredProgram(r["experiment"], r, Program.from_dict(r["program"]), run.timeline)
        for r, run in zip(rows, runs, strict=False)
    ]
    timelines = {run.name: run.timeline for run in runs}
    measurements = Measurements(record, timelines)
    try:
        measurements.hardware  # noqa: B018 -- check the calibration block is there
    except (KeyError, TypeError) as e:
        raise StreamsError(f"{name} has no usable calibration block ({e!r})") from None
    return LoadedSet(measurements, programs)


def default_matmuls(loaded: LoadedSet | None, fallback: int = 24) -> int:
    """The overlap experiment's compute size in a run (the live simulator starts there)."""
    if loaded is not None:
        for p in loaded.of("overlap"):
            if isinstance(p.row.get("matmuls"), int):
                return p.row["matmuls"]
    return fallback


# --------------------------------------------------------------------------- the live program


def live_program(
    direction: str = "h2d",
    nbytes: int = 256 * MiB,
    matmuls: int = 24,
    pinned: bool = True,
    non_blocking: bool = True,
    two_streams: bool = True,
    wait_event: bool = True,
    host_ms: float = 0.2,
    use_ms: float = 0.2,
) -> Program:
    """The page's program: move a tensor while an independent matmul runs, then use it.

    h2d (prefetch the next layer's weights): `load next` copies into "next" on the copy stream
    (or the compute stream), `compute` runs `matmuls` 4096^3 matmuls on other data, `use next`
    reads "next" on the compute stream — after `wait_event` on the copy's event, or not.
    d2h (offload a result): `produce` writes "result", `offload` copies it to the host on the
    copy stream — after waiting on the producer's event, or not — while `compute` runs on.
    Then the CPU works `host_ms` (preparing the next batch), synchronises and (d2h) reads it.
    """
    if direction not in ("h2d", "d2h"):
        raise ValueError(f"direction must be 'h2d' or 'd2h', not {direction!r}")
    memory = "pinned" if pinned else "pageable"
    streams = "two streams" + (" + event" if wait_event else "") if two_streams else "one stream"
    p = Program(f"live {direction} {memory} non_blocking={non_blocking}, {streams}")
    copy_stream = "copy" if two_streams else COMPUTE
    flops = MATMUL_FLOPS * matmuls
    if direction == "h2d":
        p.h2d("load next", nbytes, stream=copy_stream, pinned=pinned, non_blocking=non_blocking,
              buffer="next")  # fmt: skip
        if matmuls:
            p.kernel("compute", flops=flops, reads=("current",))
        if two_streams and wait_event:
            p.record("next loaded", stream="copy")
            p.wait("next loaded", stream=COMPUTE)
        p.kernel("use next", ms=use_ms, reads=("next",))
        p.host("prepare next batch", ms=host_ms)
        return p.synchronize()
    p.kernel("produce", ms=use_ms, writes=("result",))
    if two_streams and wait_event:
        p.record("result ready", stream=COMPUTE)
        p.wait("result ready", stream="copy")
    p.d2h("offload", nbytes, stream=copy_stream, pinned=pinned, non_blocking=non_blocking,
          buffer="result")  # fmt: skip
    if matmuls:
        p.kernel("compute", flops=flops, reads=("current",))
    p.host("prepare next batch", ms=host_ms)
    p.synchronize()
    return p.host("read result", ms=0.05, reads=("result@host",))


def program_table(program: Program) -> pd.DataFrame:
    """The calls the host thread issues, in order (what the program *is*, beside its timeline)."""
    rows = []
    for i, op in enumerate(program.ops):
        copy = op.kind in ("h2d", "d2h")
        rows.append(
            {
                "#": i,
                "call": op.kind,
                "name": op.name,
                "stream": op.stream or "(cpu)",
                "bytes": op.nbytes or None,
                "pinned": op.pinned if copy else None,
                "non_blocking": op.non_blocking if copy else None,
                "ms": op.ms or None,
                "GFLOP": op.flops / 1e9 if op.flops else None,
                "event": op.event,
                "reads": ", ".join(op.reads),
                "writes": ", ".join(op.writes),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Summary:
    """What a timeline adds up to. Busy times are summed over the GPU lanes."""

    total_ms: float
    copy_bytes: int
    copy_ms: float  # copy engines busy (h2d, d2h, d2d)
    compute_ms: float  # kernels
    overlap_ms: float  # copies and kernels at the same time
    cpu_blocked_ms: float  # the host thread held in CUDA calls, synchronisations included
    cpu_held_by_calls_ms: float  # ... of which in calls other than synchronize

    @property
    def copy_gbps(self) -> float | None:
        """Bandwidth the copies achieved: bytes / copy-engine busy time (GB/s)."""
        return self.copy_bytes / (self.copy_ms * 1e6) if self.copy_ms > 0 else None

    @property
    def overlap_fraction(self) -> float | None:
        """overlap / the shorter of copy and compute busy time: 1 = the shorter one was hidden."""
        shorter = min(self.copy_ms, self.compute_ms)
        return min(1.0, self.overlap_ms / shorter) if shorter > 0 else None


def _gpu(timeline: Timeline) -> list:
    return [iv for iv in timeline.intervals if iv.lane != CPU]


def summarize(timeline: Timeline) -> Summary:
    gpu = _gpu(timeline)
    copies = [iv for iv in gpu if iv.kind in COPY_KINDS]
    held = sum(
        iv.ms
        for iv in timeline.intervals
        if iv.lane == CPU and iv.kind == "blocked" and not iv.name.startswith("sync")
    )  # Program.synchronize names its op "sync <event>" / "sync device"
    return Summary(
        total_ms=timeline.total_ms,
        copy_bytes=sum(iv.nbytes for iv in copies),
        copy_ms=sum(iv.ms for iv in copies),
        compute_ms=sum(iv.ms for iv in gpu if iv.kind == "kernel"),
        overlap_ms=sum(timeline.overlap_ms(kind, "kernel") for kind in COPY_KINDS),
        cpu_blocked_ms=timeline.cpu_blocked_ms(),
        cpu_held_by_calls_ms=held,
    )


def metric_values(s: Summary) -> dict[str, str]:
    """The page's metrics, label -> shown value (the same four for every source)."""
    gbps, frac = s.copy_gbps, s.overlap_fraction
    return {
        "Total (ms)": f"{s.total_ms:,.3f}",
        "Copy bandwidth (GB/s)": "—" if gbps is None else f"{gbps:,.1f}",
        "Overlap": "—" if frac is None else f"{frac:.0%}",
        "CPU blocked (ms)": f"{s.cpu_blocked_ms:,.3f}",
    }


def relative_error(measured: float | None, simulated: float | None) -> str:
    """simulated / measured - 1 as a signed percentage; where either side is 0 (a ratio would
    read -100 % or infinite) the absolute difference instead, in the row's unit; "—" if absent."""
    if measured is None or simulated is None:
        return "—"
    if measured and simulated:
        return f"{simulated / measured - 1:+.1%}"
    return f"{simulated - measured:+,.3f} (difference)"


def comparison_frame(measured: Summary, predicted: Summary) -> pd.DataFrame:
    """Measured against simulated, one row per quantity."""

    def row(what, m, p):
        return {"quantity": what, "measured": m, "simulated": p, "error": relative_error(m, p)}

    return pd.DataFrame(
        [
            row("total (ms)", measured.total_ms, predicted.total_ms),
            row("copy engines busy (ms)", measured.copy_ms, predicted.copy_ms),
            row("copy bandwidth (GB/s)", measured.copy_gbps, predicted.copy_gbps),
            row("kernels busy (ms)", measured.compute_ms, predicted.compute_ms),
            row("copy ∥ kernel overlap (ms)", measured.overlap_ms, predicted.overlap_ms),
            row("CPU blocked (ms)", measured.cpu_blocked_ms, predicted.cpu_blocked_ms),
            row("CPU held by calls (ms)", measured.cpu_held_by_calls_ms,
                predicted.cpu_held_by_calls_ms),
        ]
    )  # fmt: skip


def total_error(measured: Timeline, predicted: Timeline) -> float | None:
    """predicted / measured - 1 of the total time (None for an empty measured timeline)."""
    return predicted.total_ms / measured.total_ms - 1 if measured.total_ms > 0 else None


def op_fit(measured: Timeline, predicted: Timeline) -> pd.DataFrame:
    """`minirt.tools.streams.fit_report` as a table with each op's error (empty if unmatched)."""
    try:
        rows = fit_report(measured, predicted)
    except KeyError:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["error"] = frame["predicted_ms"] / frame["measured_ms"] - 1
    return frame


# --------------------------------------------------------------------------- the Gantt chart


def _size(nbytes: int) -> str:
    if not nbytes:
        return ""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.3g} {unit}"
    return f"{nbytes} B"


def lane_order(*timelines: Timeline) -> list[str]:
    """One row per lane: the default stream ("compute") first, other streams as they appear,
    the host thread ("cpu") last — the same order for every timeline drawn side by side."""
    seen: list[str] = []
    for t in timelines:
        for iv in t.intervals:
            if iv.lane not in seen:
                seen.append(iv.lane)
    return sorted(seen, key=lambda lane: (lane == CPU, lane != COMPUTE, seen.index(lane)))


def timeline_frame(timeline: Timeline, label_fraction: float = 0.07) -> pd.DataFrame:
    """One row per interval; `label` is the name for bars wide enough to print it on."""
    span = max(timeline.total_ms, 1e-9)
    rows = [
        {
            "lane": iv.lane,
            "name": iv.name,
            "kind": iv.kind,
            "start_ms": iv.start_ms,
            "end_ms": iv.end_ms,
            "ms": iv.ms,
            "nbytes": iv.nbytes,
            "size": _size(iv.nbytes),
            "label": iv.name if iv.ms >= label_fraction * span else "",
        }
        for iv in timeline.intervals
    ]
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def gantt_chart(
    timeline: Timeline, lanes: list[str] | None = None, x_max: float | None = None
) -> alt.LayerChart:
    """Lanes (each stream, then the CPU) down, time across, bars coloured by kind.

    `lanes` and `x_max` let two timelines (measured and simulated) share rows and time axis.
    """
    frame = timeline_frame(timeline)
    lanes = lanes or lane_order(timeline)
    x_max = x_max if x_max is not None else timeline.total_ms
    x = alt.X(
        "start_ms:Q", title="time (ms)", scale=alt.Scale(domain=[0, max(x_max, 1e-6)], nice=False)
    )
    y = alt.Y("lane:N", sort=lanes, title=None, scale=alt.Scale(domain=lanes))
    scale = alt.Scale(domain=list(KINDS), range=list(KIND_COLORS))
    color = alt.Color("kind:N", scale=scale, title="kind")
    tooltip = [
        alt.Tooltip("name:N"),
        alt.Tooltip("lane:N"),
        alt.Tooltip("kind:N"),
        alt.Tooltip("ms:Q", format=",.4f", title="ms"),
        alt.Tooltip("start_ms:Q", format=",.4f", title="start (ms)"),
        alt.Tooltip("end_ms:Q", format=",.4f", title="end (ms)"),
        alt.Tooltip("size:N", title="bytes"),
    ]
    base = alt.Chart(frame)
    # a 1 px stroke in the bar's colour keeps a microsecond-long call visible at any zoom
    stroke = alt.Stroke("kind:N", scale=scale, legend=None)
    bars = base.mark_bar(strokeWidth=1, clip=True).encode(
        x=x, x2="end_ms:Q", y=y, color=color, stroke=stroke, tooltip=tooltip
    )
    text = base.mark_text(align="left", dx=3, color="white", fontSize=11, clip=True).encode(
        x=x, y=y, text="label:N", tooltip=tooltip
    )
    return alt.layer(bars, text).properties(height=max(90, 46 * len(lanes)))
