"""Memory transfers on a real GPU: pinned vs pageable, `non_blocking`, streams, events.

Every experiment here is a `minirt.tools.streams.Program` — the same object the CPU simulator
plays — and `run_cuda(program)` executes it on the GPU, timing each operation with CUDA events on
its own stream and each CUDA call on the host clock. The result is a `Timeline` in the trace's
'interval' schema, so a measured H100 run and a simulated one draw the same way (notebook 06,
the dashboard's Streams page) and can be compared bar for bar.

The executor also checks the data. Every write stamps its buffer's last byte with a number of its
own; every read looks at that byte when it runs. A read that sees another number than program
order promises is a *stale read*: the classic bugs (the CPU reading a `non_blocking` D2H result
before synchronising; a kernel on one stream reading what a copy on another has not finished
writing) show up as `RunResult.stale`, not as a vague "sometimes wrong".

The experiments:
- `copy_program`: one copy, H2D or D2H, pinned or pageable — bandwidth vs size.
- `hold_program`: a copy issued behind 2 ms of queued GPU work — how long the CPU is held.
- `overlap_program`: a copy and an independent matmul, on one stream or two.
- `stale_read_program`: a D2H copy read on the CPU without, then with, an event sync.
- `stream_order_program`: a kernel reading what a copy on another stream writes, without and
  with `wait_event`, and on one stream.

CPU-only machines cannot run these (no pinned memory, no streams); they read the committed H100
results (`python -m minirt.bench transfers`) and simulate (`minirt.tools.streams.simulate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from minirt.tools.streams import COMPUTE, CPU, Interval, Op, Program, Timeline

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SIZES = tuple(4 * KiB * 4**k for k in range(10))  # 4 KiB .. 1 GiB
MATMUL_N = 4096  # one "unit" of compute: a 4096^3 bf16 matmul (137 GFLOP)


# ---------------------------------------------------------------- the experiments, as programs


def copy_program(direction: str, nbytes: int, pinned: bool, non_blocking: bool = True) -> Program:
    """A warm-up copy, then the measured one ("copy"), then a device sync. The warm-up matters:
    on the H100 a copy issued to an idle GPU runs up to 2x slower (the link and the copy
    engine wake up), so a bandwidth read off a lone copy says more about power states."""
    memory = "pinned" if pinned else "pageable"
    p = Program(f"{direction} {memory} {nbytes}")
    copy = p.h2d if direction == "h2d" else p.d2h
    copy("warm-up", nbytes, pinned=pinned, non_blocking=non_blocking, buffer="x")
    copy("copy", nbytes, pinned=pinned, non_blocking=non_blocking, buffer="x")
    return p.synchronize()


def hold_program(
    direction: str, pinned: bool, non_blocking: bool, nbytes: int = 64 * MiB, queued_ms=2.0
) -> Program:
    """A 2 ms kernel is queued, then a copy is issued: does the CPU get its thread back at once
    (so it can prepare the next batch), or is it held until the GPU catches up?"""
    memory = "pinned" if pinned else "pageable"
    p = Program(f"hold {direction} {memory} non_blocking={non_blocking}")
    p.kernel("queued work", ms=queued_ms)
    copy = p.h2d if direction == "h2d" else p.d2h
    copy("copy", nbytes, pinned=pinned, non_blocking=non_blocking, buffer="x")
    p.host("next batch", ms=0.2)  # the CPU work we hoped to overlap
    return p.synchronize()


def overlap_program(nbytes: int, matmuls: int, two_streams: bool) -> Program:
    """Load the next layer's weights (or a swapped-in sequence's KV) while computing this one.
    One stream: copy then compute, serially. Two streams: they overlap."""
    p = Program(f"overlap {'two streams' if two_streams else 'one stream'}")
    flops = 2.0 * MATMUL_N**3 * matmuls
    p.h2d("load next", nbytes, stream="copy" if two_streams else COMPUTE, buffer="next")
    p.kernel("compute", flops=flops, reads=("current",))
    return p.synchronize()


def stale_read_program(fixed: bool, nbytes: int = 16 * MiB) -> Program:
    """The GPU computes a result, a non_blocking D2H copies it to pinned memory, the CPU reads
    it. Without a sync the CPU reads whatever was there before; with an event sync, the result."""
    p = Program(f"stale read {'fixed' if fixed else 'bug'}")
    p.kernel("compute result", ms=1.0, writes=("out",))
    p.d2h("copy result", nbytes, non_blocking=True, buffer="out")
    if fixed:
        p.record("result copied")
        p.synchronize("result copied")  # event.synchronize(): wait for this copy only
    p.host("read result", ms=0.05, reads=("out@host",))
    return p.synchronize()


def stream_order_program(mode: str, nbytes: int = 256 * MiB) -> Program:
    """A kernel uses what an H2D copy writes. mode: "one stream" (ordered by the stream),
    "two streams" (the copy on a copy stream, no wait: a race), "two streams + event"."""
    if mode not in ("one stream", "two streams", "two streams + event"):
        raise ValueError(
            f"mode must be 'one stream', 'two streams' or 'two streams + event', not {mode!r}"
        )
    p = Program(f"stream order: {mode}")
    stream = COMPUTE if mode == "one stream" else "copy"
    p.h2d("load kv", nbytes, stream=stream, buffer="kv")
    if mode == "two streams + event":
        p.record("kv loaded", stream="copy")
        p.wait("kv loaded", stream=COMPUTE)
    p.kernel("attention", ms=0.5, reads=("kv",))
    return p.synchronize()


# ---------------------------------------------------------------- the executor


@dataclass
class RunResult:
    timeline: Timeline
    stale: list[str] = field(default_factory=list)  # "reader read buffer: saw a, expected b"
    runs_ms: list[float] = field(default_factory=list)  # total of each repetition


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError(
            "minirt.transfer runs on a CUDA GPU (pinned memory and streams do not exist on a "
            "CPU). Without one, simulate: minirt.tools.streams.simulate(program), or read the "
            "committed H100 runs: minirt.tools.results.latest_results('transfers')"
        )


_CYCLES_PER_MS: float | None = None


def _cycles_per_ms() -> float:
    """`torch.cuda._sleep` spins for clock cycles; measure how many make a millisecond."""
    global _CYCLES_PER_MS
    if _CYCLES_PER_MS is None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(1_000_000)
        start.record()
        torch.cuda._sleep(10_000_000)
        end.record()
        end.synchronize()
        _CYCLES_PER_MS = 10_000_000 / start.elapsed_time(end)
    return _CYCLES_PER_MS


class _Buffers:
    """Device buffers by name, host buffers per copy op, and the stamps the writes leave."""

    def __init__(self, program: Program, device: torch.device):
        size: dict[str, int] = {}
        for op in program.ops:
            for buf in op.reads + op.writes:
                if not buf.endswith("@host"):
                    size[buf] = max(size.get(buf, 1), op.nbytes if op.kind != "kernel" else 1)
        self.dev = {b: torch.zeros(n, dtype=torch.uint8, device=device) for b, n in size.items()}
        self.host: dict[int, torch.Tensor] = {}  # op index -> its host tensor
        # "x@host" -> the tensor of the latest d2h into it; _issue moves it along in issue order,
        # so the CPU reads what program order says (a decode loop copies its tokens every step)
        self.host_of: dict[str, torch.Tensor] = {}
        for i, op in enumerate(program.ops):
            if op.kind in ("h2d", "d2h"):
                t = torch.empty(op.nbytes, dtype=torch.uint8, pin_memory=op.pinned)
                self.host[i] = t
                if op.kind == "d2h":
                    self.host_of[op.writes[0]] = t
        self.observed: dict[int, list[torch.Tensor]] = {}  # kernel op -> a probe per read

    def reset(self, program: Program) -> None:
        """Zero every buffer, fill each H2D source with its op's stamp (outside the timing)."""
        for t in self.dev.values():
            t.zero_()
        for i, t in self.host.items():
            t.fill_(stamp(i) if program.ops[i].kind == "h2d" else 0)
        torch.cuda.synchronize()


def stamp(i: int) -> int:
    """The byte op number i writes (never 0, the value of an unwritten buffer)."""
    return i % 255 + 1


def expected_reads(program: Program) -> dict[tuple[int, str], int]:
    """(op, buffer) -> the stamp that read must see if every operation ran in program order."""
    value: dict[str, int] = {}
    expected = {}
    for i, op in enumerate(program.ops):
        for buf in op.reads:
            expected[(i, buf)] = value.get(buf, 0)
        if op.kind == "d2h":
            value[op.writes[0]] = value.get(op.reads[0], 0)
        else:
            for buf in op.writes:
                value[buf] = stamp(i)
    return expected


def run_cuda(program: Program, reps: int = 5, warmup: int = 1) -> RunResult:
    """Run `program` `warmup + reps` times on the current CUDA device; return the median run's
    timeline (by total time) and every stale read seen in any run."""
    _require_cuda()
    device = torch.device("cuda", torch.cuda.current_device())
    buffers = _Buffers(program, device)
    streams = {COMPUTE: torch.cuda.current_stream(device)}
    for name in program.streams():
        if name not in streams:
            streams[name] = torch.cuda.Stream(device)
    a = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=torch.bfloat16)
    runs, stale = [], []
    for rep in range(warmup + reps):
        buffers.reset(program)
        timeline, seen = _run_once(program, buffers, streams, a)
        if rep >= warmup:
            runs.append(timeline)
        stale += [s for s in seen if s not in stale]
    runs.sort(key=lambda t: t.total_ms)
    return RunResult(runs[len(runs) // 2], stale, [t.total_ms for t in runs])


def _run_once(program, buffers, streams, a) -> tuple[Timeline, list[str]]:
    ev = {}  # program events by name
    marks = []  # (op index, lane, start event, end event)
    cpu: list[Interval] = []
    host_seen: dict[tuple[int, str], int] = {}
    torch.cuda.synchronize()
    t0 = torch.cuda.Event(enable_timing=True)
    t0.record(streams[COMPUTE])
    t0.synchronize()
    c0 = time.perf_counter()

    def now_ms() -> float:
        return (time.perf_counter() - c0) * 1e3

    for i, op in enumerate(program.ops):
        if op.kind == "host":
            start = now_ms()
            for buf in op.reads:  # the CPU looks at the copied data: its last byte
                host_seen[(i, buf)] = int(buffers.host_of[buf][-1])
            while now_ms() - start < op.ms:  # the CPU's own work (busy, like real work)
                pass
            cpu.append(Interval(CPU, op.name, "host", start, now_ms()))
            continue
        if op.kind == "sync":
            start = now_ms()
            ev[op.event].synchronize() if op.event else torch.cuda.synchronize()
            cpu.append(Interval(CPU, op.name, "blocked", start, now_ms()))
            continue
        stream = streams[op.stream]
        start_cpu = now_ms()
        if op.kind == "record":
            ev[op.event] = torch.cuda.Event()
            ev[op.event].record(stream)
        elif op.kind == "wait":
            stream.wait_event(ev[op.event])
        else:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(stream):
                begin.record(stream)
                _issue(i, op, buffers, a)
                end.record(stream)
            marks.append((i, op, begin, end))
        if op.kind in ("h2d", "d2h"):  # how long the call held the CPU (a launch: ~10 us)
            cpu.append(Interval(CPU, op.name, "blocked", start_cpu, now_ms()))
    torch.cuda.synchronize()
    gpu = [Interval(op.stream, op.name, op.kind, t0.elapsed_time(b), t0.elapsed_time(e),
                    op.nbytes) for _, op, b, e in marks]  # fmt: skip
    intervals = sorted(gpu + cpu, key=lambda iv: (iv.start_ms, iv.lane))
    total = max((iv.end_ms for iv in intervals), default=0.0)
    # The data check: what each read saw against what program order promises.
    seen = dict(host_seen)
    for i, probes in buffers.observed.items():
        for buf, probe in zip(program.ops[i].reads, probes, strict=True):
            seen[(i, buf)] = int(probe)
    stale = [
        f"{program.ops[i].name!r} read {buf!r}: saw {seen[(i, buf)]}, expected {want}"
        for (i, buf), want in expected_reads(program).items()
        if (i, buf) in seen and seen[(i, buf)] != want
    ]
    return Timeline(program.name, intervals, total), stale


def _issue(i: int, op: Op, buffers: _Buffers, a: torch.Tensor) -> None:
    """Enqueue one operation on the current stream."""
    if op.kind == "h2d":
        dst = buffers.dev[op.writes[0]]  # the copy ends at the buffer's last byte (the stamp)
        dst[dst.numel() - op.nbytes :].copy_(buffers.host[i], non_blocking=op.non_blocking)
        return
    if op.kind == "d2h":
        src = buffers.dev[op.reads[0]]
        buffers.host[i].copy_(src[src.numel() - op.nbytes :], non_blocking=op.non_blocking)
        buffers.host_of[op.writes[0]] = buffers.host[i]
        return
    # A kernel: look at what it reads, work, then leave its stamp on what it writes.
    buffers.observed[i] = [buffers.dev[b][-1:].clone() for b in op.reads]
    if op.ms:
        torch.cuda._sleep(int(op.ms * _cycles_per_ms()))
    for _ in range(round(op.flops / (2.0 * MATMUL_N**3))):
        torch.mm(a, a)
    if op.nbytes:  # a memory-bound kernel: read half, write half
        half = torch.empty(op.nbytes // 2, dtype=torch.uint8, device=a.device)
        half.copy_(torch.empty_like(half))
    for b in op.writes:
        buffers.dev[b][-1:].fill_(stamp(i))


# ---------------------------------------------------------------- helpers for the bench


def copy_gbps(result: RunResult, nbytes: int) -> float:
    return nbytes / (result.timeline.of("copy").ms * 1e6)
