"""Every prefix cache x policy x batch priority (and the overlapped scheduler) gives the greedy
tokens of the engine without a prefix cache, hits the cache where prompts share a prefix, and
gives every block back. A cached KV that differed from the recomputed one would change tokens."""

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.config import EngineConfig
from minirt.kv import BlockManager
from minirt.sched import Scheduler
from minirt.sched.policy import POLICIES

# 4-token blocks: most shared prefixes end inside a block (the radix cache's copy path); a
# 24-token budget chunks the prompts; 36 blocks for 6 sequences of ~60 tokens force preemption.
SMALL = {"device": "cpu", "block_size": 4, "kv_cache_bytes": 36 * 4 * 8192,
         "max_num_batched_tokens": 24}  # fmt: skip
SYSTEM = "You answer in one word. Question: "
QUESTIONS = ["what is red?", "what is blue?", "what is big?", "what is bland?", "where?", "why?"]
PARAMS = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)

# The presets cover hash-fcfs-decode-first and radix-lpm-prefill-first-overlap.
COMBOS = [
    {"prefix_cache": "hash", "schedule_policy": "lpm", "overlap_schedule": True},
    {"prefix_cache": "radix", "schedule_policy": "fcfs", "preemption_mode": "swap"},
    {"prefix_cache": "radix", "schedule_policy": "dfs-weight", "batch_priority": "prefill-first"},
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The embedded model is tiny: one thread is as fast, and steady on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference():
    llm = LLM(prefix_cache=None, **SMALL)
    prompts = [SYSTEM + q for q in QUESTIONS]
    return prompts, [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)]


def _assert_nothing_leaks(llm: LLM) -> None:
    bm = llm.block_manager
    bm.check_invariants()
    assert not bm.tables
    bm.evict()  # cached content may stay; once dropped, every block is free
    assert bm.num_free_blocks == llm.num_blocks


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(map(str, c.values())))
def test_every_cache_and_policy_gives_the_tokens_of_the_engine_without_a_cache(reference, combo):
    prompts, want = reference
    llm = LLM(**SMALL, **combo)
    # twice: the second run finds the first one's prompts in the cache
    for _ in range(2):
        got = [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)]
        assert got == want
    assert llm.last_stats.num_cached_tokens > 0
    _assert_nothing_leaks(llm)


@pytest.mark.parametrize("preset", ["vllm", "sglang"])
def test_the_presets_run_with_preemption_and_match_the_reference(reference, preset):
    prompts, want = reference
    tight = {**SMALL, "kv_cache_bytes": 16 * 4 * 8192, "trace": True}  # 16 blocks: preemption
    llm = LLM(preset=preset, **tight)
    assert llm.config.to_dict() == EngineConfig.preset(preset, **tight).to_dict()
    got = [o.token_ids for o in llm.generate(prompts * 2, PARAMS, use_tqdm=False)]
    assert got == want * 2
    assert llm.last_stats.num_preemptions > 0  # the small pool made it preempt
    steps = [e for e in llm.recorder.events if e["type"] == "step"]
    assert all(e["device_ms"] > 0 and e["cpu_ms"] > 0 for e in steps)
    assert all(e["overlap"] == (preset == "sglang") for e in steps)
    _assert_nothing_leaks(llm)


def test_radix_cache_with_speculative_decoding_keeps_the_tokens(reference):
    prompts, want = reference
    llm = LLM(**SMALL, prefix_cache="radix", speculative_model="draft", num_speculative_tokens=2)
    for _ in range(2):
        assert [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)] == want
    assert llm.last_stats.num_cached_tokens > 0 and llm.last_stats.num_accepted_tokens > 0
    _assert_nothing_leaks(llm)


def test_the_old_switch_still_turns_prefix_caching_off_and_bad_knobs_are_refused():
    assert EngineConfig(enable_prefix_caching=False).prefix_cache is None
    assert not EngineConfig(prefix_cache=None).enable_prefix_caching
    with pytest.raises(ValueError, match="dfs_weight needs the prefix cache's match_node"):
        Scheduler(
            EngineConfig(prefix_cache="hash", schedule_policy="dfs-weight"), BlockManager(4, 4)
        )
    with pytest.raises(ValueError, match="unknown schedule_policy 'lifo'.*'dfs-weight'"):
        Scheduler(EngineConfig(schedule_policy="lifo"), BlockManager(4, 4))
    with pytest.raises(ValueError, match="prefix_cache"):
        EngineConfig(prefix_cache="trie")
    with pytest.raises(ValueError, match="unknown preset"):
        EngineConfig.preset("tgi")


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["vllm", "sglang"])
def test_on_cuda_the_presets_and_the_overlapped_scheduler_keep_the_tokens(preset):
    """On the GPU the overlapped step really runs ahead (pinned inputs, tokens read a step late,
    CUDA graphs for decodes): the greedy tokens must still be those of the plain engine."""
    cuda = {"device": "cuda", "dtype": "float32", "block_size": 4, "kv_cache_bytes": 2**26,
            "max_num_batched_tokens": 24}  # fmt: skip
    prompts = [SYSTEM + q for q in QUESTIONS]
    want = [o.token_ids for o in LLM(**cuda, prefix_cache=None).generate(prompts, PARAMS)]
    llm = LLM(preset=preset, **cuda, trace=True)
    for _ in range(2):
        assert [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)] == want
    steps = [e for e in llm.recorder.events if e["type"] == "step"]
    assert all(e["device_ms"] > 0 for e in steps)
    _assert_nothing_leaks(llm)


def _admissions(llm) -> list[list[int]]:
    return [[s["seq_id"] for s in e["scheduled"]] for e in llm.recorder.events
            if e["type"] == "step"]  # fmt: skip


def test_a_policy_written_as_a_plain_function_schedules_the_engine(reference):
    """A named part: the scheduling policy. A first-come-first-served function written here
    makes the same decisions, step by step, as the registered one; a newest-first one makes
    others and still the same greedy tokens."""
    prompts, want = reference

    def arrival_order(waiting, cache):
        return list(waiting)

    def newest_first(waiting, cache):
        return list(reversed(waiting))

    runs = {}
    for policy in (POLICIES["fcfs"], arrival_order, newest_first):
        llm = LLM(**SMALL, schedule_policy=policy, trace=True)
        assert [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)] == want
        assert llm.recorder.meta["engine_config"]["schedule_policy"] == policy.__name__
        runs[policy.__name__] = _admissions(llm)
        _assert_nothing_leaks(llm)
    assert runs["arrival_order"] == runs["fcfs"]
    assert runs["newest_first"] != runs["fcfs"]
