"""The scheduler page's totals are the engine's, its knobs re-run the engine, bad knobs explain."""

import pytest

from minirt import LLM, SamplingParams
from vizlib.runs import torch_threads

PAGE = "pages/02_Scheduler.py"


def knobs(at) -> dict:
    """The engine settings the page's widgets hold right now."""
    return {
        "prompts": [
            line.replace("\\n", "\n")
            for line in at.text_area(key="sch_prompts").value.splitlines()
            if line.strip()
        ],
        "max_tokens": at.slider(key="sch_max_tokens").value,
        "block_size": at.select_slider(key="sch_block_size").value,
        "kv_cache_bytes": at.slider(key="sch_kv_kib").value * 1024,
        "max_num_batched_tokens": at.slider(key="sch_budget").value,
        "enable_chunked_prefill": at.toggle(key="sch_chunked").value,
        "max_model_len": at.slider(key="sch_len").value,
        "preemption_mode": at.radio(key="sch_preemption").value,
    }


def engine_run(k: dict) -> tuple[LLM, list[dict]]:
    """The run the page should show, made here directly with LLM (not through the dashboard)."""
    engine_kwargs = {name: v for name, v in k.items() if name not in ("prompts", "max_tokens")}
    params = SamplingParams(temperature=0.0, max_tokens=k["max_tokens"], ignore_eos=True)
    with torch_threads(1):  # as the page runs it (faster on a busy machine; same decisions)
        llm = LLM(device="cpu", dtype="float32", trace=True, **engine_kwargs)
        llm.generate(k["prompts"], params, use_tqdm=False)
    return llm, [e for e in llm.recorder.events if e["type"] == "step"]


def assert_totals_match(at, metric, llm: LLM, steps: list[dict]) -> None:
    s = llm.last_stats
    assert metric(at, "Steps") == str(s.num_steps) == str(len(steps))
    assert metric(at, "Preemptions") == str(s.num_preemptions)
    assert metric(at, "Generated tokens") == str(s.num_generated_tokens)
    assert metric(at, "Prefill tokens") == str(sum(e["num_prefill_tokens"] for e in steps))
    assert metric(at, "Decode tokens") == str(sum(e["num_decode_tokens"] for e in steps))


@pytest.fixture
def scheduler(open_page):
    return open_page(PAGE)


def test_default_totals_match_the_engine_and_show_preemption_and_chunking(scheduler, metric):
    at = scheduler
    assert not at.error
    k = knobs(at)
    llm, steps = engine_run(k)
    assert_totals_match(at, metric, llm, steps)
    # The defaults are picked so both effects show on a few short prompts:
    assert llm.last_stats.num_preemptions > 0
    budget = k["max_num_batched_tokens"]
    assert any(e["num_prefill_tokens"] == budget for e in steps), "no step filled by a chunk"
    per_step = at.dataframe[1].value  # the "Per step" table
    assert per_step["prefill"].tolist() == [e["num_prefill_tokens"] for e in steps]
    assert per_step["running"].tolist() == [e["num_running"] for e in steps]


def test_a_bigger_kv_budget_and_token_budget_rerun_the_engine_without_preemption(scheduler, metric):
    at = scheduler
    at.slider(key="sch_kv_kib").set_value(8192)
    at.slider(key="sch_budget").set_value(256).run()
    llm, steps = engine_run(knobs(at))
    assert llm.last_stats.num_preemptions == 0
    assert_totals_match(at, metric, llm, steps)
    assert "budget **256**" in at.markdown[0].value


def test_preemption_by_swap_shows_the_swaps_the_engine_made(scheduler, metric):
    at = scheduler
    assert metric(at, "Swapped out") == "0"  # recompute by default
    at.radio(key="sch_preemption").set_value("swap").run()
    assert not at.exception and not at.error
    llm, steps = engine_run(knobs(at))
    assert_totals_match(at, metric, llm, steps)
    swap_outs = sum(len(e["swapped_out"]) for e in steps)
    assert swap_outs == llm.scheduler.num_swap_outs > 0
    assert metric(at, "Swapped out") == str(swap_outs)
    assert at.dataframe[1].value["swapped"].tolist() == [e["num_swapped"] for e in steps]


def test_turning_chunked_prefill_off_with_a_small_budget_shows_the_engines_message(scheduler):
    at = scheduler
    at.toggle(key="sch_chunked").set_value(False).run()
    assert not at.exception
    assert any("without chunked prefill" in e.value for e in at.error), [e.value for e in at.error]


def test_without_chunked_prefill_every_prompt_is_prefilled_in_one_step(scheduler, metric):
    at = scheduler
    at.toggle(key="sch_chunked").set_value(False)
    at.slider(key="sch_budget").set_value(128).run()  # = max model len: a whole prompt fits
    assert not at.error
    llm, steps = engine_run(knobs(at))
    assert_totals_match(at, metric, llm, steps)
    first = {}  # each sequence's first prefill starts from nothing or from cached blocks only
    for e in steps:
        for s in e["scheduled"]:
            first.setdefault(s["seq_id"], s)
    prompt_len = {
        r["seq_id"]: r["prompt_len"] for r in llm.recorder.events if r["type"] == "request"
    }
    for seq_id, s in first.items():
        assert s["num_computed_tokens"] + s["num_new_tokens"] == prompt_len[seq_id]


def test_the_kv_budget_slider_starts_where_the_engine_accepts_the_prompts(scheduler):
    at = scheduler
    fewest = int(at.slider(key="sch_kv_kib").min)
    at.slider(key="sch_kv_kib").set_value(fewest).run()
    assert not at.exception and not at.error
    with pytest.raises(ValueError, match="whole KV pool holds"):
        engine_run({**knobs(at), "kv_cache_bytes": (fewest - 256) * 1024})


def test_the_captions_tell_swap_from_recompute(scheduler):
    at = scheduler
    assert any("prefills again: its KV is recomputed" in c.value for c in at.caption)
    at.radio(key="sch_preemption").set_value("swap").run()
    captions = " ".join(c.value for c in at.caption)
    assert "swapped back in, nothing recomputed" in captions and "prefills again" not in captions
