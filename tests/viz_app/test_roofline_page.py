"""The roofline page draws committed benchmark results beside minirt.tools.roofline's model.

`fixture_gpu_results.json` (beside this file) is a TEST FIXTURE in the schema of `python -m
minirt.bench gpu`, with made-up numbers: it stands in for a gpu set whatever is committed.
"""

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from minirt.config import PRESETS
from minirt.results import load_results
from minirt.tools.roofline import H100_SXM, Hardware, crossover_batch, decode_step
from vizlib import roofline_page as rp

PAGE = "pages/04_Roofline_and_batching.py"
FIXTURE = Path(__file__).with_name("fixture_gpu_results.json")
SETS = rp.discover()
GPU_SYSTEMS = {"minirt-graphs", "minirt-eager", "hf-eager", "hf-compile"}


def committed(topic: str) -> rp.ResultSet:
    found = [s for s in SETS if s.topic == topic]
    if not found:
        pytest.skip(f"no bench/results/*/{topic}-*.json is committed")
    return found[0]


def chart_frames(at, i: int) -> list[pd.DataFrame]:
    """The data of the page's i-th chart, one frame per dataset (as the browser gets them)."""
    chart = at.get("vega_lite_chart")[i]
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


def measured_data(at, i: int = 0) -> pd.DataFrame:
    (frame,) = [f for f in chart_frames(at, i) if "system" in f and "bound" not in f]
    return frame


def model_data(at, i: int = 0) -> pd.DataFrame:
    (frame,) = [f for f in chart_frames(at, i) if "bound" in f]
    return frame


def open_set(open_page, result_set: rp.ResultSet):
    at = open_page(PAGE)
    at.selectbox(key="rf_set").set_value(str(result_set.path)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(open_page, name: str, data: bytes):
    at = open_page(PAGE)
    at.radio(key="rf_source").set_value("Upload a result file").run()
    at.file_uploader(key="rf_upload").set_value((name, data, "application/json")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --- finding the sets ---------------------------------------------------------------------


def test_discover_lists_roofline_gpu_and_engine_sets_newest_first(tmp_path):
    for name in [
        "h100/roofline-20250101-120000.json",
        "h100/gpu-20250301-080000.json",
        "h100/gpu-20250301-080000-1.json",
        "cpu/engine-20250201-000000.json",
        "h100/transfers-20250401-000000.json",  # another topic
        "h100/gpu-latest.json",  # not a benchmark's file name
        "notes.json",  # not in a device folder
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    found = rp.discover(tmp_path)
    assert [s.label for s in found] == [
        "h100 / gpu / 2025-03-01 08:00:00 (#2)",
        "h100 / gpu / 2025-03-01 08:00:00",
        "cpu / engine / 2025-02-01 00:00:00",
        "h100 / roofline / 2025-01-01 12:00:00",
    ]
    assert rp.discover(tmp_path / "missing") == []


def test_discover_finds_every_committed_set_and_the_page_offers_them(open_page):
    root = Path(__file__).resolve().parents[2] / "bench" / "results"
    files = {
        p for topic in rp.TOPICS for p in root.glob(f"*/{topic}-*.json") if rp._FILE.match(p.name)
    }
    assert {s.path.resolve() for s in SETS} == {p.resolve() for p in files}
    assert SETS, "no committed roofline/engine results"
    at = open_page(PAGE)
    assert at.selectbox(key="rf_set").options == [s.label for s in SETS]


# --- the normaliser -----------------------------------------------------------------------


def test_normalise_a_committed_roofline_set_keeps_its_eager_decode_rows():
    s = committed("roofline")
    rows = [r for r in load_results(s.path)["results"] if r["name"] == "eager_decode"]
    frame = rp.normalise(rp.load_set(s.path))
    assert list(frame.columns) == rp.COLUMNS
    assert set(frame["system"]) == {"minirt-eager"}
    by_batch = {r["batch"]: r for r in rows}
    assert sorted(frame["batch"]) == sorted(by_batch)
    for _, p in frame.iterrows():
        assert p["step_ms"] == by_batch[p["batch"]]["step_ms"]
        assert p["tokens_per_s"] == by_batch[p["batch"]]["tokens_per_s"]


def test_normalise_a_committed_cpu_engine_set_divides_elapsed_time_by_steps():
    s = committed("engine")
    rows = [r for r in load_results(s.path)["results"] if r["name"] == "decode"]
    frame = rp.normalise(rp.load_set(s.path))
    assert frame["batch"].tolist() == sorted(r["batch_size"] for r in rows)
    for r in rows:
        p = frame[frame["batch"] == r["batch_size"]].iloc[0]
        assert p["step_ms"] == pytest.approx(1e3 * r["elapsed_s"] / r["num_steps"])
        # every sequence gets one token a step: tokens/s = batch / step
        assert p["tokens_per_s"] == pytest.approx(1e3 * r["batch_size"] / p["step_ms"], rel=1e-3)


def test_normalise_a_gpu_set_gives_each_system_and_skips_failed_runs():
    record = rp.load_set(FIXTURE)
    frame = rp.normalise(record)
    decode = [r for r in record["results"] if r["name"] == "decode"]
    ok = [r for r in decode if "error" not in r]
    assert len(frame) == len(ok) < len(decode)
    assert set(frame["system"]) == GPU_SYSTEMS
    assert rp.failed_rows(record) == [
        f"hf-compile at batch 256: {r['error']}" for r in decode if "error" in r
    ]
    got = {(p.system, p.batch): (p.step_ms, p.tokens_per_s) for p in frame.itertuples()}
    assert got == {(r["system"], r["batch"]): (r["step_ms"], r["tokens_per_s"]) for r in ok}


def test_normalise_tolerates_missing_rows_and_fields():
    envelope = {"schema": 1, "topic": "gpu", "device": "h100", "config": {}}
    only_ceiling = {**envelope, "results": [{"name": "hbm_copy", "gb_per_s": 2000.0}]}
    assert rp.normalise(only_ceiling).empty
    hw = rp.measured_hardware(only_ceiling)
    assert hw.mem_bandwidth == 2000e9 and hw.peak_flops == H100_SXM.peak_flops
    assert rp.measured_hardware({**envelope, "results": []}) is None
    # a row with tokens/s but no step time (or the reverse) gets the other from batch / step
    rows = [
        {"name": "decode", "system": "a", "batch": 4, "tokens_per_s": 400.0},
        {"name": "decode", "system": "b", "batch": 2, "step_ms": 5.0},
    ]
    frame = rp.normalise({**envelope, "results": rows})
    assert frame.to_dict("records") == [
        {"system": "a", "batch": 4, "step_ms": 10.0, "tokens_per_s": 400.0},
        {"system": "b", "batch": 2, "step_ms": 5.0, "tokens_per_s": 400.0},
    ]
    assert rp.context_len({**envelope, "results": rows}) is None
    assert rp.model_name({**envelope, "results": rows}) is None


def test_model_shape_and_context_come_from_the_set():
    record = rp.load_set(FIXTURE)
    assert rp.model_name(record) == "qwen3-0.6b"
    assert rp.context_len(record) == 128 + 256 // 2
    engine = {"topic": "engine", "config": {"model": None}, "results": []}
    assert rp.model_name(engine) == rp.EMBEDDED


# --- the page -------------------------------------------------------------------------------


@pytest.mark.parametrize("result_set", SETS, ids=[s.label for s in SETS])
def test_the_page_draws_every_committed_set(open_page, result_set):
    at = open_set(open_page, result_set)
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("vega_lite_chart")) == 2
    expected = rp.normalise(rp.load_set(result_set.path))
    shown = measured_data(at)
    assert sorted(zip(shown["system"], shown["batch"], strict=True)) == sorted(
        zip(expected["system"], expected["batch"], strict=True)
    )
    # the latency-throughput chart: the same points, tokens/s = batch / step
    lt = measured_data(at, 1)
    assert lt["tokens_per_s"].tolist() == pytest.approx(shown["tokens_per_s"].tolist())


def test_switching_the_result_set_changes_the_chart_data(open_page):
    if len(SETS) < 2:
        pytest.skip("fewer than two result sets are committed")
    at = open_set(open_page, SETS[0])
    first = measured_data(at)
    at.selectbox(key="rf_set").set_value(str(SETS[1].path)).run()
    assert not at.exception
    second = measured_data(at)
    expected = rp.normalise(rp.load_set(SETS[1].path))
    assert not first.equals(second)
    assert second["step_ms"].tolist() == pytest.approx(expected["step_ms"].tolist())


def test_the_gpu_fixture_draws_one_curve_per_system(open_page):
    at = upload(open_page, "gpu-fixture.json", FIXTURE.read_bytes())
    assert not at.error
    assert any("hf-compile at batch 256" in c.value for c in at.caption)  # a line, not a warning
    for i in (0, 1):  # both charts: one coloured line per system, plus the model's
        frame = measured_data(at, i)
        assert set(frame["system"]) == GPU_SYSTEMS
        spec = json.loads(at.get("vega_lite_chart")[i].proto.spec)
        colors = [layer["encoding"]["color"]["field"] for layer in spec["layer"][:2]]
        assert colors == ["system", "system"]
    assert set(model_data(at)["system"]) == {rp.MODEL}
    # the systems selector narrows the curves
    at.multiselect(key="rf_systems_gpu-fixture.json").set_value(["minirt-graphs", "hf-eager"]).run()
    assert set(measured_data(at)["system"]) == {"minirt-graphs", "hf-eager"}
    # the set's offline-throughput rows, in their own table
    (offline,) = [d.value for d in at.dataframe if "output_tokens_per_s" in d.value]
    fixture = [r for r in json.loads(FIXTURE.read_text())["results"] if r["name"] == "offline"]
    assert offline["system"].tolist() == [r["system"] for r in fixture]


def measured_hw(record: dict) -> Hardware:
    by = {r["name"]: r for r in record["results"]}
    return Hardware("m", by["hbm_copy"]["gb_per_s"] * 1e9, by["bf16_matmul"]["tflop_per_s"] * 1e12)


def shown_crossover(expected: int | None) -> str:
    return "none" if expected is None else str(expected)


def crossover_rule(at) -> list[int]:
    rules = [f for f in chart_frames(at, 0) if "label" in f and "compute-bound" in f["label"][0]]
    return [int(b) for f in rules for b in f["batch"]]


@pytest.mark.parametrize("source", ["fixture", "committed roofline"])
def test_the_crossover_and_the_model_are_minirt_tools_roofline(open_page, metric, source):
    if source == "fixture":
        record = json.loads(FIXTURE.read_text())
        at = upload(open_page, "gpu-fixture.json", FIXTURE.read_bytes())
    else:
        s = committed("roofline")
        record, at = load_results(s.path), open_set(open_page, s)
    config, context = PRESETS["qwen3-0.6b"], rp.context_len(record)
    hw = measured_hw(record)
    assert metric(at, "Bandwidth (GB/s)") == f"{hw.mem_bandwidth / 1e9:,.0f}"
    assert metric(at, "Context (tokens)") == str(context)
    # At the run's context (hundreds of tokens) Qwen3-0.6B's KV traffic keeps every batch
    # memory-bound: the page says "never", as crossover_batch does.
    expected = crossover_batch(config, context, hw)
    assert metric(at, "Crossover batch") == shown_crossover(expected)
    assert crossover_rule(at) == ([] if expected is None else [expected])
    # A short context has a crossover; the page's is minirt.tools.roofline's, and so is the line
    short = 16
    knob = next(n for n in at.number_input if n.label == "Context for the model (tokens)")
    knob.set_value(short).run()
    expected = crossover_batch(config, short, hw)
    assert expected is not None
    assert metric(at, "Crossover batch") == str(expected)
    assert crossover_rule(at) == [expected]
    model = model_data(at).set_index("batch")
    for b in (1, 8, expected):
        assert model.loc[b, "step_ms"] == pytest.approx(
            1e3 * decode_step(config, b, short, hw).time_s
        )
    assert set(model.loc[model.index < expected, "bound"]) == {"memory"}
    assert set(model.loc[model.index >= expected, "bound"]) == {"compute"}
    # the datasheet's ceilings move the crossover where minirt.tools.roofline says
    at.radio(key="rf_ceilings").set_value("H100 SXM datasheet").run()
    assert metric(at, "Crossover batch") == shown_crossover(
        crossover_batch(config, short, H100_SXM)
    )


def test_the_longest_context_with_a_crossover_is_where_crossover_batch_stops():
    config, hw = PRESETS["qwen3-0.6b"], H100_SXM
    longest = rp.longest_context_with_crossover(config, hw)
    assert crossover_batch(config, longest, hw) is not None
    assert crossover_batch(config, longest + 1, hw) is None
    one = decode_step(config, 1, 160)
    b = rp.kv_outweighs_weights_batch(config, 160)
    assert (b - 1) * one.kv_bytes < one.weight_bytes <= b * one.kv_bytes


def test_a_set_without_ceilings_falls_back_to_the_datasheet_and_says_so(open_page, metric):
    s = committed("engine")
    at = open_set(open_page, s)
    assert any("H100 datasheet" in i.value for i in at.info)
    assert metric(at, "Bandwidth (GB/s)") == f"{H100_SXM.mem_bandwidth / 1e9:,.0f}"
    at.radio(key="rf_ceilings").set_value("custom").run()
    at.number_input(key="rf_bw").set_value(50.0)
    at.number_input(key="rf_peak").set_value(1.0).run()
    assert metric(at, "Bandwidth (GB/s)") == "50"
    assert metric(at, "Ridge point (FLOP/byte)") == "20"


def gpu_bytes(**changes) -> bytes:
    record = json.loads(FIXTURE.read_text())
    return json.dumps({**record, **changes}).encode()


BAD_FILES = {
    "not JSON": (b'{"schema": 1, "topic": ', "not valid JSON"),
    "not UTF-8": (b"\xff\xfe\x00garbage", "not a text"),
    "another schema": (gpu_bytes(schema=99), "schema 99, not schema 1"),
    "no schema": (b'{"topic": "gpu", "results": []}', 'has no "schema" field'),
    "another topic": (gpu_bytes(topic="transfers"), "'transfers' result"),
    "results not a list": (gpu_bytes(results={"decode": 1}), "list of rows"),
    "a decode row without a step time": (
        gpu_bytes(results=[{"name": "decode", "system": "x", "batch": 8}]),
        "has no step time",
    ),
    "a decode row without a batch": (
        gpu_bytes(results=[{"name": "decode", "system": "x", "step_ms": 3.0}]),
        "no positive integer batch",
    ),
}


@pytest.mark.parametrize("what", BAD_FILES)
def test_a_malformed_file_shows_what_is_wrong_and_what_to_do(open_page, what):
    data, words = BAD_FILES[what]
    with pytest.raises(rp.ResultError, match=words):
        rp.normalise(rp.load_upload(data, "bad.json"))
    at = upload(open_page, "bad.json", data)
    shown = [e.value for e in at.error]
    assert len(shown) == 1, shown
    assert words in shown[0] and "bad.json" in shown[0]
    assert shown[0].count("re-run") == 1 and "python -m minirt.bench" in shown[0]
    assert "None" not in shown[0]
    assert not at.get("vega_lite_chart")


def test_a_set_with_no_decode_rows_says_so(open_page):
    at = upload(
        open_page, "ceilings.json", gpu_bytes(results=[{"name": "hbm_copy", "gb_per_s": 1}])
    )
    assert not at.error
    assert any("no decode rows" in w.value for w in at.warning)
