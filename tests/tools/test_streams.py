"""The stream simulator: its rules on small programs, and its predictions against the committed
H100 measurements (bench/results/h100/transfers-*.json, fitted from its calibration rows only)."""

from dataclasses import replace

import pytest

from minirt import transfer as tr
from minirt.tools.streams import CPU, Hardware, Program, Timeline, load_measurements, simulate
from minirt.trace import Recorder, load_trace

HW = Hardware()
MiB = 1 << 20


def test_one_stream_runs_in_order_and_two_streams_overlap():
    one = simulate(tr.overlap_program(256 * MiB, 20, two_streams=False), HW)
    two = simulate(tr.overlap_program(256 * MiB, 20, two_streams=True), HW)
    copy, compute = one.of("load next"), one.of("compute")
    assert compute.start_ms >= copy.end_ms  # same stream: strictly after
    assert one.overlap_ms() == 0
    longest = max(copy.ms, compute.ms)
    assert two.total_ms < one.total_ms and two.total_ms <= 1.1 * longest
    assert two.overlap_ms() == pytest.approx(min(copy.ms, compute.ms), rel=0.05)


def test_pinned_non_blocking_frees_the_cpu_pageable_does_not():
    """Behind 2 ms of queued work: a pinned non_blocking copy returns at once; a pageable one
    waits for the stream, then stages the data on the CPU (whatever non_blocking says)."""
    held = {}
    for pinned in (True, False):
        for nb in (True, False):
            t = simulate(tr.hold_program("h2d", pinned, nb), HW)
            held[pinned, nb] = sum(iv.ms for iv in t.intervals
                                   if iv.lane == CPU and iv.name == "copy")  # fmt: skip
    copy_ms = HW.copy_ms(tr.hold_program("h2d", True, True).ops[1])
    assert held[True, True] == 0
    assert held[True, False] >= 2.0 + copy_ms - 1e-9
    assert held[False, True] == pytest.approx(held[False, False]) and held[False, True] > 2.0


def test_the_stale_read_is_a_race_and_the_event_fixes_it():
    bug = simulate(tr.stale_read_program(fixed=False), HW)
    fixed = simulate(tr.stale_read_program(fixed=True), HW)
    assert [(r.buffer, r.writer, r.reader, r.stale) for r in bug.races] == [
        ("out@host", "copy result", "read result", True)
    ]
    assert "read it before it was written" in str(bug.races[0])
    assert fixed.races == []
    # The fix waits on the copy's event only: the CPU reads right after the copy ends.
    read = next(iv for iv in fixed.intervals if iv.name == "read result")
    assert read.start_ms >= fixed.of("copy result").end_ms


@pytest.mark.parametrize(
    "mode,racy", [("one stream", False), ("two streams", True), ("two streams + event", False)]
)
def test_across_streams_only_an_event_orders_a_copy_and_a_kernel(mode, racy):
    t = simulate(tr.stream_order_program(mode), HW)
    assert bool(t.races) is racy
    if racy:
        assert t.races[0].stale  # the kernel really ran before the copy ended
    else:
        assert t.of("attention").start_ms >= t.of("load kv").end_ms


def test_a_race_is_a_race_even_when_the_timing_happens_to_work():
    """Happens-before, not luck: with a slow kernel first, the copy ends in time, yet unordered."""
    p = Program("lucky")
    p.h2d("load", 1 << 10, stream="copy", buffer="kv")
    p.kernel("slow", ms=5.0)
    p.kernel("use", ms=0.1, reads=["kv"])
    t = simulate(p, HW)
    assert len(t.races) == 1 and not t.races[0].stale


def test_faster_links_move_the_timeline():
    program = tr.overlap_program(256 * MiB, 4, two_streams=False)
    slow = simulate(program, replace(HW, h2d_gbps=HW.h2d_gbps / 2))
    assert slow.of("load next").ms > 1.8 * simulate(program, HW).of("load next").ms


def test_bad_programs_get_clear_errors():
    with pytest.raises(ValueError, match="waited on before recorded"):
        simulate(Program("p").wait("never"), HW)
    with pytest.raises(ValueError, match="never recorded"):
        simulate(Program("p").synchronize("never"), HW)
    with pytest.raises(ValueError, match="nbytes must be >= 0"):
        Program("p").h2d("x", -1)
    with pytest.raises(ValueError, match="mode must be"):
        tr.stream_order_program("three streams")


def test_timelines_are_trace_events_and_back():
    t = simulate(tr.stale_read_program(fixed=True), HW)
    rec = Recorder({"what": "simulated"})
    for e in t.to_events():
        rec.record(e)
    back = Timeline.from_events(load_trace(rec.to_dict()).events, t.program)
    assert [(iv.lane, iv.name, iv.kind) for iv in back.intervals] == [
        (iv.lane, iv.name, iv.kind) for iv in t.intervals
    ]
    assert back.total_ms == pytest.approx(t.total_ms, abs=1e-5)


def test_programs_round_trip_through_json():
    p = tr.stream_order_program("two streams + event")
    assert Program.from_dict(p.to_dict()) == p


# ------------------------------------------------------------------ against the H100

H100 = load_measurements("h100")
needs_h100 = pytest.mark.skipif(H100 is None, reason="no committed transfers-*.json")


def _within(row, rel=0.15, floor_ms=0.02):
    """15 %, or 20 us for copies so small that CUDA-event jitter is larger than 15 %."""
    return abs(row["predicted_ms"] - row["measured_ms"]) <= max(rel * row["measured_ms"], floor_ms)


@needs_h100
@pytest.mark.parametrize("memory,from_size", [("pinned", 64 * MiB), ("pageable", 256 * MiB)])
@pytest.mark.parametrize("direction", ["h2d", "d2h"])
def test_bandwidth_bound_copies_are_predicted_within_15_percent(direction, memory, from_size):
    """Where a copy's time is bytes / bandwidth (pinned from 64 MiB; pageable, whose CPU memcpy
    is noisier, from 256 MiB). Smaller copies are shown in notebook 06 with their errors, not
    asserted: their fixed costs moved by up to 4x between two H100 runs a minute apart (both
    committed), more than any fitted constant can follow."""
    rows = [r for r in H100.compare("bandwidth") if r["direction"] == direction
            and r["memory"] == memory and r["nbytes"] >= from_size]  # fmt: skip
    assert rows and all(_within(r, floor_ms=0) for r in rows), rows


@needs_h100
def test_the_known_gap_small_pageable_d2h_is_slower_than_one_staging_pipeline():
    """Written down, not hidden: below 64 MiB a pageable D2H copy takes about twice what a
    single pipelined staging copy predicts (the driver's path for it is not modelled). If a
    better model closes the gap, this test says so and the notebook's text should change."""
    rows = [r for r in H100.compare("bandwidth") if r["direction"] == "d2h"
            and r["memory"] == "pageable" and MiB <= r["nbytes"] < 64 * MiB]  # fmt: skip
    assert rows and all(r["error"] < -0.3 for r in rows), rows


@needs_h100
@pytest.mark.parametrize("experiment", ["overlap", "stream_order"])
def test_overlap_experiments_are_predicted_within_15_percent(experiment):
    rows = H100.compare(experiment)
    assert rows and all(_within(r, floor_ms=0) for r in rows), rows


@needs_h100
def test_cpu_hold_experiments_are_predicted_within_20_percent():
    rows = H100.compare("cpu_hold")
    assert len(rows) == 8 and all(_within(r, rel=0.2, floor_ms=0) for r in rows), rows


@needs_h100
def test_the_h100_run_recorded_its_targets_and_caught_the_bugs():
    targets = H100.rows("target")
    assert {t["name"] for t in targets} >= {"swap out / pinned", "swap in / pinned",
                                            "overlapped / max(copy, compute)"}  # fmt: skip
    for row in H100.rows("stale_read"):
        assert bool(row["stale"]) is not row["fixed"]
    for row in H100.rows("stream_order"):
        assert bool(row["stale"]) is (row["mode"] == "two streams")
