"""Both trace pages read an upload: a good trace is drawn, a bad one gets TraceError's words."""

import io
import json

import pytest

from minirt import LLM, SamplingParams
from minirt.trace import VERSION, TraceError, load_trace
from vizlib.runs import torch_threads

PAGES = {"pages/01_Block_tables.py": "bt", "pages/02_Scheduler.py": "sch"}


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory) -> tuple[bytes, LLM]:
    """A trace saved the way a learner saves one (Recorder.save), from a small real run."""
    with torch_threads(1):
        llm = LLM(device="cpu", dtype="float32", trace=True, block_size=8)
        llm.generate(["def f(x):", "import os"], SamplingParams(max_tokens=4), use_tqdm=False)
    path = llm.recorder.save(tmp_path_factory.mktemp("trace") / "run.json")
    return path.read_bytes(), llm


def step_event(**overrides) -> dict:
    event = {
        "type": "step", "step": 0, "time_s": 0.0, "scheduled": [], "num_prefill_tokens": 0,
        "num_decode_tokens": 0, "num_running": 0, "num_waiting": 0, "preempted": [],
        "finished": [], "block_tables": {}, "num_free_blocks": 4, "num_cached_blocks": 0,
        "prefix_hit_tokens": 0, "schedule_ms": 0.0, "forward_ms": 0.0,
    }  # fmt: skip
    return {**event, **overrides}


def trace_bytes(version=VERSION, fmt="minirt-trace", events=None, meta=None) -> bytes:
    doc = {
        "format": fmt,
        "version": version,
        "meta": meta or {},
        "events": events or [step_event()],
    }
    return json.dumps(doc).encode()


NESTED = b'{"format": "minirt-trace", "version": 1, "meta": {"x": %s}, "events": []}'


BAD_FILES = {
    "not JSON": b'{"format": "minirt-trace", "version": ',
    "a newer version": trace_bytes(version=VERSION + 98),
    "an older version": trace_bytes(version=0),
    "another format": trace_bytes(fmt="chrome-trace"),
    "a malformed step": trace_bytes(events=[step_event(num_free_blocks=-1)]),
    "not UTF-8": b"\xff\xfe\x00garbage",
    "nested 100,000 deep": NESTED % (b"[" * 100_000 + b"]" * 100_000),
    "a 5,000-digit number": NESTED % (b"1" * 5000),
    "a block id past the pool": trace_bytes(
        meta={"num_blocks": 4}, events=[step_event(block_tables={"0": [1, 4]}, num_free_blocks=2)]
    ),
    "a pool of 10**12 blocks": trace_bytes(meta={"num_blocks": 10**12}),
    "a pool of 10**7 blocks and a block id past it": trace_bytes(
        meta={"num_blocks": 10**7}, events=[step_event(block_tables={"0": [10**7]})]
    ),
}


def upload(open_page, file: str, name: str, data: bytes):
    key = PAGES[file]
    at = open_page(file)
    at.radio(key=f"{key}_source").set_value("Upload a trace").run()
    at.file_uploader(key=f"{key}_upload").set_value((name, data, "application/json")).run()
    return at


@pytest.mark.parametrize("file", PAGES)
@pytest.mark.parametrize("what", BAD_FILES)
def test_a_bad_trace_file_shows_trace_errors_message_not_a_traceback(open_page, file, what):
    data = BAD_FILES[what]
    with pytest.raises(TraceError) as raised:
        load_trace(io.BytesIO(data))
    at = upload(open_page, file, "bad.json", data)
    assert not at.exception
    shown = [e.value for e in at.error]
    assert len(shown) == 1 and "bad.json" in shown[0], shown
    # load_trace names a nameless stream "<file>"; the page passes the uploaded name instead
    assert str(raised.value).replace("<file>", "bad.json") in shown[0]


def test_an_uploaded_trace_drives_the_scheduler_page(open_page, metric, good_trace):
    data, llm = good_trace
    at = upload(open_page, "pages/02_Scheduler.py", "run.json", data)
    assert not at.exception and not at.error
    assert metric(at, "Steps") == str(llm.last_stats.num_steps)
    assert metric(at, "Generated tokens") == str(llm.last_stats.num_generated_tokens)


def test_an_uploaded_trace_drives_the_block_table_page(open_page, metric, good_trace):
    data, llm = good_trace
    at = upload(open_page, "pages/01_Block_tables.py", "run.json", data)
    assert not at.exception and not at.error
    assert metric(at, "Blocks in pool") == str(llm.num_blocks)


def test_a_pool_of_16_million_blocks_draws_the_first_ones_and_counts_the_rest(open_page, metric):
    """The page's work grows with the blocks in use, not the pool a trace claims."""
    size = 2**24  # the most a trace may claim
    tables = {"0": [0, 1, 2], "1": [0, size - 1]}
    event = step_event(block_tables=tables, num_free_blocks=size - 4, num_cached_blocks=1)
    data = trace_bytes(meta={"num_blocks": size, "block_size": 16}, events=[event])
    at = upload(open_page, "pages/01_Block_tables.py", "big.json", data)
    assert not at.exception and not at.error
    assert metric(at, "Blocks in pool") == str(size)
    assert (metric(at, "Used"), metric(at, "Shared (ref > 1)")) == ("4", "1")
    assert metric(at, "Free") == str(size - 4)
    free_list = next(m.value for m in at.markdown if m.value.startswith("**Free list**"))
    assert free_list.endswith(f"3–{size - 2:,}".replace(",", ""))
