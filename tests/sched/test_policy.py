"""The in-batch check (SGLang's deferral): the tree of this step's prompts gives the answer of the
plain one-prompt-at-a-time comparison, and the scheduler defers with it."""

from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.config import EngineConfig
from minirt.kv.radix_cache import RadixCache
from minirt.kv.radix_tree import RadixNode, insert, match
from minirt.sampling_params import SamplingParams
from minirt.sched import Scheduler, Sequence
from minirt.sched.policy import IN_BATCH_DEFER_TOKENS, InBatchPrefixes, defer_in_batch

# Two symbols, each drawn as a run of 5 equal tokens: prompts share long prefixes, are often
# prefixes of each other, and split inside edges.
PROMPT = st.lists(st.sampled_from([0, 1]), min_size=1, max_size=8).map(
    lambda p: [t for t in p for _ in range(5)]
)


def _lcp(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@settings(max_examples=300, deadline=None)
@given(st.lists(PROMPT, max_size=8), PROMPT)
def test_a_token_tree_matches_the_longest_prefix_shared_with_any_inserted_prompt(prompts, query):
    root = RadixNode([], [])
    for p in prompts:
        insert(root, list(p))
    assert match(root, query)[1] == max((_lcp(query, p) for p in prompts), default=0)


@settings(max_examples=300, deadline=None)
@given(st.lists(PROMPT, max_size=8), st.lists(PROMPT, min_size=1, max_size=6))
def test_the_tree_defers_exactly_the_requests_the_plain_check_defers(admitted, queue):
    tree = InBatchPrefixes(admitted)
    seen = list(admitted)
    for p in queue:  # as in a step: each candidate is checked, then admitted
        for cached in range(len(p)):  # every cache hit: the threshold is exact to the token
            assert tree.defers(p, cached) == defer_in_batch(p, cached, seen), (p, cached, seen)
        tree.add(p)
        seen.append(p)


def test_a_request_whose_prefix_is_computed_this_step_waits_one_step_and_then_hits():
    config = EngineConfig(prefix_cache="radix", schedule_policy="lpm", block_size=4,
                          max_num_batched_tokens=512)  # fmt: skip
    sched = Scheduler(config, RadixCache(num_blocks=64, block_size=4))
    shared = list(range(40))
    params = SamplingParams(max_tokens=2)
    first, second = Sequence(0, shared + [100, 101], params), Sequence(1, shared + [200], params)
    far = Sequence(2, shared[: IN_BATCH_DEFER_TOKENS - 1] + [300] * 30, params)  # shares too little
    for s in (first, second, far):
        sched.add(s)
    batch = sched.schedule()
    assert batch.seqs == [first, far]  # `second` would compute the 40 shared tokens again
    sched.update(batch, {s.seq_id: [7] for s in batch.seqs})
    batch = sched.schedule()
    assert second in batch.seqs and second.num_cached_tokens == len(shared)
