"""The transfer experiments on a real GPU: the executor's data check catches the classic bugs,
and the simulator's happens-before analysis flags the same programs (and only those)."""

import pytest
import torch

from minirt import transfer as tr
from minirt.tools.streams import Hardware, Program, simulate
from minirt.trace import Recorder, load_trace


@pytest.mark.gpu
@pytest.mark.parametrize("fixed", [False, True])
def test_reading_a_non_blocking_d2h_before_syncing_sees_stale_data(fixed):
    program = tr.stale_read_program(fixed)
    result = tr.run_cuda(program, reps=3)
    assert bool(result.stale) is not fixed, result.stale
    assert bool(simulate(program, Hardware()).races) is not fixed


@pytest.mark.gpu
@pytest.mark.parametrize(
    "mode,racy", [("one stream", False), ("two streams", True), ("two streams + event", False)]
)
def test_a_kernel_on_another_stream_needs_the_copys_event(mode, racy):
    program = tr.stream_order_program(mode)
    result = tr.run_cuda(program, reps=3)
    assert bool(result.stale) is racy, result.stale
    assert bool(simulate(program, Hardware()).races) is racy


@pytest.mark.gpu
def test_the_cpu_reads_are_checked_against_the_latest_d2h_into_their_buffer():
    """A decode loop copies its sampled tokens into the same host buffer every step: each read is
    checked against that step's copy, not against the program's last one."""
    p = Program("tokens every step")
    for s in range(3):
        p.kernel(f"step {s}", ms=0.1, writes=("tokens",))
        p.d2h(f"tokens {s}", 1024, buffer="tokens")
        p.record(f"tokens {s}")
        p.synchronize(f"tokens {s}")
        p.host(f"schedule {s + 1}", ms=0.01, reads=("tokens@host",))
    assert not simulate(p, Hardware()).races
    assert tr.run_cuda(p, reps=2).stale == []


@pytest.mark.gpu
@pytest.mark.parametrize("direction", ["h2d", "d2h"])
@pytest.mark.parametrize("pinned", [True, False])
def test_copies_move_the_bytes_and_leave_their_intervals(direction, pinned):
    program = tr.copy_program(direction, 1 << 20, pinned)
    result = tr.run_cuda(program, reps=2)
    copies = [iv for iv in result.timeline.intervals if iv.kind == direction]
    assert [c.name for c in copies] == ["warm-up", "copy"]
    assert all(c.end_ms > c.start_ms >= 0 for c in copies)
    assert not result.stale
    events = result.timeline.to_events()
    rec = Recorder()
    for e in events:
        rec.record(e)
    assert len(load_trace(rec.to_dict()).of_type("interval")) == len(events)


@pytest.mark.gpu
def test_two_streams_overlap_the_copy_with_the_matmul():
    """Not a timing goal (the bench has it), only that the intervals do overlap at all."""
    one = tr.run_cuda(tr.overlap_program(64 << 20, 4, two_streams=False), reps=2).timeline
    two = tr.run_cuda(tr.overlap_program(64 << 20, 4, two_streams=True), reps=2).timeline
    assert one.overlap_ms("h2d", "kernel") == 0.0
    assert two.overlap_ms("h2d", "kernel") > 0.0


def test_without_cuda_the_executor_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="simulate"):
        tr.run_cuda(tr.copy_program("h2d", 1024, True))
