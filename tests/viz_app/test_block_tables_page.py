"""The block-table page shows the engine's own pool: every block, each step's tables, sharing."""

import os.path

import pytest

from minirt import LLM, SamplingParams
from minirt.config import ModelConfig
from minirt.kv import kv_cache_bytes_per_token
from minirt.model.loader import resolve_model_path
from vizlib.runs import torch_threads

PAGE = "pages/01_Block_tables.py"
# Two prompts share a 26-byte header (6 full blocks of 4 byte-tokens); a third shares nothing.
HEADER = "# shared header\\nimport os\\n"
PROMPT_LINES = [HEADER + "a = 1", HEADER + "b = 2", "x = 1"]
KNOBS = {"block_size": 4, "num_blocks": 40, "budget": 16, "max_tokens": 6}


@pytest.fixture(scope="module")
def engine_steps() -> tuple[LLM, list[dict]]:
    """The same run as the page's, made here directly with LLM (not through the dashboard)."""
    embedded = ModelConfig.from_pretrained(resolve_model_path(None))
    per_token = kv_cache_bytes_per_token(embedded, "float32")
    prompts = [p.replace("\\n", "\n") for p in PROMPT_LINES]
    params = SamplingParams(temperature=0.0, max_tokens=KNOBS["max_tokens"], ignore_eos=True)
    with torch_threads(1):  # as the page runs it (faster on a busy machine; same decisions)
        llm = LLM(
            device="cpu",
            dtype="float32",
            trace=True,
            block_size=KNOBS["block_size"],
            kv_cache_bytes=KNOBS["num_blocks"] * KNOBS["block_size"] * per_token,
            max_num_batched_tokens=KNOBS["budget"],
            max_model_len=256,
        )
        llm.generate(prompts, params, use_tqdm=False)
    return llm, [e for e in llm.recorder.events if e["type"] == "step"]


def run_page(open_page, **changes):
    at = open_page(PAGE)
    knobs = {**KNOBS, **changes}
    at.text_area(key="bt_prompts").set_value("\n".join(PROMPT_LINES))
    at.slider(key="bt_max_tokens").set_value(knobs["max_tokens"])
    at.select_slider(key="bt_block_size").set_value(knobs["block_size"])
    at.slider(key="bt_num_blocks").set_value(knobs["num_blocks"])
    at.slider(key="bt_budget").set_value(knobs["budget"]).run()
    return at


def step_slider(at):
    return next(s for s in at.slider if s.label == "Scheduler step")


def shown_tables(at) -> dict[int, list[int]]:
    if not at.dataframe:  # no sequence holds blocks: the page says so instead of a table
        return {}
    frame = at.dataframe[0].value
    return {int(seq.split()[1]): [int(b) for b in row.dropna()] for seq, row in frame.iterrows()}


def test_the_page_shows_every_block_of_the_engines_pool(open_page, metric, engine_steps):
    llm, _ = engine_steps
    at = run_page(open_page)
    assert not at.exception and not at.error
    assert llm.num_blocks == KNOBS["num_blocks"]
    assert metric(at, "Blocks in pool") == str(llm.num_blocks)
    used, free = int(metric(at, "Used")), int(metric(at, "Free"))
    assert used + free == llm.num_blocks
    assert step_slider(at).max == len(engine_steps[1]) - 1


def test_each_step_shows_the_engines_block_tables_free_and_cached_counts(
    open_page, metric, engine_steps
):
    _, steps = engine_steps
    at = run_page(open_page)
    for i in sorted({0, 1, len(steps) // 2, len(steps) - 1}):
        step_slider(at).set_value(i).run()
        event = steps[i]
        assert shown_tables(at) == event["block_tables"], f"step {i}"
        assert metric(at, "Free") == str(event["num_free_blocks"]), f"step {i}"
        assert metric(at, "Cached (hash kept)") == str(event["num_cached_blocks"]), f"step {i}"


def test_the_page_opens_on_a_step_where_the_shared_header_blocks_have_ref_count_two(
    open_page, metric, engine_steps
):
    _, steps = engine_steps
    at = run_page(open_page)
    event = steps[step_slider(at).value]
    held = [b for table in event["block_tables"].values() for b in table]
    shared = {b for b in held if held.count(b) > 1}
    common = os.path.commonprefix([p.replace("\\n", "\n") for p in PROMPT_LINES[:2]])
    assert len(shared) == len(common) // KNOBS["block_size"] == 6  # full header blocks only
    assert metric(at, "Shared (ref > 1)") == "6"


def test_the_pool_slider_starts_at_the_smallest_pool_the_engine_accepts(open_page):
    at = run_page(open_page)
    assert not at.exception and not at.error
    fewest = int(at.slider(key="bt_num_blocks").min)
    prompts = [p.replace("\\n", "\n") for p in PROMPT_LINES]
    params = SamplingParams(max_tokens=1, ignore_eos=True)
    with torch_threads(1):
        LLM(device="cpu", block_size=4, num_kv_blocks=fewest).generate(prompts, params)
        with pytest.raises(ValueError, match="whole KV pool holds"):
            LLM(device="cpu", block_size=4, num_kv_blocks=fewest - 1).generate(prompts, params)
    at.select_slider(key="bt_block_size").set_value(16).run()  # bigger blocks: fewer of them
    assert at.slider(key="bt_num_blocks").min < fewest and not at.error
