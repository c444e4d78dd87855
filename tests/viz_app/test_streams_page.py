"""The Streams page: committed H100 timelines beside minirt.tools.streams, the live simulator, and
uploaded traces; and the data shaping in vizlib/streams_page.py.

The page tests read the committed `bench/results/*/transfers-*.json` runs (skipped cleanly when
none is committed); the unit tests build their own programs and timelines.
"""

import io
import json
from dataclasses import replace

import pandas as pd
import pyarrow as pa
import pytest

from minirt.results import load_results
from minirt.tools.streams import CPU, Hardware, Interval, Program, Timeline, simulate
from minirt.trace import TraceError, load_trace
from minirt.transfer import overlap_program, stream_order_program
from vizlib import streams_page as sp

PAGE = "pages/05_Streams.py"
SETS = sp.discover()
HW = Hardware()  # the simulator's built-in H100 numbers: the unit tests don't depend on results


def committed() -> sp.TransferSet:
    if not SETS:
        pytest.skip("no bench/results/*/transfers-*.json with its trace is committed")
    return SETS[0]


def chart_frames(at, i: int) -> list[pd.DataFrame]:
    """The data of the page's i-th chart, one frame per dataset (as the browser gets them)."""
    chart = at.get("vega_lite_chart")[i]
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


def bars(at, i: int) -> set[tuple[str, str, str]]:
    """(lane, name, kind) of every bar in the page's i-th chart."""
    (frame,) = chart_frames(at, i)
    return set(zip(frame["lane"], frame["name"], frame["kind"], strict=True))


def of(timeline: Timeline) -> set[tuple[str, str, str]]:
    return {(iv.lane, iv.name, iv.kind) for iv in timeline.intervals}


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def race_warnings(at) -> list[str]:
    return [w.value for w in at.warning if "Data races" in w.value]


def live(open_page):
    at = open_page(PAGE)
    at.radio(key="streams_source").set_value("Live simulator").run()
    return ok(at)


def upload(open_page, name: str, data: bytes):
    at = open_page(PAGE)
    at.radio(key="streams_source").set_value("Upload a trace").run()
    at.file_uploader(key="streams_upload").set_value((name, data, "application/json")).run()
    return ok(at)


# --- the page: H100 measured ----------------------------------------------------------------


def test_default_view_draws_the_measured_timeline_beside_the_simulated_one(open_page, metric):
    s = committed()
    loaded = sp.load_set(s)
    (chosen,) = [p for p in loaded.programs if p.program.name == sp.DEFAULT_PROGRAM]
    at = ok(open_page(PAGE))
    assert at.selectbox(key="streams_set").options == [x.label for x in SETS]
    assert not at.error
    assert [h.value for h in at.subheader][:2] == [
        "Measured on the H100",
        "Simulated (minirt.tools.streams, fitted to this run)",
    ]
    predicted = simulate(chosen.program, loaded.measurements.hardware)
    assert bars(at, 0) == of(chosen.measured)
    assert bars(at, 1) == of(predicted)
    assert {"copy", "compute", CPU} <= {lane for lane, _, _ in bars(at, 0)}
    assert metric(at, "Total (ms)") == f"{chosen.measured.total_ms:,.3f}"
    err = predicted.total_ms / chosen.measured.total_ms - 1
    assert metric(at, "Simulator error (total)") == f"{err:+.1%}"


def test_a_racy_committed_program_shows_the_race_and_the_stale_read(open_page):
    s = committed()
    loaded = sp.load_set(s)
    if "stream_order" not in loaded.experiments():
        pytest.skip("this run has no stream_order experiment")
    at = ok(open_page(PAGE))
    at.selectbox(key=f"streams_experiment_{s.path}").set_value("stream_order").run()
    programs = loaded.of("stream_order")
    racy = [p.label for p in programs].index("stream order: two streams")
    at.selectbox(key=f"streams_program_{s.path}_stream_order").set_value(racy).run()
    ok(at)
    (warning,) = race_warnings(at)
    assert "'attention' reads 'kv' unordered after 'load kv'" in warning
    stale = programs[racy].row["stale"]
    assert all(any(x in w.value for w in at.warning) for x in stale)
    safe = [p.label for p in programs].index("stream order: two streams + event")
    at.selectbox(key=f"streams_program_{s.path}_stream_order").set_value(safe).run()
    assert not race_warnings(ok(at))


def test_every_committed_program_draws_without_an_error(open_page):
    s = committed()
    loaded = sp.load_set(s)
    at = ok(open_page(PAGE))
    for experiment in loaded.experiments():
        at.selectbox(key=f"streams_experiment_{s.path}").set_value(experiment).run()
        for i in range(len(loaded.of(experiment))):
            at.selectbox(key=f"streams_program_{s.path}_{experiment}").set_value(i).run()
            assert not ok(at).error
            assert len(at.get("vega_lite_chart")) == 2


# --- the page: live simulator ---------------------------------------------------------------


def test_live_simulator_pageable_memory_holds_the_cpu(open_page, metric):
    at = live(open_page)
    pinned = float(metric(at, "CPU blocked (ms)").replace(",", ""))
    at.toggle(key="streams_pinned").set_value(False).run()
    pageable = float(metric(ok(at), "CPU blocked (ms)").replace(",", ""))
    assert pageable != pinned and pageable > pinned
    assert metric(at, "Overlap") == "0%"  # the copy call holds the thread: compute starts after
    # the page shows what the simulator says for the same settings
    hw = sp.load_set(SETS[0]).measurements.hardware if SETS else Hardware()
    hw = replace(hw, h2d_gbps=at.slider(key="streams_pcie_h2d").value,  # the sliders' values
                 staging_h2d_gbps=at.slider(key="streams_staging_h2d").value)  # fmt: skip
    matmuls = at.slider(key="streams_matmuls").value
    expected = simulate(sp.live_program("h2d", 256 * sp.MiB, matmuls, pinned=False), hw)
    assert metric(at, "CPU blocked (ms)") == f"{expected.cpu_blocked_ms():,.3f}"


def test_live_two_streams_without_the_event_warn_of_the_race(open_page):
    at = live(open_page)
    assert at.toggle(key="streams_two").value and at.toggle(key="streams_event").value
    assert not race_warnings(at)
    at.toggle(key="streams_event").set_value(False).run()
    (warning,) = race_warnings(ok(at))
    assert "'use next' reads 'next' unordered after 'load next'" in warning
    at.radio(key="streams_direction").set_value("d2h").run()
    (warning,) = race_warnings(ok(at))
    assert "'offload' reads 'result' unordered after 'produce'" in warning
    at.toggle(key="streams_event").set_value(True).run()
    assert not race_warnings(ok(at))
    at.toggle(key="streams_event").set_value(False).run()
    at.toggle(key="streams_two").set_value(False).run()  # one stream: ordered, event or not
    assert not race_warnings(ok(at)) and at.toggle(key="streams_event").disabled


def test_live_sliders_start_at_the_fitted_hardware_and_move_the_copy(open_page, metric):
    at = live(open_page)
    hw = sp.load_set(SETS[0]).measurements.hardware if SETS else Hardware()
    assert at.slider(key="streams_pcie_h2d").value == round(hw.h2d_gbps, 1)
    assert at.slider(key="streams_staging_h2d").value == round(hw.staging_h2d_gbps, 1)
    before = float(metric(at, "Copy bandwidth (GB/s)"))
    at.slider(key="streams_pcie_h2d").set_value(16.0).run()
    after = float(metric(ok(at), "Copy bandwidth (GB/s)"))
    assert after <= 16.0 < before  # 16 GB/s is the ceiling now


# --- the page: uploads ----------------------------------------------------------------------

BAD_FILES = {
    "not JSON": b'{"format": "minirt-trace", "version": ',
    "another format": json.dumps({"format": "chrome", "version": 1}).encode(),
    "a malformed interval": json.dumps(
        {
            "format": "minirt-trace",
            "version": 1,
            "meta": {},
            "events": [
                {
                    "type": "interval",
                    "lane": "compute",
                    "name": "x",
                    "kind": "teleport",
                    "start_ms": 0.0,
                    "end_ms": 1.0,
                }
            ],
        }
    ).encode(),  # fmt: skip
}


@pytest.mark.parametrize("what", BAD_FILES)
def test_a_malformed_trace_shows_trace_errors_message_not_an_exception(open_page, what):
    data = BAD_FILES[what]
    with pytest.raises(TraceError) as raised:
        load_trace(io.BytesIO(data))
    at = upload(open_page, "bad.json", data)
    (shown,) = [e.value for e in at.error]
    assert "bad.json" in shown
    assert str(raised.value).replace("<file>", "bad.json") in shown


def test_a_trace_without_intervals_says_so(open_page):
    doc = {"format": "minirt-trace", "version": 1, "meta": {}, "events": []}
    at = upload(open_page, "engine.json", json.dumps(doc).encode())
    assert not at.error
    assert any("no 'interval' events" in w.value for w in at.warning)


def test_the_live_simulators_download_uploads_back_to_the_same_timeline(open_page, metric):
    program = sp.live_program("d2h", 64 * sp.MiB, 4, pinned=False)
    timeline = simulate(program, HW)
    data = json.dumps(sp.trace_document(timeline, {"simulated": program.name})).encode()
    at = upload(open_page, "sim.json", data)
    assert not at.error
    assert bars(at, 0) == of(timeline)
    assert metric(at, "CPU blocked (ms)") == f"{timeline.cpu_blocked_ms():,.3f}"


def test_a_committed_trace_uploads_with_one_run_per_program(open_page):
    s = committed()
    at = upload(open_page, s.trace_path.name, s.trace_path.read_bytes())
    rows = [r for r in load_results(s.path)["results"] if "program" in r]
    assert len(at.selectbox(key="streams_run").options) == len(rows)


# --- vizlib.streams_page --------------------------------------------------------------------


def interval_event(run, name, start, end, lane="compute", kind="kernel", nbytes=0):
    return {"type": "interval", "lane": lane, "name": name, "kind": kind,
            "start_ms": start, "end_ms": end, "nbytes": nbytes, "run": run}  # fmt: skip


def test_runs_from_events_keeps_two_runs_of_one_name_apart():
    events = [
        interval_event("a", "k", 0.0, 1.0),
        interval_event("b", "k", 0.0, 2.0),
        {"type": "step"},  # other events are ignored
        interval_event("a", "k", 0.0, 3.0),
        interval_event("a", "k2", 3.0, 4.0),
    ]
    runs = sp.runs_from_events(events)
    assert [r.label for r in runs] == ["a", "b", "a (#2)"]
    assert [r.timeline.total_ms for r in runs] == [1.0, 2.0, 4.0]
    assert [len(r.timeline.intervals) for r in runs] == [1, 1, 2]
    assert sp.runs_from_events([{"type": "step"}]) == []


def test_discover_pairs_results_with_their_traces_newest_first(tmp_path):
    for name in [
        "h100/transfers-20260101-000000.json",
        "h100/transfers-trace-20260101-000000.json",
        "h100/transfers-20260201-000000.json",
        "h100/transfers-trace-20260201-000000.json",
        "h100/transfers-20260301-000000.json",  # no trace beside it
        "h100/gpu-20260401-000000.json",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    found = sp.discover(tmp_path)
    assert [s.label for s in found] == ["h100 / 2026-02-01 00:00:00", "h100 / 2026-01-01 00:00:00"]
    assert found[0].trace_path.name == "transfers-trace-20260201-000000.json"
    assert sp.discover(tmp_path / "missing") == []


def test_load_set_matches_every_program_row_to_its_own_timeline():
    s = committed()
    loaded = sp.load_set(s)
    rows = [r for r in load_results(s.path)["results"] if "program" in r]
    assert [p.program.name for p in loaded.programs] == [r["program"]["name"] for r in rows]
    for p in loaded.programs:
        gpu_ops = {
            (op.stream, op.name) for op in p.program.ops if op.kind in sp.KINDS and op.stream
        }
        gpu_bars = [(iv.lane, iv.name) for iv in p.measured.intervals if iv.lane != CPU]
        assert sorted(gpu_bars) == sorted(gpu_ops), p.label  # each GPU op once: no other run's
        assert p.measured.total_ms == pytest.approx(p.row["total_ms"], abs=1e-5), p.label
    assert loaded.experiments()[0] == "overlap"


def test_load_set_refuses_a_result_that_is_not_a_transfers_run(tmp_path):
    s = committed()
    record = load_results(s.path)
    (tmp_path / "h100").mkdir()
    bad = tmp_path / "h100" / "transfers-20260101-000000.json"
    bad.write_text(json.dumps({**record, "topic": "gpu"}))
    trace = tmp_path / "h100" / "transfers-trace-20260101-000000.json"
    trace.write_text("not json")
    with pytest.raises(sp.StreamsError, match="trace"):
        sp.load_set(sp.discover(tmp_path)[0])
    trace.write_bytes(s.trace_path.read_bytes())
    with pytest.raises(sp.StreamsError, match="not a transfers run"):
        sp.load_set(sp.discover(tmp_path)[0])


def test_summarize_adds_up_copies_kernels_overlap_and_cpu():
    t = Timeline(
        "t",
        [
            Interval("copy", "load", "h2d", 0.0, 4.0, 400_000_000),
            Interval("compute", "mm", "kernel", 1.0, 3.0),
            Interval(CPU, "load", "blocked", 0.0, 0.5),
            Interval(CPU, "work", "host", 0.5, 1.0),
            Interval(CPU, "sync device", "blocked", 1.0, 4.0),
        ],
        4.0,
    )
    s = sp.summarize(t)
    assert (s.copy_ms, s.compute_ms, s.overlap_ms) == (4.0, 2.0, 2.0)
    assert s.copy_gbps == pytest.approx(100.0)  # 4e8 bytes in 4 ms
    assert s.overlap_fraction == 1.0  # the kernel was hidden entirely
    assert (s.cpu_blocked_ms, s.cpu_held_by_calls_ms) == (3.5, 0.5)
    assert sp.metric_values(s) == {
        "Total (ms)": "4.000",
        "Copy bandwidth (GB/s)": "100.0",
        "Overlap": "100%",
        "CPU blocked (ms)": "3.500",
    }
    empty = sp.summarize(Timeline("e", [], 0.0))
    assert empty.copy_gbps is None and empty.overlap_fraction is None
    assert sp.metric_values(empty)["Overlap"] == "—"


def test_summary_of_the_overlap_experiment_agrees_with_the_timeline():
    one, two = (simulate(overlap_program(256 * sp.MiB, 20, two), HW) for two in (False, True))
    s1, s2 = sp.summarize(one), sp.summarize(two)
    assert s1.overlap_ms == 0 and s1.overlap_fraction == 0
    assert s2.overlap_ms == pytest.approx(two.overlap_ms()) and s2.overlap_fraction > 0.9
    assert s2.total_ms < s1.total_ms
    assert s1.copy_gbps == pytest.approx(256 * sp.MiB / (one.of("load next").ms * 1e6))


@pytest.mark.parametrize("direction", ["h2d", "d2h"])
def test_live_program_races_only_on_two_streams_without_the_event(direction):
    def races(**kw):
        return simulate(sp.live_program(direction, 256 * sp.MiB, 8, **kw), HW).races

    assert not races(two_streams=False, wait_event=False)
    assert not races(two_streams=True, wait_event=True)
    (race,) = races(two_streams=True, wait_event=False)
    assert race.stale  # the read ran before the write finished, not only unordered
    with pytest.raises(ValueError, match="direction"):
        sp.live_program("d2d")


def test_live_program_pageable_memory_holds_the_cpu_and_kills_the_overlap():
    pinned = simulate(sp.live_program("h2d", 256 * sp.MiB, 20, pinned=True), HW)
    pageable = simulate(sp.live_program("h2d", 256 * sp.MiB, 20, pinned=False), HW)
    assert sp.summarize(pinned).cpu_held_by_calls_ms < 0.1
    assert sp.summarize(pageable).cpu_held_by_calls_ms == pytest.approx(
        pageable.of("load next").ms, rel=0.01
    )
    assert sp.summarize(pinned).overlap_fraction > 0.9
    assert sp.summarize(pageable).overlap_fraction == 0
    no_compute = sp.live_program("h2d", sp.MiB, 0)
    assert "compute" not in [op.name for op in no_compute.ops]


def test_timeline_frame_and_gantt_chart():
    t = simulate(stream_order_program("two streams + event"), HW)
    frame = sp.timeline_frame(t)
    assert list(frame.columns) == sp.FRAME_COLUMNS and len(frame) == len(t.intervals)
    copy = frame[frame["kind"] == "h2d"].iloc[0]
    assert copy["size"] == "256 MiB" and copy["label"] == "load kv"  # wide enough for its name
    assert sp.lane_order(t) == ["compute", "copy", CPU]
    spec = sp.gantt_chart(t).to_dict()
    bar, text = spec["layer"]
    enc = bar["encoding"]
    assert (enc["x"]["field"], enc["x2"]["field"], enc["y"]["field"]) == (
        "start_ms",
        "end_ms",
        "lane",
    )
    assert enc["y"]["sort"] == ["compute", "copy", CPU]
    assert enc["color"]["scale"]["domain"] == list(sp.KINDS)
    assert {t["field"] for t in enc["tooltip"]} >= {"name", "ms", "size"}
    assert text["encoding"]["text"]["field"] == "label"
    wide = sp.gantt_chart(t, ["compute", "copy", "other", CPU], x_max=100.0).to_dict()
    assert wide["layer"][0]["encoding"]["x"]["scale"]["domain"] == [0, 100.0]


def test_lane_order_puts_the_default_stream_first_and_the_cpu_last():
    a = Timeline("a", [Interval(CPU, "h", "host", 0, 1), Interval("copy", "c", "h2d", 0, 1)], 1)
    b = Timeline("b", [Interval("compute", "k", "kernel", 0, 1)], 1)
    assert sp.lane_order(a, b) == ["compute", "copy", CPU]


def test_trace_document_loads_back_as_the_same_timeline():
    t = simulate(sp.live_program("h2d", 16 * sp.MiB, 2, wait_event=False), HW)
    trace = load_trace(sp.trace_document(t, {"simulated": t.program}))
    (run,) = sp.runs_from_events(trace.events)
    assert run.name == t.program and of(run.timeline) == of(t)
    assert run.timeline.total_ms == pytest.approx(t.total_ms, abs=1e-6)


def test_comparison_and_op_fit_tables():
    program = overlap_program(64 * sp.MiB, 4, True)
    measured, predicted = simulate(program, HW), simulate(program, Hardware(h2d_gbps=27.1))
    table = sp.comparison_frame(sp.summarize(measured), sp.summarize(predicted))
    total = table[table["quantity"] == "total (ms)"].iloc[0]
    assert total["error"] == f"{sp.total_error(measured, predicted):+.1%}"
    fit = sp.op_fit(measured, predicted)
    assert set(fit["name"]) == {"load next", "compute"}
    load = fit[fit["name"] == "load next"].iloc[0]
    assert load["error"] > 0.5  # half the PCIe bandwidth: the copy takes about twice as long
    other = Program("other").kernel("different", ms=1.0).synchronize()
    assert sp.op_fit(measured, simulate(other, HW)).empty
    assert sp.total_error(Timeline("e", [], 0.0), predicted) is None


def test_an_error_against_zero_is_a_difference_not_minus_100_percent():
    assert sp.relative_error(2.0, 2.5) == "+25.0%"
    assert sp.relative_error(0.1083, 0.0) == "-0.108 (difference)"
    assert sp.relative_error(0.0, 0.0) == "+0.000 (difference)"
    assert sp.relative_error(None, 1.0) == "—"


def test_program_table_lists_the_calls_in_order():
    table = sp.program_table(stream_order_program("two streams + event"))
    assert table["call"].tolist() == ["h2d", "record", "wait", "kernel", "sync"]
    assert table["stream"].tolist() == ["copy", "copy", "compute", "compute", "(cpu)"]
