import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minirt.kv import BlockManager, block_hash


def test_hash_chain_depends_on_the_whole_prefix():
    a = block_hash(None, [1, 2, 3, 4])
    assert block_hash(a, [5, 6, 7, 8]) != block_hash(block_hash(None, [9, 2, 3, 4]), [5, 6, 7, 8])
    assert block_hash(None, [1, 2, 3, 4]) == a  # deterministic across calls and processes


def test_a_block_hash_is_sha256_of_the_parent_and_each_token_as_four_little_endian_bytes():
    import hashlib

    def one_token_at_a_time(parent, tokens):  # the definition, as first written
        h = hashlib.sha256(b"root" if parent is None else parent.to_bytes(8, "little"))
        for t in tokens:
            h.update(int(t).to_bytes(4, "little"))
        return int.from_bytes(h.digest()[:8], "little")

    tokens = [0, 1, 255, 256, 65535, 151935, 2**32 - 1]
    assert block_hash(None, tokens) == one_token_at_a_time(None, tokens)
    parent = block_hash(None, tokens)
    assert block_hash(parent, tokens[::-1]) == one_token_at_a_time(parent, tokens[::-1])
    assert block_hash(None, []) == one_token_at_a_time(None, [])


def test_a_second_sequence_with_the_same_prefix_reuses_the_full_blocks():
    bm = BlockManager(num_blocks=8, block_size=4)
    prompt = list(range(10))  # blocks [0..3] [4..7] full, [8, 9] partial
    assert bm.allocate(1, prompt, 10) == 0
    bm.commit(1, prompt, 10)
    assert bm.allocate(2, prompt[:9] + [99], 10) == 8
    assert bm.block_table(2)[:2] == bm.block_table(1)[:2]
    assert bm.block_table(2)[2] != bm.block_table(1)[2]
    assert [bm.ref_count[b] for b in bm.block_table(1)] == [2, 2, 1]
    bm.check_invariants()


def test_the_last_prompt_token_is_never_a_cache_hit():
    bm = BlockManager(num_blocks=8, block_size=4)
    prompt = list(range(8))
    bm.allocate(1, prompt, 8)
    bm.commit(1, prompt, 8)
    bm.free(1)
    # both blocks are cached, but the last token must be computed to get logits
    assert bm.allocate(2, prompt, 8) == 4


def test_freed_blocks_stay_cached_until_reused_and_evict_forgets_them():
    bm = BlockManager(num_blocks=4, block_size=2)
    bm.allocate(1, [1, 2, 3, 4, 5], 5)
    bm.commit(1, [1, 2, 3, 4, 5], 5)
    bm.free(1)
    assert bm.num_free_blocks == 4 and bm.num_cached_blocks == 2
    assert len(bm.match_prefix([1, 2, 3, 4, 9])) == 2
    assert bm.evict() == 2
    assert bm.match_prefix([1, 2, 3, 4, 9]) == [] and bm.num_cached_blocks == 0
    bm.check_invariants()


def test_fork_shares_blocks_and_copy_on_write_unshares_the_written_one():
    bm = BlockManager(num_blocks=6, block_size=4)
    bm.allocate(1, list(range(6)), 6)
    bm.fork(1, 2)
    assert bm.block_table(1) == bm.block_table(2)
    copies = bm.prepare_write(2, 6)  # the child writes into the shared partial block
    assert len(copies) == 1 and copies[0][0] == bm.block_table(1)[1]
    assert bm.block_table(2)[1] == copies[0][1] and bm.block_table(2)[0] == bm.block_table(1)[0]
    bm.check_invariants()


def test_a_prefix_hit_on_blocks_computed_this_step_is_written_in_place_not_copied():
    bm = BlockManager(num_blocks=6, block_size=4)
    prompt = list(range(9))
    bm.allocate(1, prompt, 9)
    bm.commit(1, prompt, 9)  # published at scheduling time, computed in the same step
    assert bm.allocate(2, prompt[:8] + [42], 9) == 8  # hits blocks the step is about to fill
    assert bm.prepare_write(1, 0) == []  # seq 1 must fill the shared blocks itself
    bm.check_invariants()


def test_can_allocate_counts_cache_hits_that_sit_on_the_free_list():
    bm = BlockManager(num_blocks=2, block_size=2)
    bm.allocate(1, [1, 2, 3], 3)
    bm.commit(1, [1, 2, 3], 3)
    bm.free(1)
    # 2 free blocks, one of which is the cached hit: [1,2] hit + [3, x] needs one more -> fits
    assert bm.can_allocate([1, 2, 3], 3)
    assert not bm.can_allocate([1, 2, 3, 4, 5, 6], 6)


class BlockManagerMachine(RuleBasedStateMachine):
    """Random allocate/append/fork/free/evict never leaks, double-frees, or breaks ref counts."""

    def __init__(self):
        super().__init__()
        self.bm = BlockManager(num_blocks=12, block_size=4)
        self.tokens: dict[int, list[int]] = {}
        self.next_id = 0

    @rule(prompt=st.lists(st.integers(0, 3), min_size=1, max_size=20))
    def allocate(self, prompt):
        if self.bm.can_allocate(prompt, len(prompt)):
            cached = self.bm.allocate(self.next_id, prompt, len(prompt))
            assert cached % 4 == 0 and cached < len(prompt)
            self.bm.commit(self.next_id, prompt, len(prompt))
            self.tokens[self.next_id] = list(prompt)
            self.next_id += 1

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), extra=st.lists(st.integers(0, 3), min_size=1, max_size=6))
    def append(self, data, extra):
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        toks = self.tokens[sid] + extra
        if self.bm.can_append(sid, len(toks)):
            self.bm.append(sid, len(toks))
            if self.bm.num_free_blocks >= 1:  # room for a copy-on-write
                self.bm.prepare_write(sid, len(self.tokens[sid]))
                self.bm.commit(sid, toks, len(toks))
                self.tokens[sid] = toks

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def fork(self, data):
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        self.bm.fork(sid, self.next_id)
        self.tokens[self.next_id] = list(self.tokens[sid])
        self.next_id += 1

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def free(self, data):
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        self.bm.free(sid)
        del self.tokens[sid]

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def uncommit(self, data):
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        self.bm.uncommit(sid, data.draw(st.integers(0, len(self.tokens[sid]))))

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def rollback(self, data):
        """Speculative decoding rejected the tail: keep the first n tokens."""
        sid = data.draw(st.sampled_from(sorted(self.tokens)))
        n = data.draw(st.integers(1, len(self.tokens[sid])))
        table_before = list(self.bm.block_table(sid))
        freed = self.bm.truncate(sid, n)
        self.tokens[sid] = self.tokens[sid][:n]
        assert self.bm.block_table(sid) == table_before[: self.bm.blocks_for(n)]
        assert len(self.bm.seq_hashes[sid]) <= n // 4  # no hash over rolled-back tokens
        assert all(b in self.bm.free_list for b in freed)
        assert set(freed) <= set(table_before[self.bm.blocks_for(n) :])

    @rule(n=st.none() | st.integers(0, 5))
    def evict(self, n):
        self.bm.evict(n)

    @invariant()
    def invariants_hold(self):
        self.bm.check_invariants()
        assert len(self.bm.tables) == len(self.tokens)
        for sid, toks in self.tokens.items():
            assert len(self.bm.block_table(sid)) >= self.bm.blocks_for(len(toks))

    def teardown(self):
        for sid in list(self.tokens):
            self.bm.free(sid)
        self.bm.check_invariants()
        assert self.bm.num_free_blocks == self.bm.num_blocks  # nothing leaked


TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_uncommit_withdraws_only_the_hashes_past_the_valid_tokens():
    bm = BlockManager(num_blocks=4, block_size=2)
    bm.allocate(1, [1, 2, 3, 4, 5], 5)
    bm.commit(1, [1, 2, 3, 4, 5], 5)
    assert bm.num_cached_blocks == 2
    bm.uncommit(1, 3)  # the KV of tokens 3.. never got computed
    assert len(bm.match_prefix([1, 2, 3, 4, 9])) == 1
    bm.check_invariants()


def test_allocating_twice_for_one_sequence_is_an_error():
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.allocate(1, [1], 1)
    with pytest.raises(ValueError, match="already has blocks"):
        bm.allocate(1, [1], 1)


def test_the_seeds_rollback_five_drafted_the_third_rejected():
    """10 tokens in the cache (block size 4), 5 drafted tokens verified in one step: the table
    grows to 15 slots; the 3rd draft is rejected, so 2 are kept (12 tokens): the 4th block,
    holding only rejected slots, goes back to the free list, and no hash covers a rejected
    token. The KV itself is not touched: rollback is bookkeeping."""
    bm = BlockManager(num_blocks=8, block_size=4)
    prompt = list(range(10))
    bm.allocate(1, prompt, 10)
    bm.commit(1, prompt, 10)
    drafted = prompt + [10, 11, 12, 13, 14]
    bm.append(1, 15)
    bm.commit(1, drafted, 15)  # published when scheduled, like any step
    before = list(bm.block_table(1))
    assert len(before) == 4 and bm.num_cached_blocks == 3
    freed = bm.truncate(1, 12)  # 10 + 2 accepted
    assert freed == [before[3]] and bm.block_table(1) == before[:3]
    assert bm.num_cached_blocks == 3  # blocks 0-2 hold tokens 0-11: all valid
    bm.truncate(1, 11)  # one more back: block 2 is no longer full of valid tokens
    assert bm.num_cached_blocks == 2
    assert len(bm.match_prefix(drafted)) == 2
    bm.check_invariants()
    with pytest.raises(ValueError, match="holds only"):
        bm.truncate(1, 99)
