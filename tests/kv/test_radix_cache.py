"""RadixCache: examples, then a hypothesis state machine over a fake KV pool.

The fake pool stores, at each slot, the prefix its token ends (the KV of a token is a function of
its whole prefix), so "cached KV equals recomputed KV" is an equality of tuples.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minirt.kv.radix_cache import RadixCache
from minirt.kv.radix_tree import all_nodes, path_slots


def _lcp(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_a_match_is_token_granular_and_copies_the_partly_matched_block():
    rc = RadixCache(num_blocks=8, block_size=4)
    prompt = list(range(10))
    assert rc.allocate(1, prompt, 10) == 0
    rc.cache_computed(1, prompt, 10)
    other = prompt[:7] + [99, 98]  # agrees on 7 tokens: one full block and 3 tokens of the next
    assert rc.allocate(2, other, 9) == 7
    assert rc.block_table(2)[0] == rc.block_table(1)[0]  # the full block is shared
    assert rc.take_copies() == [(rc.block_table(1)[1], rc.block_table(2)[1])]
    assert rc.take_copies() == []  # handed out once
    rc.check_invariants()


def test_the_last_prompt_token_is_never_a_hit_and_a_locked_path_survives_evict():
    rc = RadixCache(num_blocks=4, block_size=2)
    prompt = [5, 6, 7, 8]
    rc.allocate(1, prompt, 4)
    rc.cache_computed(1, prompt, 4)
    assert rc.match_len(prompt) == 3
    assert rc.evict() == 0 and rc.match_len(prompt + [1]) == 4  # locked by sequence 1
    rc.free(1)
    assert rc.num_free_blocks == 4 and len(rc.free_list) == 2  # two are evictable
    assert rc.evict() == 2 and rc.match_len(prompt + [1]) == 0
    rc.check_invariants()


def test_eviction_takes_the_least_recently_used_leaf_first():
    rc = RadixCache(num_blocks=6, block_size=2)
    for seq, prompt in enumerate([[1, 2, 3, 4], [1, 2, 5, 6], [7, 7, 7, 7]]):
        rc.allocate(seq, prompt, 4)
        rc.cache_computed(seq, prompt, 4)
        rc.free(seq)
    rc.allocate(9, [1, 2, 3, 4, 0], 5)  # touches [1, 2, 3, 4] again, then lets it go
    rc.free(9)
    assert rc.evict(1) == 1
    assert rc.match_len([1, 2, 5, 6, 0]) == 2  # the branch used longest ago lost its leaf
    assert rc.match_len([1, 2, 3, 4, 0]) == 4 and rc.match_len([7, 7, 7, 7, 0]) == 4


class RadixMachine(RuleBasedStateMachine):
    """Random admissions, growth, frees and evictions; KV 'computed' into a fake pool."""

    def __init__(self):
        super().__init__()
        self.bs = 4
        self.rc = RadixCache(num_blocks=12, block_size=self.bs)
        self.pool: list[tuple | None] = [None] * (12 * self.bs)
        self.running: dict[int, list[int]] = {}
        self.inserted: list[list[int]] = []
        self.next_id = 0

    def _slot(self, seq: int, p: int) -> int:
        return self.rc.block_table(seq)[p // self.bs] * self.bs + p % self.bs

    def _compute(self, seq: int, tokens: list[int], start: int) -> None:
        for p in range(start, len(tokens)):
            self.pool[self._slot(seq, p)] = tuple(tokens[: p + 1])
        self.rc.cache_computed(seq, tokens, len(tokens))
        self.inserted.append(list(tokens))

    @rule(tokens=st.lists(st.integers(0, 2), min_size=2, max_size=14))
    def admit(self, tokens):
        expect = max((_lcp(tokens[:-1], t) for t in self.inserted), default=0)
        m = self.rc.match_len(tokens)
        if self.rc.num_evicted_tokens == 0:  # nothing dropped yet: the match is the longest
            assert m == expect, f"matched {m} tokens, longest cached prefix is {expect}"
        assert m <= expect
        if not self.rc.can_allocate(tokens, len(tokens)):
            return
        seq, self.next_id = self.next_id, self.next_id + 1
        assert self.rc.allocate(seq, tokens, len(tokens)) == m
        bs = self.bs
        for src, dst in self.rc.take_copies():
            self.pool[dst * bs : (dst + 1) * bs] = self.pool[src * bs : (src + 1) * bs]
        for p in range(m):  # cached KV equals what computing the prefix would give
            assert self.pool[self._slot(seq, p)] == tuple(tokens[: p + 1])
        self._compute(seq, tokens, m)
        self.running[seq] = tokens

    @precondition(lambda self: self.running)
    @rule(data=st.data(), extra=st.lists(st.integers(0, 2), min_size=1, max_size=6))
    def grow(self, data, extra):
        seq = data.draw(st.sampled_from(sorted(self.running)))
        tokens = self.running[seq] + extra
        if not self.rc.can_append(seq, len(tokens)):
            return
        self.rc.append(seq, len(tokens))
        self._compute(seq, tokens, len(self.running[seq]))
        self.running[seq] = tokens

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data):
        seq = data.draw(st.sampled_from(sorted(self.running)))
        self.rc.free(seq)
        del self.running[seq]

    @rule(n=st.integers(1, 4))
    def evict(self, n):
        self.rc.evict(n)

    @invariant()
    def bookkeeping_holds(self):
        self.rc.check_invariants()

    @invariant()
    def locked_paths_and_cached_kv_survive(self):
        for seq, tokens in self.running.items():  # eviction never drops a locked node
            assert self.rc.match_len(tokens + [0]) == len(tokens)
            for p in range(len(tokens)):  # nobody overwrote a running sequence's KV
                assert self.pool[self._slot(seq, p)] == tuple(tokens[: p + 1])
        for node in all_nodes(self.rc.root):  # every cached slot holds its own prefix's KV
            path = path_slots(node)
            prefix = self.pool[path[-1]]
            assert prefix is not None and len(prefix) == len(path)
            for i, s in enumerate(path):
                assert self.pool[s] == prefix[: i + 1]

    def teardown(self):
        for seq in list(self.running):  # nothing leaks: all blocks come back
            self.rc.free(seq)
        self.rc.evict()
        assert len(self.rc.free_list) == self.rc.num_blocks and not all_nodes(self.rc.root)
        self.rc.check_invariants()


RadixMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_radix_cache_state_machine = RadixMachine.TestCase
