"""The prefix-cache page draws the engine's own caches: its tree rows are the RadixCache's nodes,
its hit counts the trace's, for the same prompts run directly with LLM."""

import pandas as pd
import pyarrow as pa
import pytest

from minirt import LLM
from vizlib import prefix_cache as pc
from vizlib.runs import RunSettings, torch_threads

PAGE = "pages/09_Prefix_cache.py"
HEADER = "You are a careful assistant.\nAnswer in one line.\n"
PROMPTS = (HEADER + "Q: capital of France?", HEADER + "Q: capital of Spain?", "Q: 2 + 2?")


def frames(at) -> list[pd.DataFrame]:
    """Every dataset of every chart on the page, as the browser receives it."""
    datasets = [d for chart in at.get("vega_lite_chart") for d in chart.proto.datasets]
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in datasets]


@pytest.fixture(scope="module")
def settings():
    return RunSettings(prompts=PROMPTS, max_tokens=2, block_size=8, max_num_batched_tokens=64,
                       num_kv_blocks=48, max_model_len=256)  # fmt: skip


def test_the_tree_rows_are_the_radix_cache_nodes_of_a_direct_run(settings):
    runs = pc.run_both.__wrapped__(settings, "lpm")
    with torch_threads(1):
        kw = {**settings.engine_kwargs(), "prefix_cache": "radix", "schedule_policy": "lpm"}
        llm = LLM(**kw)
        llm.generate(list(PROMPTS), settings.sampling_params(), use_tqdm=False)
    radix = runs["radix"]
    last = pc.tree_rows(radix["steps"], len(radix["steps"]) - 1, radix["prompts"])
    want = llm.block_manager.to_dict()["nodes"]
    assert sorted(last["depth"]) == sorted(
        len(pc._paths({n["id"]: n for n in want})[n["id"]]) for n in want
    )
    assert radix["stats"]["num_cached_tokens"] == llm.last_stats.num_cached_tokens
    # The shared header is a hit in some step for the radix cache: a green node appears.
    states = {s for i in range(len(radix["steps"]))
              for s in pc.tree_rows(radix["steps"], i, radix["prompts"])["state"]}  # fmt: skip
    assert {"hit", "new"} <= states
    # Whole blocks only for the hash cache: it never finds more than the radix tree does.
    assert runs["hash"]["stats"]["num_cached_tokens"] <= radix["stats"]["num_cached_tokens"]


def test_the_page_shows_both_caches_and_steps_through_the_run(open_page):
    at = open_page(PAGE)
    at.text_area(key="pc_prompts").set_value("\n".join(p.replace("\n", "\\n") for p in PROMPTS))
    at.slider(key="pc_max_tokens").set_value(2).run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [m.label for m in at.metric]
    assert "Radix hit rate" in labels and "Hash hit rate" in labels
    step = next(s for s in at.slider if s.label == "Scheduler step")
    step.set_value(step.max).run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 2


def test_the_page_opens_on_the_step_with_the_most_hits_and_labels_each_node(open_page):
    at = open_page(PAGE)
    step = next(s for s in at.slider if s.label == "Scheduler step")
    assert step.value > 0  # not step 0's lone first prompt
    (tree,) = [f for f in frames(at) if "label" in f]
    assert (tree["state"] == "hit").any()
    header = tree[tree["text"].str.startswith("You are a careful")].iloc[0]
    assert header["label"].startswith("You·are·a·careful") and header["label"].endswith("×4")


def test_a_label_shows_whitespace_cuts_long_text_and_omits_an_unheld_count():
    assert pc.node_label("a b\nc", 2) == "a·b⏎c  ×2"
    assert pc.node_label("x" * 40, 0, width=10) == "x" * 9 + "…"


def test_the_default_step_is_the_one_with_most_hit_tokens_else_the_last():
    steps = [{"prefix_hit_tokens": n} for n in (0, 5, 9, 9, 0)]
    assert pc.default_step(steps) == 2
    assert pc.default_step([{"prefix_hit_tokens": 0}] * 3) == 2
