"""Every prefix cache x policy x batch priority (and the overlapped scheduler) gives the greedy
tokens of the engine without a prefix cache, hits the cache where prompts share a prefix, and
gives every block back. A cached KV that differed from the recomputed one would change tokens."""

import pytest
import torch

from minirt import LLM, SamplingParams
from minirt.config import EngineConfig
from minirt.kv import BlockManager
from minirt.kv.caches import make_prefix_cache
from minirt.kv.prefix_cache import PrefixCacheHooks
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


def test_one_knob_turns_prefix_caching_off_and_bad_parts_are_refused_by_name():
    with pytest.raises(TypeError, match="enable_prefix_caching"):  # the old second switch
        EngineConfig(enable_prefix_caching=False)
    with pytest.raises(ValueError, match="dfs_weight needs the prefix cache's match_node"):
        Scheduler(
            EngineConfig(prefix_cache="hash", schedule_policy="dfs-weight"), BlockManager(4, 4)
        )
    with pytest.raises(ValueError, match="unknown schedule_policy 'lifo'.*'dfs-weight'"):
        Scheduler(EngineConfig(schedule_policy="lifo"), BlockManager(4, 4))
    with pytest.raises(ValueError, match="unknown prefix_cache 'trie'.*'radix'"):
        make_prefix_cache("trie", 4, 4)

    class HalfACache:  # a learner's cache that forgot most of the protocol
        def __init__(self, num_blocks, block_size):
            self.num_blocks, self.block_size = num_blocks, block_size

        def free(self, seq_id): ...

    with pytest.raises(ValueError, match=r"HalfACache lacks tables, num_free_blocks.*allocate"):
        LLM(**SMALL, prefix_cache=HalfACache)
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


def test_overlap_none_stays_off_on_the_cpu_and_only_a_draining_caller_steps_ahead():
    from minirt.serve.engine_loop import EngineLoop

    assert LLM(**SMALL, overlap_schedule=None).overlap is None  # nothing to hide behind
    llm = LLM(**SMALL, overlap_schedule=True)
    assert llm.overlap_steps  # True: asked for, so step() runs ahead too
    assert EngineLoop(llm).llm.overlap_steps  # the server drains when idle (tests/serve)


@pytest.mark.gpu
def test_on_cuda_overlap_none_overlaps_generate_and_step_wise_driving_stays_plain():
    """overlap_schedule=None overlaps generate() on CUDA, whose loop drains the last step; a
    caller of step() reads every step's tokens, so it gets the plain step: never a placeholder."""
    cuda = {"device": "cuda", "dtype": "float32", "block_size": 4, "kv_cache_bytes": 2**26}
    prompts = [SYSTEM + q for q in QUESTIONS]
    want = [o.token_ids for o in LLM(**cuda, overlap_schedule=False).generate(prompts, PARAMS)]
    llm = LLM(**cuda, trace=True, overlap_schedule=None)
    assert llm.overlap is not None
    assert [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)] == want
    steps = [e for e in llm.recorder.events if e["type"] == "step"]
    assert steps and all(e["overlap"] for e in steps)
    from minirt.sched import Sequence

    seqs = [Sequence(-1 - i, llm.tokenizer.encode(p), PARAMS) for i, p in enumerate(prompts)]
    for seq in seqs:
        llm.scheduler.add(seq)
    while llm.scheduler.has_unfinished():
        llm.step()
        assert all(t >= 0 for s in seqs for t in s.output_token_ids)
    assert [s.output_token_ids for s in seqs] == want
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


class WholeBlockCache(PrefixCacheHooks):
    """A second prefix cache, written here the simplest way: a dict from a prompt's full-block
    prefix (as a tuple of tokens) to the blocks that hold its KV, published after the forward
    (`cache_computed`), with reference counts; LRU order is ignored (evicts in id order)."""

    def __init__(self, num_blocks, block_size):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.refs = [0] * num_blocks
        self.tables: dict[int, list[int]] = {}
        self.prefix_of: dict[int, tuple] = {}  # block -> the prefix it ends (cached blocks)
        self.cached: dict[tuple, int] = {}  # prefix -> block

    @property
    def num_free_blocks(self):
        return self.refs.count(0)

    @property
    def num_cached_blocks(self):
        return len(self.cached)

    def blocks_for(self, n):
        return -(-n // self.block_size)

    def block_table(self, seq_id):
        return self.tables[seq_id]

    def _hits(self, tokens):
        bs, out = self.block_size, []
        for end in range(bs, len(tokens), bs):  # never the last token
            if tuple(tokens[:end]) not in self.cached:
                break
            out.append(self.cached[tuple(tokens[:end])])
        return out

    def match_len(self, tokens):
        return len(self._hits(tokens)) * self.block_size

    def can_allocate(self, tokens, n):
        hits = self._hits(tokens)[: self.blocks_for(n)]
        free_hits = sum(self.refs[b] == 0 for b in hits)
        return self.blocks_for(n) - len(hits) <= self.num_free_blocks - free_hits

    def allocate(self, seq_id, tokens, n):
        hits = self._hits(tokens)[: self.blocks_for(n)]
        for b in hits:
            self.refs[b] += 1
        self.tables[seq_id] = list(hits)
        self.append(seq_id, n)
        return len(hits) * self.block_size

    def can_append(self, seq_id, n):
        return self.blocks_for(n) - len(self.tables[seq_id]) <= self.num_free_blocks

    def append(self, seq_id, n):
        table = self.tables[seq_id]
        while len(table) < self.blocks_for(n):
            b = next(b for b in range(self.num_blocks) if self.refs[b] == 0)
            self.cached.pop(self.prefix_of.pop(b, None), None)  # reused: forget its content
            self.refs[b] = 1
            table.append(b)

    def cache_computed(self, seq_id, tokens, n):
        table, bs = self.tables[seq_id], self.block_size
        for i in range(n // bs):
            prefix = tuple(tokens[: (i + 1) * bs])
            if prefix not in self.cached and table[i] not in self.prefix_of:
                self.cached[prefix], self.prefix_of[table[i]] = table[i], prefix

    def truncate(self, seq_id, n):
        table, freed = self.tables[seq_id], []
        while len(table) > self.blocks_for(n):
            b = table.pop()
            self.refs[b] -= 1
            freed += [b] if self.refs[b] == 0 else []
        for b in table[n // self.block_size :]:  # a partly valid block: not a cache entry
            self.cached.pop(self.prefix_of.pop(b, None), None)
        return freed

    def free(self, seq_id):
        for b in self.tables.pop(seq_id):
            self.refs[b] -= 1

    def evict(self, num_blocks=None):
        gone = [b for b in self.prefix_of if self.refs[b] == 0][:num_blocks]
        for b in gone:
            self.cached.pop(self.prefix_of.pop(b))
        return len(gone)

    def to_dict(self):
        return {"tables": {str(k): v for k, v in self.tables.items()}}

    def check_invariants(self):
        held = [0] * self.num_blocks
        for table in self.tables.values():
            for b in table:
                held[b] += 1
        assert held == self.refs


def test_a_prefix_cache_written_in_the_test_serves_the_engine(reference):
    """A named part: the prefix cache. The engine runs on a cache class written above, with
    chunked prefill and preemption: the same greedy tokens, real hits, nothing leaked."""
    prompts, want = reference
    llm = LLM(**SMALL, prefix_cache=WholeBlockCache, trace=True)
    for _ in range(2):  # the second round hits what the first cached
        assert [o.token_ids for o in llm.generate(prompts, PARAMS, use_tqdm=False)] == want
    assert llm.last_stats.num_cached_tokens > 0
    assert llm.recorder.meta["engine_config"]["prefix_cache"] == "WholeBlockCache"
    _assert_nothing_leaks(llm)
