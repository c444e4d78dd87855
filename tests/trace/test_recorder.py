"""The trace recorder: saved traces load back unchanged; broken ones are refused, saying why."""

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.trace import (
    VERSION,
    Recorder,
    RequestEvent,
    ScheduledSeq,
    StepEvent,
    Trace,
    TraceError,
    load_trace,
    recorder,
)


def make_step(step: int = 0) -> StepEvent:
    return StepEvent(
        step=step,
        time_s=0.25,
        scheduled=[ScheduledSeq(0, num_new_tokens=7, num_computed_tokens=0, is_prefill=True)],
        num_prefill_tokens=7,
        num_decode_tokens=0,
        num_running=1,
        num_waiting=2,
        preempted=[],
        finished=[],
        block_tables={0: [3, 4]},
        num_free_blocks=62,
        num_cached_blocks=0,
        prefix_hit_tokens=0,
        schedule_ms=0.1,
        forward_ms=12.5,
    )


def make_recorder() -> Recorder:
    rec = Recorder(meta={"model": "embedded", "block_size": 16, "num_blocks": 64})
    rec.record(make_step(0))
    rec.record(RequestEvent(seq_id=0, prompt_len=7, arrival_s=0.0, first_token_s=0.3))
    rec.record({"type": "kv_swap", "blocks": [1, 2]})  # a type this version does not know
    return rec


def valid_trace() -> dict:
    return json.loads(json.dumps(make_recorder().to_dict()))


def test_saved_trace_loads_back_with_the_same_meta_and_events(tmp_path):
    rec = make_recorder()
    path = rec.save(tmp_path / "runs" / "trace.json")
    trace = load_trace(path)
    assert isinstance(trace, Trace)
    assert trace.version == VERSION
    assert trace.meta == rec.meta
    assert trace.events == rec.events
    assert trace.to_dict() == rec.to_dict()


def test_block_table_keys_come_back_as_int_seq_ids(tmp_path):
    trace = load_trace(make_recorder().save(tmp_path / "t.json"))
    assert trace.steps()[0]["block_tables"] == {0: [3, 4]}
    assert StepEvent.from_dict(trace.steps()[0]) == make_step(0)


def test_a_trace_loads_from_a_dict_and_from_an_open_file():
    data = make_recorder().to_dict()
    assert load_trace(data).events == make_recorder().events
    assert load_trace(io.StringIO(json.dumps(data))).meta["block_size"] == 16
    assert load_trace(io.BytesIO(json.dumps(data).encode())).meta["num_blocks"] == 64


def test_helpers_pick_events_by_type_and_unknown_types_are_kept():
    trace = load_trace(make_recorder().to_dict())
    assert [e["step"] for e in trace.steps()] == [0]
    assert RequestEvent.from_dict(trace.requests()[0]).first_token_s == 0.3
    assert trace.of_type("kv_swap") == [{"type": "kv_swap", "blocks": [1, 2]}]


def test_saved_file_has_one_event_per_line(tmp_path):
    text = make_recorder().save(tmp_path / "t.json").read_text()
    assert len(text.splitlines()) == 2 + len(make_recorder().events)


def test_recorder_refuses_meta_that_is_not_json():
    with pytest.raises(TraceError, match="not JSON-serialisable"):
        Recorder(meta={"device": object()})


def test_recorder_refuses_an_event_without_a_type():
    with pytest.raises(TraceError, match="'type'"):
        Recorder().record({"step": 1})


def test_a_missing_file_says_which_path():
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_trace("nope.json")


def test_text_that_is_not_json_is_refused_with_the_file_name(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "minirt-trace", ')
    with pytest.raises(TraceError, match=r"broken\.json is not JSON.*Recorder\.save"):
        load_trace(path)


def test_nan_in_a_file_is_refused():
    with pytest.raises(TraceError, match="NaN"):
        load_trace(io.StringIO('{"format": "minirt-trace", "version": 1, "x": NaN}'))


def test_a_json_list_is_refused_as_not_an_object():
    with pytest.raises(TraceError, match="JSON object.*got a list"):
        load_trace(io.StringIO("[]"))


@pytest.mark.parametrize(
    ("fmt", "message"), [(None, "no 'format' field"), ("chrome-trace", "format 'chrome-trace'")]
)
def test_a_missing_or_foreign_format_is_refused(fmt, message):
    data = valid_trace()
    if fmt is None:
        del data["format"]
    else:
        data["format"] = fmt
    with pytest.raises(TraceError, match=message) as info:
        load_trace(data)
    assert "minirt-trace" in str(info.value)


def test_a_newer_version_is_refused_and_says_to_upgrade():
    data = valid_trace()
    data["version"] = VERSION + 1
    with pytest.raises(TraceError, match=f"version {VERSION + 1} is newer.*upgrade minirt"):
        load_trace(data)


def test_an_older_version_is_refused_and_says_to_re_record():
    data = valid_trace()
    data["version"] = VERSION - 1
    with pytest.raises(TraceError, match="older.*re-record"):
        load_trace(data)


def test_a_version_that_is_not_an_integer_is_refused():
    data = valid_trace()
    data["version"] = "1"
    with pytest.raises(TraceError, match="'version' must be an integer"):
        load_trace(data)


def test_events_that_are_not_a_list_are_refused():
    data = valid_trace()
    data["events"] = {"0": {}}
    with pytest.raises(TraceError, match="'events' must be a list.*got dict"):
        load_trace(data)


def test_meta_that_is_not_an_object_is_refused():
    data = valid_trace()
    data["meta"] = None
    with pytest.raises(TraceError, match="'meta' must be a JSON object"):
        load_trace(data)


def test_a_step_missing_a_field_names_the_event_and_the_field():
    data = valid_trace()
    del data["events"][0]["forward_ms"]
    with pytest.raises(TraceError, match=r"event 0 \(type 'step'\).*'forward_ms' is a required"):
        load_trace(data)


def test_a_step_field_of_the_wrong_type_names_where_it_is():
    data = valid_trace()
    data["events"][0]["scheduled"][0]["is_prefill"] = "yes"
    with pytest.raises(TraceError, match=r"\['scheduled'\]\[0\]\['is_prefill'\].*boolean"):
        load_trace(data)


def test_a_block_table_keyed_by_a_non_integer_is_refused():
    data = valid_trace()
    data["events"][0]["block_tables"] = {"seq-a": [1]}
    with pytest.raises(TraceError, match="block_tables"):
        load_trace(data)


def test_a_request_with_a_negative_length_is_refused():
    data = valid_trace()
    data["events"][1]["prompt_len"] = -1
    with pytest.raises(TraceError, match=r"event 1 \(type 'request'\).*prompt_len"):
        load_trace(data)


@pytest.mark.parametrize("event", [{"blocks": [1]}, {"type": 3}, "step"])
def test_an_event_without_a_string_type_is_refused(event):
    data = valid_trace()
    data["events"].append(event)
    with pytest.raises(TraceError, match="event 3 is malformed"):
        load_trace(data)


ids = st.integers(min_value=0, max_value=10_000)
times = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
scheduled_seqs = st.builds(
    ScheduledSeq, seq_id=ids, num_new_tokens=ids, num_computed_tokens=ids, is_prefill=st.booleans()
)
step_events = st.builds(
    StepEvent,
    step=ids,
    time_s=times,
    scheduled=st.lists(scheduled_seqs, max_size=5),
    num_prefill_tokens=ids,
    num_decode_tokens=ids,
    num_running=ids,
    num_waiting=ids,
    preempted=st.lists(ids, max_size=4),
    finished=st.lists(ids, max_size=4),
    block_tables=st.dictionaries(ids, st.lists(ids, max_size=8), max_size=5),
    num_free_blocks=ids,
    num_cached_blocks=ids,
    prefix_hit_tokens=ids,
    schedule_ms=times,
    forward_ms=times,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(step_events, min_size=1, max_size=4))
def test_any_valid_step_events_round_trip_through_a_file(tmp_path_factory, events):
    rec = Recorder(meta={"block_size": 16})
    for event in events:
        rec.record(event)
    trace = load_trace(rec.save(tmp_path_factory.mktemp("trace") / "t.json"))
    assert [StepEvent.from_dict(d) for d in trace.steps()] == events


def trace_text(meta: dict | None = None, **step_fields) -> str:
    data = valid_trace()
    data["meta"] = {**data["meta"], **(meta or {})}
    data["events"][0].update(step_fields)
    return json.dumps(data)


SPEC_FREEING_BLOCK_70 = {"seq_id": 0, "proposed": [], "num_accepted": 0, "emitted": []}
SPEC_FREEING_BLOCK_70 |= {"table_before": [3], "freed_blocks": [70]}
NESTED = '{"format": "minirt-trace", "version": 1, "meta": {"x": %s}, "events": []}'

BAD_TEXTS = {
    "nested 100,000 deep": (NESTED % ("[" * 100_000 + "]" * 100_000), "nests too deeply"),
    "nested 50 deep": (NESTED % ("[" * 50 + "]" * 50), "nests more than 32 levels"),
    "a 5,000-digit number": (NESTED % ("1" * 5000), "5,000-digit number"),
    "a float beyond range": (NESTED % "1e400", "1e400, beyond a finite float"),
    "a block id past the pool": (
        trace_text(block_tables={"0": [3, 64]}),
        r"event 0 \(step 0\): block_tables\[0\] holds block 64 but meta.num_blocks is 64",
    ),
    "a freed speculative block past the pool": (
        trace_text(spec=[SPEC_FREEING_BLOCK_70]),
        "spec freed_blocks of seq 0 holds block 70",
    ),
    "more used and free blocks than the pool": (
        trace_text(num_free_blocks=63),
        "2 blocks in use \\+ num_free_blocks 63 is more than meta.num_blocks \\(64\\)",
    ),
    "more cached blocks than the pool": (
        trace_text(num_cached_blocks=65),
        "num_cached_blocks 65 is more than meta.num_blocks",
    ),
    "a pool of 10**12 blocks": (
        trace_text({"num_blocks": 10**12}),
        r"meta\['num_blocks'\] is malformed: 1000000000000 is greater than the maximum of 16777216",
    ),
    "a pool of 0 blocks": (trace_text({"num_blocks": 0}), r"meta\['num_blocks'\]"),
    "a pool size that is a string": (trace_text({"num_blocks": "8"}), "'8' is not of type"),
    "a block id of 10**12 without a pool size": (
        json.dumps({**valid_trace(), "meta": {}}).replace("[3, 4]", "[3, 1000000000000]"),
        r"\['block_tables'\]\['0'\]\[1\]: 1000000000000 is greater than the maximum",
    ),
}


@pytest.mark.parametrize("what", BAD_TEXTS)
def test_a_trace_that_claims_too_much_is_a_trace_error_naming_the_field(what):
    text, match = BAD_TEXTS[what]
    f = io.StringIO(text)
    f.name = "claims.json"
    with pytest.raises(TraceError, match=match):
        load_trace(f)


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(recorder, "MAX_TRACE_BYTES", 1000)
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({**valid_trace(), "pad": "x" * 1000}))
    with pytest.raises(TraceError, match=r"huge\.json is over 0 MiB"):
        load_trace(path)
    with pytest.raises(TraceError, match="<file> is over"):
        load_trace(io.BytesIO(path.read_bytes()))


def test_a_pool_of_millions_of_blocks_is_accepted_when_every_id_fits():
    data = valid_trace()
    data["meta"]["num_blocks"] = 10**7
    data["events"][0]["num_free_blocks"] = 10**7 - 2
    assert load_trace(data).meta["num_blocks"] == 10**7


@pytest.mark.parametrize(
    "engine",
    [
        {"prefix_cache": "hash"},
        {"prefix_cache": "radix", "schedule_policy": "lpm"},
        {"preemption_mode": "swap"},
        {"overlap_schedule": True},
        {"speculative_model": "draft", "num_speculative_tokens": 3},
    ],
    ids=["hash", "radix", "swap", "overlap", "speculative"],
)
def test_a_real_run_in_every_engine_mode_passes_the_cross_field_checks(engine, tmp_path):
    from minirt import LLM, SamplingParams

    # 12 blocks of 4 tokens (10 with a draft) for 3 prompts that share a header: blocks are
    # shared, and the pool is too small for all three at once
    llm = LLM(device="cpu", trace=True, block_size=4, kv_cache_bytes=12 * 4 * 8192, **engine)
    llm.trace_cache = True
    header = "import os\nimport sys\n"
    prompts = [header + "def a():", header + "def b():", "x = 1"]
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    trace = load_trace(llm.recorder.save(tmp_path / "run.json"))
    assert trace.meta["num_blocks"] == llm.num_blocks and trace.steps()
