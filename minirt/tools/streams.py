"""CUDA streams, copy engines and the host thread, simulated: what pinned memory, `non_blocking`
and a second stream change, as the same timeline an H100 run records.

A `Program` is what one host thread issues, in order: copies (`h2d`, `d2h`), kernels, CPU work,
event records and waits, synchronisations. `simulate(program, hardware)` plays it on a model of
the machine and returns a `Timeline`: one interval per operation per lane (each stream, and the
CPU), plus the data races it contains. `minirt.transfer.run_cuda(program)` plays the *same*
program on a real GPU and records the same timeline with CUDA events, so the two can be compared
bar for bar (tests/tools/test_streams.py does, against the committed H100 measurements).

The rules the model follows (CUDA runtime documentation, "API synchronization behavior"):
- Work on one stream runs in issue order. Across streams nothing is ordered unless a stream
  waits for an event recorded on another (`wait`), or the host synchronises.
- A copy needs its direction's copy engine (one H2D and one D2H engine: both directions can run
  at once); a kernel needs the SMs (here, one kernel at a time).
- Pinned memory: the copy engine DMAs straight from/to it. `non_blocking=True` returns at once.
- Pageable memory: the driver first waits for the stream to drain, then the CPU copies the data
  through a pinned staging buffer chunk by chunk while the DMA engine moves the previous chunk,
  so the CPU is held for the whole copy *whatever `non_blocking` says*. D2H into pageable memory
  returns only when the data is there.
- `non_blocking=False` (PyTorch's default) waits for the stream, i.e. for all earlier work on it.

Races: every operation names the buffers it reads and writes ("kv" on the device, "kv@host" in
host memory). A read races with the last write of that buffer when the write does not
*happen before* it (stream order, event waits, host syncs — tracked with vector clocks), which is
exactly what `compute-sanitizer` would call a hazard; `Timeline.races` lists them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COMPUTE = "compute"  # the default stream's name in a program
CPU = "cpu"  # the host thread's lane in a timeline
_GPU_KINDS = ("h2d", "d2h", "kernel")


@dataclass(frozen=True)
class Op:
    """One thing the host thread issues. Build them with `Program`'s methods."""

    kind: str  # "h2d" | "d2h" | "kernel" | "host" | "record" | "wait" | "sync"
    name: str
    stream: str | None = None  # the GPU stream; None for host work and host syncs
    nbytes: int = 0  # copies: bytes moved; kernels: HBM bytes read + written
    flops: float = 0.0  # kernels: floating-point operations
    ms: float = 0.0  # host work, or a kernel of fixed duration
    pinned: bool = True  # copies: is the host side page-locked?
    non_blocking: bool = True  # copies: PyTorch's flag
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    event: str | None = None  # record / wait / sync: the event's name (sync: None = device)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        d = dict(d)
        for key in ("reads", "writes"):
            d[key] = tuple(d.get(key, ()))
        return cls(**d)


@dataclass
class Program:
    """A host thread's sequence of CUDA calls, named so a timeline can label its bars.

    Buffers are names: `h2d(buffer="kv")` reads "kv@host" and writes "kv" on the device; a
    `d2h(buffer="out")` reads "out" and writes "out@host"; `host(reads=["out@host"])` is CPU code
    that looks at the copied data.
    """

    name: str = "program"
    ops: list[Op] = field(default_factory=list)

    def _add(self, op: Op) -> Program:
        if op.kind in _GPU_KINDS and not op.stream:
            raise ValueError(f"{op.kind} {op.name!r} needs a stream name (e.g. 'compute')")
        for label, value in (("nbytes", op.nbytes), ("flops", op.flops), ("ms", op.ms)):
            if value < 0:
                raise ValueError(f"{op.name!r}: {label} must be >= 0, got {value}")
        self.ops.append(op)
        return self

    def h2d(self, name, nbytes, *, stream=COMPUTE, pinned=True, non_blocking=True, buffer=None):
        """`device_tensor.copy_(host_tensor, non_blocking=...)` on `stream`."""
        buf = buffer or name
        return self._add(Op("h2d", name, stream, nbytes=int(nbytes), pinned=pinned,
                            non_blocking=non_blocking, reads=(f"{buf}@host",),
                            writes=(buf,)))  # fmt: skip

    def d2h(self, name, nbytes, *, stream=COMPUTE, pinned=True, non_blocking=True, buffer=None):
        """`host_tensor.copy_(device_tensor, non_blocking=...)` on `stream`."""
        buf = buffer or name
        return self._add(Op("d2h", name, stream, nbytes=int(nbytes), pinned=pinned,
                            non_blocking=non_blocking, reads=(buf,),
                            writes=(f"{buf}@host",)))  # fmt: skip

    def kernel(self, name, *, flops=0.0, nbytes=0, ms=0.0, stream=COMPUTE, reads=(), writes=()):
        """A kernel: its time is flops / compute rate or nbytes / HBM bandwidth (the larger),
        or `ms` when given (a fixed-length kernel, like `torch.cuda._sleep`)."""
        return self._add(Op("kernel", name, stream, nbytes=int(nbytes), flops=float(flops),
                            ms=float(ms), reads=tuple(reads), writes=tuple(writes)))  # fmt: skip

    def host(self, name, ms=0.0, *, reads=(), writes=()):
        """CPU work of `ms` milliseconds (preparing the next batch, reading a result)."""
        return self._add(Op("host", name, None, ms=float(ms), reads=tuple(reads),
                            writes=tuple(writes)))  # fmt: skip

    def record(self, event, stream=COMPUTE):
        """`event.record(stream)`: the event completes when the stream's earlier work has."""
        return self._add(Op("record", f"record {event}", stream, event=event))

    def wait(self, event, stream=COMPUTE):
        """`stream.wait_event(event)`: the stream's later work waits for the event (not the CPU)."""
        return self._add(Op("wait", f"wait {event}", stream, event=event))

    def synchronize(self, event=None):
        """The CPU waits: for one event (`event.synchronize()`), or for the whole device."""
        return self._add(Op("sync", f"sync {event or 'device'}", None, event=event))

    def streams(self) -> list[str]:
        seen = [COMPUTE] if any(op.stream == COMPUTE for op in self.ops) else []
        for op in self.ops:
            if op.stream and op.stream not in seen:
                seen.append(op.stream)
        return seen

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ops": [op.to_dict() for op in self.ops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Program:
        return cls(d["name"], [Op.from_dict(o) for o in d["ops"]])


@dataclass(frozen=True)
class Hardware:
    """The machine as the simulator sees it. Bandwidths in GB/s (1e9 bytes/s), times in us.

    The defaults are the workbench's H100 (PCIe Gen5 x16 host link), fitted by `from_measurements`
    to bench/results/h100/transfers-*.json; `h100()` refits to the newest committed file. Change
    any of them with `dataclasses.replace` and watch the timeline move.
    """

    h2d_gbps: float = 54.2  # pinned host -> device DMA, steady state
    d2h_gbps: float = 55.1  # device -> pinned host DMA, steady state
    ramp_bytes: int = 4 << 20  # the first bytes of a DMA move slower...
    ramp_gbps: float = 18.0  # ...at this rate (4 MiB copies reach only 14-23 GB/s)
    staging_h2d_gbps: float = 7.9  # CPU memcpy into the driver's pinned staging buffer
    staging_d2h_gbps: float = 14.8  # and out of it
    staging_chunk_bytes: int = 2 << 20  # the driver's staging granularity
    copy_latency_us: float = 10.8  # fixed cost of one DMA (setup, completion)
    launch_us: float = 5.0  # CPU time to issue one CUDA call
    tflops: float = 785.0  # dense bf16 matmul rate (4096^3)
    hbm_gbps: float = 2800.0  # device memory bandwidth seen by a kernel
    kernel_overhead_us: float = 3.0

    def copy_ms(self, op: Op) -> float:
        """How long a copy occupies its copy engine."""
        pcie = self.h2d_gbps if op.kind == "h2d" else self.d2h_gbps
        if op.pinned:
            ramp = min(op.nbytes, self.ramp_bytes)
            return (
                self.copy_latency_us / 1e3
                + ramp / (self.ramp_gbps * 1e6)
                + (op.nbytes - ramp) / (pcie * 1e6)
            )
        # Pageable: chunks staged by the CPU, DMA'd while the next chunk is staged. The slower
        # of the two sets the pace; the first (or last) chunk is not overlapped.
        staging = self.staging_h2d_gbps if op.kind == "h2d" else self.staging_d2h_gbps
        chunk = min(op.nbytes, self.staging_chunk_bytes)
        return (
            self.copy_latency_us / 1e3
            + op.nbytes / (min(pcie, staging) * 1e6)
            + chunk / (max(pcie, staging) * 1e6)
        )

    def kernel_ms(self, op: Op) -> float:
        if op.ms:
            return op.ms
        compute = op.flops / (self.tflops * 1e9)
        memory = op.nbytes / (self.hbm_gbps * 1e6)
        return self.kernel_overhead_us / 1e3 + max(compute, memory)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def h100(cls) -> Hardware:
        """Calibrated from the newest committed `bench/results/h100/transfers-*.json` when there
        is one (see `from_measurements`), else the defaults above."""
        from minirt.tools.results import latest_results

        record = latest_results("transfers", device="h100")
        return cls.from_measurements(record) if record else cls()

    @classmethod
    def from_measurements(cls, record: dict[str, Any]) -> Hardware:
        """Fit the model to a `python -m minirt.bench transfers` record, from its
        `config.calibration` block only (see `minirt.bench.transfers.calibration`): steady-state
        pinned and pageable bandwidths, the smallest copy's latency, the 4 MiB copy's ramp and
        one matmul's rate. Every other measurement in the record is left for the model to
        predict (tests/tools/test_streams.py checks how well it does)."""
        cal = record["config"]["calibration"] if "config" in record else record["calibration"]
        return cls(
            h2d_gbps=cal["pinned_gbps"]["h2d"],
            d2h_gbps=cal["pinned_gbps"]["d2h"],
            ramp_bytes=cal["ramp_bytes"],
            ramp_gbps=cal["ramp_gbps"],
            staging_h2d_gbps=cal["pageable_gbps"]["h2d"],
            staging_d2h_gbps=cal["pageable_gbps"]["d2h"],
            copy_latency_us=cal["copy_latency_us"],
            tflops=cal["matmul_tflops"],
        )


@dataclass(frozen=True)
class Interval:
    lane: str  # a stream name, or "cpu"
    name: str
    kind: str  # h2d | d2h | kernel | host | blocked
    start_ms: float
    end_ms: float
    nbytes: int = 0

    @property
    def ms(self) -> float:
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class Race:
    """A read that is not ordered after the write it should see."""

    buffer: str
    writer: str  # op name
    reader: str
    stale: bool  # in this timeline the read also started before the write ended

    def __str__(self) -> str:
        when = "and read it before it was written" if self.stale else "(it happened to be in time)"
        return f"{self.reader!r} reads {self.buffer!r} unordered after {self.writer!r} {when}"


@dataclass
class Timeline:
    """What each lane did: `intervals` (sorted by start), `total_ms` (the CPU's last sync or
    the last GPU work, whichever is later) and the program's `races`."""

    program: str
    intervals: list[Interval]
    total_ms: float
    races: list[Race] = field(default_factory=list)

    def lanes(self) -> list[str]:
        order: list[str] = []
        for iv in self.intervals:
            if iv.lane not in order:
                order.append(iv.lane)
        return sorted(order, key=lambda lane: (lane == CPU, order.index(lane)))

    def of(self, name: str) -> Interval:
        """The (first) interval of the op called `name` on a GPU stream."""
        for iv in self.intervals:
            if iv.name == name and iv.lane != CPU:
                return iv
        raise KeyError(f"no GPU interval named {name!r} in {self.program!r}")

    def cpu_blocked_ms(self) -> float:
        """Time the host thread spent held inside CUDA calls (not doing its own work)."""
        return sum(iv.ms for iv in self.intervals if iv.lane == CPU and iv.kind == "blocked")

    def overlap_ms(self, kind_a: str = "h2d", kind_b: str = "kernel") -> float:
        """How long work of `kind_a` and of `kind_b` ran at the same time."""
        a = [iv for iv in self.intervals if iv.kind == kind_a and iv.lane != CPU]
        b = [iv for iv in self.intervals if iv.kind == kind_b and iv.lane != CPU]
        return sum(max(0.0, min(x.end_ms, y.end_ms) - max(x.start_ms, y.start_ms))
                   for x in a for y in b)  # fmt: skip

    def to_events(self) -> list[dict[str, Any]]:
        """The intervals as trace events (`minirt.trace` 'interval' type)."""
        from minirt.trace import IntervalEvent

        events = []
        for iv in self.intervals:
            start, end = round(iv.start_ms, 6), round(iv.end_ms, 6)
            event = IntervalEvent(iv.lane, iv.name, iv.kind, start, end, iv.nbytes, self.program)
            events.append(event.to_dict())
        return events

    @classmethod
    def from_events(cls, events: list[dict[str, Any]], program: str | None = None) -> Timeline:
        """Rebuild a timeline from 'interval' trace events (of one run, if `program` is given)."""
        rows = [e for e in events if e.get("type") == "interval"]
        if program is not None:
            rows = [e for e in rows if e.get("run") == program]
        intervals = [Interval(e["lane"], e["name"], e["kind"], e["start_ms"], e["end_ms"],
                              e.get("nbytes", 0)) for e in rows]  # fmt: skip
        total = max((iv.end_ms for iv in intervals), default=0.0)
        name = program if program is not None else (rows[0].get("run", "") if rows else "")
        return cls(name, sorted(intervals, key=lambda iv: iv.start_ms), total)


def simulate(program: Program, hw: Hardware | None = None) -> Timeline:
    """Play `program` on the machine model `hw` (default: `Hardware.h100()`)."""
    hw = hw or Hardware.h100()
    cpu = 0.0  # when the host thread is free
    stream_end: dict[str, float] = {}  # when each stream's last op ends
    engine_free = {"h2d": 0.0, "d2h": 0.0, "kernel": 0.0}
    events: dict[str, float] = {}
    intervals: list[Interval] = []
    clocks = _Clocks()

    def gpu_end() -> float:
        return max(stream_end.values(), default=0.0)

    for i, op in enumerate(program.ops):
        if op.kind == "host":
            intervals.append(Interval(CPU, op.name, "host", cpu, cpu + op.ms))
            cpu += op.ms
            clocks.host(i, op)
            continue
        if op.kind == "sync":
            if op.event and op.event not in events:
                raise ValueError(f"{op.name!r}: event {op.event!r} was never recorded")
            until = events[op.event] if op.event else gpu_end()
            if until > cpu:
                intervals.append(Interval(CPU, op.name, "blocked", cpu, until))
            cpu = max(cpu, until)
            clocks.sync(op.event)
            continue
        # A CUDA call: the CPU spends launch_us issuing it.
        issue_start, cpu = cpu, cpu + hw.launch_us / 1e3
        ready = max(cpu, stream_end.get(op.stream, 0.0))
        if op.kind == "record":
            events[op.event] = ready
            clocks.record(op.stream, op.event)
        elif op.kind == "wait":
            if op.event not in events:
                raise ValueError(f"{op.name!r}: event {op.event!r} is waited on before recorded")
            stream_end[op.stream] = max(ready, events[op.event])
            clocks.wait(op.stream, op.event)
        else:
            engine = op.kind
            duration = hw.kernel_ms(op) if engine == "kernel" else hw.copy_ms(op)
            start = max(ready, engine_free[engine])
            end = start + duration
            engine_free[engine] = stream_end[op.stream] = end
            intervals.append(Interval(op.stream, op.name, op.kind, start, end, op.nbytes))
            clocks.gpu(i, op)
            # How long the call holds the CPU (see the module docstring).
            held_until = cpu
            if op.kind in ("h2d", "d2h") and (not op.pinned or not op.non_blocking):
                held_until = end
                # Returned, so the data has landed -- except a non_blocking pageable H2D, which
                # returns once the last chunk is staged: the DMA may still be running.
                if not (op.kind == "h2d" and not op.pinned and op.non_blocking):
                    clocks.join_stream(op.stream)
            if held_until > cpu:
                intervals.append(Interval(CPU, op.name, "blocked", issue_start, held_until))
                cpu = held_until
    total = max(cpu, gpu_end())
    intervals.sort(key=lambda iv: (iv.start_ms, iv.lane))
    races = [
        Race(buf, program.ops[w].name, program.ops[r].name, stale=_stale(intervals, program, w, r))
        for buf, w, r in clocks.races
    ]
    return Timeline(program.name, intervals, total, races)


def _stale(intervals: list[Interval], program: Program, w: int, r: int) -> bool:
    """Did the read start before the write finished, in this timeline?"""

    def span(i: int) -> Interval | None:
        op = program.ops[i]
        lane = op.stream or CPU
        return next((iv for iv in intervals if iv.name == op.name and iv.lane == lane), None)

    write, read = span(w), span(r)
    if write is None or read is None:
        return False
    return read.start_ms < write.end_ms


class _Clocks:
    """Vector clocks for happens-before: one component per agent (each stream, and the CPU)."""

    def __init__(self) -> None:
        self.agent: dict[str, dict[str, int]] = {CPU: {}}
        self.event: dict[str, dict[str, int]] = {}
        self.last_write: dict[str, tuple[int, str, dict[str, int]]] = {}  # buf -> (op, agent, vc)
        self.races: list[tuple[str, int, int]] = []

    @staticmethod
    def _join(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: max(a.get(k, 0), b.get(k, 0)) for k in a.keys() | b.keys()}

    def _tick(self, agent: str) -> dict[str, int]:
        vc = self.agent.setdefault(agent, {})
        vc[agent] = vc.get(agent, 0) + 1
        return dict(vc)

    def _access(self, i: int, op: Op, agent: str, vc: dict[str, int]) -> None:
        for buf in op.reads:
            if buf in self.last_write:
                w, w_agent, w_vc = self.last_write[buf]
                if w_vc[w_agent] > vc.get(w_agent, 0):  # the write is not before this read
                    self.races.append((buf, w, i))
        for buf in op.writes:
            self.last_write[buf] = (i, agent, vc)

    def host(self, i: int, op: Op) -> None:
        self._access(i, op, CPU, self._tick(CPU))

    def gpu(self, i: int, op: Op) -> None:
        # Whatever the CPU did before issuing the op happens before it.
        stream = self.agent.setdefault(op.stream, {})
        self.agent[op.stream] = self._join(stream, self.agent[CPU])
        self._access(i, op, op.stream, self._tick(op.stream))

    def record(self, stream: str, event: str) -> None:
        self.event[event] = self._join(self.agent.setdefault(stream, {}), self.agent[CPU])

    def wait(self, stream: str, event: str) -> None:
        self.agent[stream] = self._join(self.agent.setdefault(stream, {}), self.event[event])

    def join_stream(self, stream: str) -> None:
        """A blocking call returned: the CPU now knows the stream's work is done."""
        self.agent[CPU] = self._join(self.agent[CPU], self.agent[stream])

    def sync(self, event: str | None) -> None:
        if event is not None:
            self.agent[CPU] = self._join(self.agent[CPU], self.event[event])
            return
        for vc in list(self.agent.values()):
            self.agent[CPU] = self._join(self.agent[CPU], vc)


@dataclass
class Measurements:
    """A committed `python -m minirt.bench transfers` run: its result rows, its measured
    timelines by program name, and the hardware model fitted to its calibration rows."""

    record: dict[str, Any]
    timelines: dict[str, Timeline]

    @property
    def hardware(self) -> Hardware:
        return Hardware.from_measurements(self.record)

    def rows(self, experiment: str) -> list[dict[str, Any]]:
        return [r for r in self.record["results"] if r["experiment"] == experiment]

    def compare(self, experiment: str, hw: Hardware | None = None) -> list[dict[str, Any]]:
        """Measured vs simulated, one row per program of `experiment`: for "bandwidth" the
        measured copy's time, otherwise the whole program's."""
        hw = hw or self.hardware
        out = []
        for row in self.rows(experiment):
            program = Program.from_dict(row["program"])
            measured, predicted = self.timelines[program.name], simulate(program, hw)
            if experiment == "bandwidth":
                m, p = measured.of("copy").ms, predicted.of("copy").ms
            else:
                m, p = measured.total_ms, predicted.total_ms
            out.append({"program": program.name, "measured_ms": m, "predicted_ms": p,
                        "error": p / m - 1, **{k: row[k] for k in row if k in _KEYS}})  # fmt: skip
        return out


_KEYS = ("direction", "memory", "nbytes", "non_blocking", "case", "mode", "fixed")


def load_measurements(device: str = "h100", root=None) -> Measurements | None:
    """The newest committed transfers run and its timelines, or None if none is committed."""
    from pathlib import Path

    from minirt.tools.results import latest_results
    from minirt.trace import load_trace

    record = latest_results("transfers", device=device, root=root)
    if record is None:
        return None
    path = Path(record["path"])
    trace = load_trace(path.with_name(path.name.replace("transfers-", "transfers-trace-")))
    names = {e["run"] for e in trace.of_type("interval")}
    return Measurements(record, {n: Timeline.from_events(trace.events, n) for n in names})


def fit_report(measured: Timeline, predicted: Timeline) -> list[dict[str, Any]]:
    """Per GPU op: measured and predicted duration and end time (ms), for tables and tests."""
    rows = []
    for iv in measured.intervals:
        if iv.lane == CPU:
            continue
        p = predicted.of(iv.name)
        rows.append({"name": iv.name, "lane": iv.lane, "measured_ms": iv.ms,
                     "predicted_ms": p.ms, "measured_end_ms": iv.end_ms,
                     "predicted_end_ms": p.end_ms})  # fmt: skip
    return rows


__all__ = [
    "COMPUTE",
    "CPU",
    "Hardware",
    "Interval",
    "Measurements",
    "Op",
    "Program",
    "Race",
    "Timeline",
    "fit_report",
    "load_measurements",
    "simulate",
]
