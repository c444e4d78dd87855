"""Lab 2 (labs/lab02_swap_prefetch.ipynb): what a copy costs, and a swapped-out sequence's KV
brought back on a copy stream ahead of need, ordered by the right events.

Every expected answer comes from minirt itself: copy times from `Hardware.copy_ms`, timelines and
data races from `minirt.tools.streams.simulate`, and, where a GPU is usable in the grading
process, stale reads from `minirt.transfer.run_cuda`. The reference schedules below only *build*
programs (the timing always comes from the simulator); the learner's program must have no race
and be as fast as the reference, and no more than that is asked of its shape.

Task 1 is graded against `Hardware.copy_ms`, so while the learner's copy functions run that method
refuses to answer (every route to it, `simulate` included, goes through it); tasks 2 and 3 may use
it, as the notebook does.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
from dataclasses import replace
from types import SimpleNamespace

from minirt.grading.core import Mismatch, Refused, Task
from minirt.grading.guard import Forbidden
from minirt.tools.streams import COMPUTE, Hardware, Op, Program, Race, Timeline, simulate

MiB = 1 << 20
TOKEN_BYTES = 1024  # one step's sampled token ids, copied to the host
HOST_MS = 0.05  # the CPU schedules the next step from them
TOL_MS, TOL_REL = 0.02, 0.002  # slack on a total time: launches, rounding
# Set to "0" to skip the real-GPU runs (they need CUDA usable in the grading process).
CUDA_ENV = "MINIRT_GRADING_CUDA"

# The reference schedules live in this module (refused as part of the grader); task 1's reference
# is Hardware.copy_ms, refused by name (a saved reference to it, in the object check) and, while
# the learner's copy functions run, by `_copy_model_refused`.
FORBIDDEN = Forbidden(
    names=("Hardware.copy_ms",),  # (by its qualified name: the object check)
    what="minirt's copy model (Hardware.copy_ms)",
)


def _call(name: str, **kwargs) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def _hardware(rng: random.Random, i: int) -> Hardware:
    """The workbench's H100 first, then machines with other links, ramps, staging and latency."""
    hw = Hardware()
    if i == 0:
        return hw
    scale = lambda x: round(x * rng.uniform(0.25, 4.0), 3)  # noqa: E731
    return replace(
        hw,
        h2d_gbps=scale(hw.h2d_gbps),
        d2h_gbps=scale(hw.d2h_gbps),
        ramp_bytes=rng.choice((0, 1 * MiB, 2 * MiB, 4 * MiB, 16 * MiB)),
        ramp_gbps=scale(hw.ramp_gbps),
        staging_h2d_gbps=scale(hw.staging_h2d_gbps),
        staging_d2h_gbps=scale(hw.staging_d2h_gbps),
        staging_chunk_bytes=rng.choice((256 << 10, 1 * MiB, 2 * MiB, 8 * MiB)),
        copy_latency_us=round(rng.uniform(2.0, 40.0), 2),
    )


def _short(hw: Hardware) -> str:
    if hw == Hardware():
        return "Hardware()"
    return f"Hardware({', '.join(f'{k}={v!r}' for k, v in hw.to_dict().items())})"


# -- task 1: what one copy costs ----------------------------------------------------------------
def _nbytes(rng: random.Random, i: int, hw: Hardware) -> int:
    """Edge sizes first (nothing, a byte, the ramp and a staging chunk exactly and one byte
    past), then anything from 1 KiB to 2 GiB, log-uniform."""
    edges = [0, 1, hw.ramp_bytes, hw.ramp_bytes + 1, hw.staging_chunk_bytes,
             hw.staging_chunk_bytes + 1]  # fmt: skip
    if i < 2 * len(edges):
        return edges[i % len(edges)]
    return int(2 ** rng.uniform(10, 31))


@contextlib.contextmanager
def _copy_model_refused():
    """Hardware.copy_ms raises Refused while the block runs: task 1 asks for that formula, so the
    learner's code may not ask minirt for it (hw.copy_ms, Hardware.copy_ms(hw, ...), simulate)."""

    def refuse(self, op):
        raise Refused(
            "your copy functions called minirt's copy model (Hardware.copy_ms, directly or through "
            "simulate) — refused: task 1 grades your own formula against it; compute the time "
            "from hw's fields"
        )

    original = Hardware.__dict__["copy_ms"]
    Hardware.copy_ms = refuse
    try:
        yield
    finally:
        Hardware.copy_ms = original


def _check_copy(learner: SimpleNamespace, rng: random.Random, i: int, pinned: bool) -> None:
    hw = _hardware(rng, 0 if i < 6 else i)  # the edge sizes on the H100, then on other machines
    nbytes = _nbytes(rng, i, hw)
    direction = rng.choice(("h2d", "d2h"))
    want = hw.copy_ms(Op(direction, "copy", "copy", nbytes=nbytes, pinned=pinned))
    call = _call("copy_time_ms", nbytes=nbytes, pinned=pinned, direction=direction)
    call = f"{call[:-1]}, hw={_short(hw)})"
    with _copy_model_refused():
        got = learner.copy_time_ms(nbytes, pinned, direction, hw)
    if isinstance(got, bool) or not isinstance(got, int | float):
        raise Mismatch(f"{call} returned {got!r}; expected a float (milliseconds)")
    if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
        # 12 digits: a slip in a one-byte copy shows only in the 8th (1 byte at 18 GB/s: 56 ps)
        raise Mismatch(f"{call} returned {got:.12g} ms; minirt's Hardware.copy_ms says "
                       f"{want:.12g} ms ({got - want:+.3g} ms)")  # fmt: skip


def check_pinned(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    _check_copy(learner, rng, i, pinned=True)


def check_pageable(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    _check_copy(learner, rng, i, pinned=False)


# -- the decode loop both swap tasks build on (the notebook defines the same decode_step) -------
def decode_step(p: Program, s: int, step_ms: float, reads=(), writes=()) -> Program:
    """One synchronous decode step: the forward, its sampled tokens copied to the host, the CPU
    waiting for *them* (an event on the compute stream, not the whole device), then scheduling."""
    p.kernel(f"step {s}", ms=step_ms, reads=reads, writes=("tokens", *writes))
    p.d2h(f"tokens {s}", TOKEN_BYTES, buffer="tokens")
    p.record(f"tokens {s}")
    p.synchronize(f"tokens {s}")
    return p.host(f"schedule {s + 1}", ms=HOST_MS, reads=("tokens@host",))


def lookahead_steps(kv_bytes: int, step_ms: float, hw: Hardware) -> int:
    """How many steps ahead the reference issues a swap-in: the copy's time in whole steps."""
    return math.ceil(hw.copy_ms(Op("h2d", "swap in", "copy", nbytes=kv_bytes)) / step_ms)


def reference_swap_in(num_steps: int, need_at: int, kv_bytes: int, step_ms: float,
                      hw: Hardware) -> Program:  # fmt: skip
    """Task 2's reference schedule: the H2D on the copy stream `lookahead_steps` before the
    step that needs it (or before step 0), its event waited on by the compute stream just
    before that step."""
    issue_at = max(0, need_at - lookahead_steps(kv_bytes, step_ms, hw))
    p = Program("reference: swap-in ahead of need")
    for s in range(num_steps):
        if s == issue_at:
            p.h2d("swap in kv", kv_bytes, stream="copy", buffer="kv")
            p.record("kv in", stream="copy")
        if s == need_at:
            p.wait("kv in", stream=COMPUTE)
        decode_step(p, s, step_ms, reads=("kv",) if s >= need_at else ())
    return p


def reference_swap_out_in(num_steps: int, out_after: int, back_at: int, kv_bytes: int,
                          step_ms: float) -> Program:  # fmt: skip
    """Task 3's reference: the CPU queues every step; the swap-out waits on the compute stream's
    event after the last step that wrote the KV, the swap-in follows it on the copy stream, and
    the compute stream waits on the swap-in's event before the step that reads the KV again."""
    p = Program("reference: swap out, then in")
    for s in range(num_steps):
        if s == out_after:
            p.record("kv written")
            p.wait("kv written", stream="copy")
            p.d2h("swap out kv", kv_bytes, stream="copy", buffer="kv")
            p.h2d("swap in kv", kv_bytes, stream="copy", buffer="kv")
            p.record("kv in", stream="copy")
        if s == back_at:
            p.wait("kv in")
        kv = ("kv",) if s < out_after or s >= back_at else ()
        p.kernel(f"step {s}", ms=step_ms, reads=kv, writes=kv)
    return p.synchronize()


# -- checking a learner's program ---------------------------------------------------------------
def _as_program(got, call: str) -> Program:
    if not isinstance(got, Program):
        raise Mismatch(f"{call} returned {type(got).__name__}; expected a Program")
    return got


def _simulate(p: Program, hw: Hardware, call: str) -> Timeline:
    try:
        return simulate(p, hw)
    except (ValueError, KeyError) as e:
        raise Mismatch(f"{call}: the simulator refuses the program: {e}") from None


def _copies(p: Program, kind: str, call: str, what: str) -> tuple[int, Op]:
    """The one copy of `kind` that moves buffer "kv" (index in p.ops, op)."""
    buf = "kv" if kind == "h2d" else "kv@host"
    found = [(i, op) for i, op in enumerate(p.ops) if op.kind == kind and buf in op.writes]
    if len(found) != 1:
        verb = "p.h2d(..., buffer='kv')" if kind == "h2d" else "p.d2h(..., buffer='kv')"
        raise Mismatch(f"{call}: expected one {what} ({verb}); the program has {len(found)}")
    return found[0]


def _check_copy_op(op: Op, kv_bytes: int, call: str, what: str) -> None:
    if op.nbytes != kv_bytes:
        raise Mismatch(f"{call}: the {what} {op.name!r} moves {op.nbytes:,} bytes, not kv_bytes")
    if op.stream == COMPUTE:
        raise Mismatch(
            f"{call}: the {what} {op.name!r} is on the compute stream, so the decode steps queue "
            "behind it; put it on a stream of its own (stream='copy')"
        )
    if not op.pinned:
        raise Mismatch(
            f"{call}: the {what} {op.name!r} uses pageable memory: the CPU stages it chunk by "
            "chunk and is held all along; the swap space is pinned (pinned=True)"
        )
    if not op.non_blocking:
        raise Mismatch(
            f"{call}: the {what} {op.name!r} has non_blocking=False: the CPU waits for it "
            "instead of scheduling the next steps (non_blocking=True)"
        )


def _check_steps(p: Program, num_steps: int, step_ms: float, uses_kv, call: str) -> list[int]:
    """The decode steps: `num_steps` kernels on the compute stream, of `step_ms` each, step s
    reading "kv" exactly when `uses_kv(s)`. Returns their indices in p.ops."""
    kernels = [i for i, op in enumerate(p.ops) if op.kind == "kernel"]
    if len(kernels) != num_steps:
        raise Mismatch(
            f"{call}: the program has {len(kernels)} kernels; expected {num_steps} steps"
        )
    for s, i in enumerate(kernels):
        op = p.ops[i]
        if op.stream != COMPUTE:
            raise Mismatch(f"{call}: step {s} ({op.name!r}) runs on stream {op.stream!r}, not "
                           "'compute'")  # fmt: skip
        if not math.isclose(op.ms, step_ms, rel_tol=1e-9) or op.flops or op.nbytes:
            raise Mismatch(f"{call}: step {s} ({op.name!r}) must be a kernel of ms=step_ms")
        if ("kv" in op.reads) != uses_kv(s):
            need = "reads" if uses_kv(s) else "must not read"
            raise Mismatch(f"{call}: step {s} ({op.name!r}) {need} 'kv' (reads={list(op.reads)})")
    return kernels


def _op_stream(p: Program, name: str) -> str:
    return next((op.stream for op in p.ops if op.name == name and op.stream), "?")


def _race_message(race: Race, p: Program, call: str, events: dict[str, str]) -> str:
    """What the race means and which event fixes it. `events` names the fix's events."""
    w_stream, r_stream = _op_stream(p, race.writer), _op_stream(p, race.reader)
    when = (
        "in this timeline it even ran before the copy had finished"
        if race.stale
        else "here the copy happened to finish first, but nothing guarantees it"
    )
    if race.buffer == "kv" and any(o.name == race.writer and o.kind == "h2d" for o in p.ops):
        ev = events.get("in", "kv in")
        recorded = {op.event: op.stream for op in p.ops if op.kind == "record"}
        own = sorted({op.event for op in p.ops if op.kind == "wait" and op.stream == r_stream
                      and recorded.get(op.event) == r_stream})  # fmt: skip
        note = (
            f" (your wait for {own[0]!r} orders nothing: that event is recorded on {r_stream!r} "
            "itself, and an event completes when the work before it *on its own stream* has)"
            if own
            else ""
        )
        return (
            f"{call}: {race.reader!r} reads 'kv', which the swap-in {race.writer!r} on stream "
            f"{w_stream!r} writes, and nothing orders the read after it: the read races with the "
            f"copy ({when}). Record an event on the copy stream after the copy "
            f"(p.record({ev!r}, stream={w_stream!r})) and wait on it from the compute stream "
            f"before {race.reader!r} (p.wait({ev!r}, stream='compute')){note}"
        )
    if race.buffer == "kv" and any(o.name == race.reader and o.kind == "d2h" for o in p.ops):
        ev = events.get("out", "kv written")
        when = (
            "in this timeline it even started before that step had finished"
            if race.stale
            else "here it happened to start after it, but nothing guarantees it"
        )
        return (
            f"{call}: the swap-out {race.reader!r} on stream {r_stream!r} reads 'kv', which "
            f"{race.writer!r} on stream {w_stream!r} writes, and nothing orders the copy after "
            f"it: the copy races with the step ({when}). Record an event on the compute stream "
            f"after {race.writer!r} (p.record({ev!r}, stream='compute')) and wait on it from the "
            f"copy stream before the swap-out (p.wait({ev!r}, stream={r_stream!r}))"
        )
    if race.buffer == "kv@host":
        return (
            f"{call}: the swap-in {race.reader!r} reads the host copy 'kv@host' that the "
            f"swap-out {race.writer!r} writes, unordered after it ({race}); issue both on the "
            "same copy stream, swap-out first"
        )
    return f"{call}: a data race: {race}"


def _check_races(t: Timeline, p: Program, call: str, events: dict[str, str]) -> None:
    if t.races:
        raise Mismatch(_race_message(t.races[0], p, call, events))


def _kernel_index(p: Program, i: int) -> int:
    """Which step op i comes before: the number of kernels issued before it."""
    return sum(op.kind == "kernel" for op in p.ops[:i])


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _too_slow(got: float, want: float) -> bool:
    return got > want + TOL_MS + TOL_REL * want


def _slow_reasons(p: Program, copy_at: int, need_at: int, event_of_copy: str | None) -> list[str]:
    reasons = []
    kernels = [i for i, op in enumerate(p.ops) if op.kind == "kernel"]
    need_idx = kernels[need_at] if need_at < len(kernels) else len(p.ops)
    if any(op.kind == "sync" and op.event is None for op in p.ops[copy_at:need_idx]):
        reasons.append(
            "the CPU calls synchronize() while the swap-in is under way: that waits for every "
            "stream, the copy too; wait for the step's own event instead (decode_step does)"
        )
    waits = [i for i, op in enumerate(p.ops) if op.kind == "wait" and op.stream == COMPUTE
             and op.event == event_of_copy]  # fmt: skip
    if waits and _kernel_index(p, waits[0]) < need_at:
        reasons.append(
            f"the compute stream waits for the copy before step {_kernel_index(p, waits[0])}, "
            f"earlier than step {need_at} needs it"
        )
    return reasons


def _event_recorded_after(p: Program, i: int, stream: str) -> str | None:
    """The first event recorded on `stream` after op i (the one a wait would use)."""
    for op in p.ops[i + 1 :]:
        if op.kind == "record" and op.stream == stream:
            return op.event
    return None


# -- the real GPU, where one is usable in this process ------------------------------------------
@functools.cache
def _cuda_usable() -> bool:
    """A GPU this process may use: present, not disabled, and not in a fork of a process that
    already initialised CUDA (the grader forks a worker per task; so may a test runner)."""
    if os.environ.get(CUDA_ENV) == "0":
        return False
    try:
        import torch

        if torch.cuda._is_in_bad_fork() or not torch.cuda.is_available():
            return False
        torch.zeros(1, device="cuda").add_(1)
        torch.cuda.synchronize()
        return True
    except Exception:  # no driver, a forked child after cuInit, ...: simulate only
        return False


def _check_on_gpu(p: Program, call: str) -> None:
    from minirt.transfer import run_cuda

    stale = run_cuda(p, reps=2).stale
    if stale:
        raise Mismatch(f"{call}: on the GPU a step read stale data: {'; '.join(stale)}")


# -- task 2: a swap-in ahead of need ------------------------------------------------------------
def _swap_in_case(rng: random.Random, i: int, hw: Hardware) -> dict:
    if i < 2:  # small and quick: these also run on the GPU where one is usable
        kv_bytes = rng.choice((8, 16, 32)) * MiB
        return dict(num_steps=8, need_at=(6, 0)[i], kv_bytes=kv_bytes, step_ms=0.4)
    while True:  # keep the copy's time clear of a whole number of steps: no knife-edge cases
        num_steps = rng.randint(2, 24)
        step_ms = round(rng.uniform(0.3, 8.0), 3)
        kv_bytes = rng.randint(1, 96) * 4 * MiB  # 4 MiB to 384 MiB of KV
        steps = hw.copy_ms(Op("h2d", "c", "copy", nbytes=kv_bytes)) / step_ms
        if 0.1 < steps % 1 < 0.9:
            break
    need_at = rng.choice((0, num_steps - 1, rng.randrange(num_steps)))
    return dict(num_steps=num_steps, need_at=need_at, kv_bytes=kv_bytes, step_ms=step_ms)


def check_swap_in(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    hw = _hardware(rng, 0 if i < 2 else i)
    case = _swap_in_case(rng, i, hw)
    need_at, step_ms = case["need_at"], case["step_ms"]
    call = _call("decode_with_swap_in", **case)
    call = f"{call[:-1]}, hw={_short(hw)})"
    p = _as_program(learner.decode_with_swap_in(**case, hw=hw), call)
    copy_at, copy = _copies(p, "h2d", call, "swap-in")
    _check_copy_op(copy, case["kv_bytes"], call, "swap-in")
    kernels = _check_steps(p, case["num_steps"], step_ms, lambda s: s >= need_at, call)
    for s in range(case["num_steps"] - 1):
        if not any(op.kind == "sync" for op in p.ops[kernels[s] : kernels[s + 1]]):
            raise Mismatch(
                f"{call}: the CPU does not wait for step {s}'s tokens before it launches step "
                f"{s + 1}; build each step with decode_step(p, s, step_ms, reads=...)"
            )
    t = _simulate(p, hw, call)
    event = _event_recorded_after(p, copy_at, copy.stream)
    _check_races(t, p, call, {"in": event or "kv in"})
    want = simulate(reference_swap_in(**case, hw=hw), hw).total_ms
    issued = _kernel_index(p, copy_at)
    copy_ms = hw.copy_ms(copy)
    if _too_slow(t.total_ms, want):
        alone = simulate(_decode_only(case["num_steps"], step_ms), hw).total_ms
        reasons = _slow_reasons(p, copy_at, need_at, event)
        ahead = lookahead_steps(case["kv_bytes"], step_ms, hw)
        if not reasons and need_at - issued < ahead:
            reasons.append(
                f"the swap-in is issued {_steps(need_at - issued)} ahead of step {need_at}, but "
                f"the copy takes {copy_ms:.3f} ms and a step {step_ms} ms: issue it "
                f"{_steps(ahead)} ahead (before step {max(0, need_at - ahead)})"
            )
        raise Mismatch(
            f"{call}: the program takes {t.total_ms:.3f} ms; with the swap-in hidden behind the "
            f"steps it takes {want:.3f} ms (the decode loop alone: {alone:.3f} ms)"
            + "".join(f"; {r}" for r in reasons)
        )
    earliest = max(0, need_at - lookahead_steps(case["kv_bytes"], step_ms, hw))
    if issued < earliest:
        raise Mismatch(
            f"{call}: the swap-in is issued before step {issued}, {_steps(need_at - issued)} "
            f"ahead of step {need_at}; the copy takes {copy_ms:.3f} ms and a step {step_ms} ms, "
            f"so issuing it {_steps(need_at - earliest)} ahead hides it. Its blocks are held from "
            f"the moment it is issued, memory other sequences could use: issue it before step "
            f"{earliest}"
        )
    if i < 2 and _cuda_usable():
        _check_on_gpu(p, call)


def _decode_only(num_steps: int, step_ms: float) -> Program:
    p = Program("decode loop")
    for s in range(num_steps):
        decode_step(p, s, step_ms)
    return p


# -- task 3: swap out, then back in -------------------------------------------------------------
def _swap_out_in_case(rng: random.Random, i: int) -> dict:
    if i < 2:  # small and quick: these also run on the GPU where one is usable
        return dict(num_steps=10, out_after=(3, 1)[i], back_at=(8, 2)[i],
                    kv_bytes=rng.choice((8, 16, 32)) * MiB, step_ms=0.4)  # fmt: skip
    num_steps = rng.randint(3, 24)
    out_after = rng.randint(1, num_steps - 2)
    back_at = rng.randint(out_after + 1, num_steps - 1)
    kv_bytes = rng.randint(1, 96) * 4 * MiB
    step_ms = round(rng.uniform(0.3, 8.0), 3)
    return dict(num_steps=num_steps, out_after=out_after, back_at=back_at, kv_bytes=kv_bytes,
                step_ms=step_ms)  # fmt: skip


def _last_writer(p: Program, i: int, buf: str) -> int | None:
    """The op that last wrote `buf` before op i, in program order (what op i should read)."""
    return next((j for j in range(i - 1, -1, -1) if buf in p.ops[j].writes), None)


def check_swap_out_in(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    case = _swap_out_in_case(rng, i)
    out_after, back_at = case["out_after"], case["back_at"]
    call = _call("swap_out_then_in", **case)
    p = _as_program(learner.swap_out_then_in(**case), call)
    hw = Hardware()
    out_at, out = _copies(p, "d2h", call, "swap-out")
    in_at, back = _copies(p, "h2d", call, "swap-in")
    _check_copy_op(out, case["kv_bytes"], call, "swap-out")
    _check_copy_op(back, case["kv_bytes"], call, "swap-in")
    in_batch = lambda s: s < out_after or s >= back_at  # noqa: E731
    kernels = _check_steps(p, case["num_steps"], case["step_ms"], in_batch, call)
    for s, k in enumerate(kernels):
        if ("kv" in p.ops[k].writes) != in_batch(s):
            need = "writes" if in_batch(s) else "must not write"
            raise Mismatch(f"{call}: step {s} {need} 'kv' (writes={list(p.ops[k].writes)})")
    # Data flow, in program order: the swap-out copies what the last step in the batch wrote, the
    # swap-in brings back what the swap-out copied, the step back reads what the swap-in wrote.
    if _last_writer(p, out_at, "kv") != kernels[out_after - 1]:
        raise Mismatch(f"{call}: swap it out after step {out_after - 1}, the last one that writes "
                       "its KV")  # fmt: skip
    if in_at < out_at:
        raise Mismatch(f"{call}: the swap-in is issued before the swap-out: it would bring back "
                       "whatever the host buffer held; swap out first")  # fmt: skip
    if _last_writer(p, kernels[back_at], "kv") != in_at:
        raise Mismatch(f"{call}: step {back_at} must read the KV the swap-in brought back: issue "
                       "the swap-in before it")  # fmt: skip
    t = _simulate(p, hw, call)
    events = {"out": _last_recorded_before(p, out_at) or "kv written",
              "in": _event_recorded_after(p, in_at, back.stream) or "kv in"}  # fmt: skip
    _check_races(t, p, call, events)
    want = simulate(reference_swap_out_in(**case), hw).total_ms
    if _too_slow(t.total_ms, want):
        raise Mismatch(
            f"{call}: the program takes {t.total_ms:.3f} ms, the reference {want:.3f} ms: the "
            "copies should overlap the steps in between; does a wait stall a stream earlier "
            "than it must (the copy stream until step "
            f"{out_after - 1} is done, the compute stream until just before step {back_at})?"
        )
    if i < 2 and _cuda_usable():
        _check_on_gpu(p, call)


def _last_recorded_before(p: Program, i: int) -> str | None:
    return next((op.event for op in reversed(p.ops[:i]) if op.kind == "record"), None)


TASKS = [
    Task("1a", "copy_time_ms, pinned", 2, ("copy_time_ms",), check_pinned, num_cases=60, pure=True),
    Task(
        "1b",
        "copy_time_ms, pageable",
        2,
        ("copy_time_ms",),
        check_pageable,
        num_cases=60,
        pure=True,
    ),
    Task(
        "2",
        "decode_with_swap_in",
        4,
        ("decode_with_swap_in",),
        check_swap_in,
        num_cases=40,
        pure=True,
    ),
    Task(
        "3",
        "swap_out_then_in",
        2,
        ("swap_out_then_in",),
        check_swap_out_in,
        num_cases=40,
        pure=True,
    ),
]
