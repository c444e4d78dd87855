"""The "Your run vs minirt" page: the demo shows the engine's own numbers and a difference, an
identical pair shows none, a saved pair is found, and a bad file gets one clear error."""

import io
import json

import pyarrow as pa
import pytest

from minirt import LLM
from minirt.trace import TraceError, load_trace
from minirt.trace.compare import record_pair
from vizlib import compare_page as cp
from vizlib.runs import torch_threads

PAGE = "pages/12_Your_run_vs_minirt.py"


@pytest.fixture(scope="module")
def demo_stats() -> dict:
    """The demo's two runs made here with LLM directly: the engine's stats and both traces."""
    out = {}
    with torch_threads(1):
        for side, policy in (("yours", cp.least_cached_first), ("minirt", "lpm")):
            llm = LLM(**{**cp.DEMO.engine_kwargs(), "schedule_policy": policy})
            llm.generate(list(cp.DEMO.prompts), cp.DEMO.sampling_params(), use_tqdm=False)
            out[side] = llm.last_stats
            out[f"{side} trace"] = json.dumps(llm.recorder.to_dict())
    return out


def text_shown(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [m.value for m in at.metric] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def upload(open_page, yours: tuple[str, bytes], minirt: tuple[str, bytes]):
    at = open_page(PAGE)
    at.radio(key="cmp_source").set_value("Upload two traces").run()
    for key, (name, data) in (("yours", yours), ("minirt", minirt)):
        at.file_uploader(key=f"cmp_upload_{key}").set_value((name, data, "application/json"))
    return at.run()


def test_the_demo_opens_clean_with_the_engines_hit_rates_and_a_first_difference(
    open_page, metric, demo_stats
):
    at = open_page(PAGE)
    assert not at.exception and not at.error and not at.warning
    for side in ("yours", "minirt"):
        stats = demo_stats[side]
        assert metric(at, f"Hit rate ({side})") == f"{stats.prefix_cache_hit_rate:.0%}"
        assert metric(at, f"Steps ({side})") == str(stats.num_steps)
        assert metric(at, f"Preemptions ({side})") == str(stats.num_preemptions)
    assert demo_stats["yours"].prefix_cache_hit_rate < demo_stats["minirt"].prefix_cache_hit_rate
    shown = text_shown(at)
    assert "First difference" in shown and "admitted sequences" in shown
    assert "None" not in shown and "nan" not in shown
    table = at.dataframe[0].value
    assert not table.isna().any().any()
    assert "differs" in table and (table["differs"] != cp.SAME).any()
    # the step slider opens at the first difference, where both pools are drawn
    step = next(s for s in at.slider if s.label == "Scheduler step")
    assert step.value == int(table.index[table["differs"] != cp.SAME][0])
    charts = at.get("vega_lite_chart")
    assert len(charts) == 4  # each side: its pool, then its block tables
    for chart, side in ((charts[0], "yours"), (charts[2], "minirt")):
        (frame,) = [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]
        tables = load_trace(json.loads(demo_stats[f"{side} trace"])).steps()[step.value]
        held = {b for t in tables["block_tables"].values() for b in t}
        assert set(frame.loc[frame["owner"] != "free", "block"]) == held


def test_an_identical_pair_says_there_is_no_difference(open_page, demo_stats):
    data = demo_stats["minirt trace"].encode()
    at = upload(open_page, ("a.json", data), ("b.json", data))
    assert not at.exception and not at.error
    assert any("No difference" in s.value for s in at.success)
    assert "First difference" not in text_shown(at)


def test_a_malformed_upload_gets_one_error_with_trace_errors_words(open_page, demo_stats):
    bad = b'{"format": "minirt-trace", "version": '
    f = io.BytesIO(bad)
    f.name = "bad.json"
    with pytest.raises(TraceError) as raised:
        load_trace(f)
    at = upload(open_page, ("bad.json", bad), ("good.json", demo_stats["minirt trace"].encode()))
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("Can't read bad.json:") and str(raised.value) in message


def test_a_saved_pair_is_found_and_drawn(open_page, tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    with torch_threads(1):
        record_pair(
            list(cp.DEMO.prompts[:3]),
            cp.DEMO.sampling_params(),
            {"schedule_policy": "fcfs"},
            name="mine",
            folder=folder,
            **cp.DEMO.engine_kwargs(),
        )
    monkeypatch.setattr(cp, "RUN_FOLDERS", (folder,))
    assert list(cp.saved_pairs()) == [f"{folder}/mine"]
    at = open_page(PAGE)
    at.radio(key="cmp_source").set_value("Saved runs").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="cmp_pair").value == f"{folder}/mine"
    assert "schedule_policy=fcfs" in text_shown(at)
