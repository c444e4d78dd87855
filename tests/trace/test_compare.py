"""Your run beside minirt's: identical runs agree, another policy diverges where it first chooses
differently, and hit rates read from a trace are the engine's own."""

import json

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.trace import Trace, load_trace
from minirt.trace.compare import first_divergence, hit_rate, record_pair, step_summary

HEADER = "# utilities for working with files\nimport os\n\n"  # 6 full blocks of 8 byte-tokens
# One seat (max_num_seqs=1): the first prompt runs alone, then the queue holds an unrelated
# prompt ahead of one that starts with the first prompt's header.
PROMPTS = [HEADER + "def read(p):", "class Config:", HEADER + "def main():"]
MAX_TOKENS = 4
PARAMS = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
ENGINE = dict(
    dtype="float32",
    block_size=8,
    num_kv_blocks=24,
    max_num_batched_tokens=64,
    max_num_seqs=1,
    max_model_len=128,
)


def fifo(waiting, cache):
    """Arrival order, whatever is cached."""
    return list(waiting)


def longest_cached_first(waiting, cache):
    """LPM: the request with the longest cached prefix first (stable for ties)."""
    return sorted(waiting, key=lambda s: -cache.match_len(s.token_ids))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the embedded model is tiny: more threads only contend
    yield
    torch.set_num_threads(before)


def test_the_same_part_twice_never_diverges_and_the_pair_is_saved(tmp_path):
    part = {"schedule_policy": longest_cached_first}
    yours, minirt = record_pair(
        PROMPTS, PARAMS, part, name="lpm", folder=tmp_path, schedule_policy="lpm", **ENGINE
    )
    assert first_divergence(yours, minirt) is None
    assert all(row["differs"] == "" for row in step_summary(yours, minirt))
    saved = load_trace(tmp_path / "lpm-yours.json")
    assert saved.meta["engine_config"]["schedule_policy"] == "longest_cached_first"
    assert (
        load_trace(tmp_path / "lpm-minirt.json").meta["engine_config"]["schedule_policy"] == "lpm"
    )
    assert first_divergence(saved, yours) is None


def test_fifo_against_lpm_diverges_at_the_first_admission_with_a_cached_prefix():
    yours, minirt = record_pair(
        PROMPTS, PARAMS, {"schedule_policy": fifo}, schedule_policy="lpm", **ENGINE
    )
    # The first prompt runs steps 0..MAX_TOKENS-1 alone (one seat) and finishes; the next step
    # admits from [seq 1 (nothing cached), seq 2 (the header cached)].
    for trace in (yours, minirt):
        assert trace.steps()[MAX_TOKENS - 1]["finished"] == [0]
    div = first_divergence(yours, minirt)
    assert (div.step, div.field, div.yours, div.minirt) == (MAX_TOKENS, "admitted", [1], [2])
    assert str(div) == f"step {MAX_TOKENS}, admitted sequences: yours [1], minirt [2]"
    rows = step_summary(yours, minirt)
    assert [r["step"] for r in rows if r["differs"]][0] == MAX_TOKENS
    assert rows[MAX_TOKENS]["minirt hits"] == 48 and rows[MAX_TOKENS]["yours hits"] == 0
    json.dumps(rows)  # plain data for a table


def test_a_run_that_stops_earlier_diverges_where_it_frees_its_blocks_then_in_length():
    short = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS - 1, ignore_eos=True)
    a = record_pair(PROMPTS[:1], short, {"schedule_policy": fifo}, **ENGINE)[0]
    b = record_pair(PROMPTS[:1], PARAMS, {"schedule_policy": fifo}, **ENGINE)[0]
    div = first_divergence(a, b)  # the shorter run finished a step sooner: its blocks are free
    assert (div.step, div.field, div.yours) == (MAX_TOKENS - 2, "block_tables", {})
    cut = Trace(meta=b.meta, events=b.steps()[:-1])  # the same decisions, one step fewer
    div = first_divergence(cut, b)
    assert (div.field, div.step) == ("steps", MAX_TOKENS - 1)
    assert step_summary(cut, b)[-1]["yours ran"] == "(ended)"


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_hit_rate_from_a_trace_matches_the_engines_stats_with_preemptions(mode):
    # A small pool preempts: a sequence admitted again must count its last admission's hits only.
    prompts = [
        HEADER + "def read(p):",
        HEADER + "class C:",
        HEADER + "def main():",
        "def fib(n):",
        HEADER + "x = 1",
    ]
    llm = LLM(
        device="cpu",
        dtype="float32",
        trace=True,
        block_size=4,
        num_kv_blocks=40,
        max_num_batched_tokens=32,
        max_model_len=128,
        preemption_mode=mode,
    )
    llm.generate(
        prompts, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True), use_tqdm=False
    )
    assert llm.last_stats.num_preemptions > 0
    trace = load_trace(llm.recorder.to_dict())
    assert hit_rate(trace) == pytest.approx(llm.last_stats.prefix_cache_hit_rate)


def test_a_part_that_is_not_a_named_part_is_refused():
    with pytest.raises(ValueError, match="schedule_policy"):
        record_pair(PROMPTS, PARAMS, {"block_size": 4}, **ENGINE)
