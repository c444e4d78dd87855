"""BlockManager: which physical KV blocks each sequence owns, and which are cached for reuse.

Invariant (`check_invariants`): a block is held by tables (ref_count = how many) or on the free
list with ref_count 0, where it may still hold a cached hash (vLLM-style prefix caching of *full*
blocks) until it is reused or evicted. Notebook 01 (KV cache) and lab 1 build this.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Sequence

from minirt.kv.prefix_cache import BlockTables


def block_hash(parent: int | None, token_ids: Sequence[int]) -> int:
    """Hash of a full block, chained to its parent's: equal hashes mean equal *prefixes*."""
    h = hashlib.sha256(b"root" if parent is None else parent.to_bytes(8, "little"))
    # packed in one call: a per-token loop was most of the vLLM preset's host time (bench sched)
    h.update(struct.pack(f"<{len(token_ids)}I", *token_ids))
    return int.from_bytes(h.digest()[:8], "little")


class BlockManager(BlockTables):
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        # The free list is LRU: the least recently freed is reused first (evicting its hash).
        super().__init__(num_blocks, block_size)
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_count = [0] * num_blocks
        self.block_hashes: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # hash -> block id
        self.seq_hashes: dict[int, list[int]] = {}  # seq id -> hashes of its published blocks

    # -- queries -------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free_list)

    @property
    def num_cached_blocks(self) -> int:
        return len(self.cached)

    def match_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Cached blocks covering the longest full-block prefix of `token_ids`, never its last
        token: its logits are needed, so at least one token is computed."""
        if not self.enable_prefix_caching:
            return []
        blocks, parent = [], None
        for i in range((len(token_ids) - 1) // self.block_size):
            parent = block_hash(parent, token_ids[i * self.block_size : (i + 1) * self.block_size])
            if parent not in self.cached:
                break
            blocks.append(self.cached[parent])
        return blocks

    def match_len(self, token_ids: Sequence[int]) -> int:
        """Tokens of the longest cached prefix: whole blocks only (the RadixCache's query too)."""
        return len(self.match_prefix(token_ids)) * self.block_size

    def can_allocate(self, token_ids: Sequence[int], num_tokens: int) -> bool:
        """Could a new sequence get blocks for its first `num_tokens` tokens right now?"""
        return self._fits(self.match_prefix(token_ids), num_tokens)

    def _fits(self, hits: list[int], num_tokens: int) -> bool:
        """Room for num_tokens with these cached blocks? (Cached blocks on the free list are
        reused, so they do not count as free.)"""
        hits = hits[: self.blocks_for(num_tokens)]
        reused_free = sum(1 for b in hits if self.ref_count[b] == 0)
        return self.blocks_for(num_tokens) - len(hits) <= self.num_free_blocks - reused_free

    # -- changes ---------------------------------------------------------------------------
    def allocate(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> int:
        """Create `seq_id`'s table: reuse cached prefix blocks, then fresh ones up to num_tokens.
        Returns the number of tokens whose KV is already in the pool (prefix-cache hits)."""
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id} already has blocks; free it first")
        hits = self.match_prefix(token_ids)  # hashed once: hashing is its host time
        if not self._fits(hits, num_tokens):
            raise RuntimeError(f"not enough free KV blocks for sequence {seq_id}")
        hits = hits[: self.blocks_for(num_tokens)]
        for b in hits:
            self._ref(b)
        self.tables[seq_id] = list(hits)
        self.seq_hashes[seq_id] = [self.block_hashes[b] for b in hits]
        self._grow(seq_id, num_tokens)
        return len(hits) * self.block_size

    def prepare_write(self, seq_id: int, start: int) -> list[tuple[int, int]]:
        """Copy-on-write: before writing from position `start`, un-share a partial block. Only
        a shared block (after `fork`) holding tokens before `start` needs a copy: its other holder
        will write *different* tokens into the same free slots. Shared blocks at or past `start`
        are prefix-cache hits on KV this very step computes: written in place. Called *before*
        `commit`: a block published first could be hit by a request admitted in the same step,
        which would then read the old block while the writer fills the copy. Returns (src, dst)
        pairs whose KV the runner copies before the forward."""
        i, table = start // self.block_size, self.tables[seq_id]
        if start % self.block_size == 0 or i >= len(table) or self.ref_count[table[i]] == 1:
            return []
        if not self.free_list:
            raise RuntimeError("no free block for copy-on-write; preempt a sequence first")
        src, dst = table[i], self._take_free()
        self.ref_count[src] -= 1
        table[i] = dst
        return [(src, dst)]

    def commit(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None:
        """Publish the hashes of blocks that are full once `num_computed` tokens have KV. The
        scheduler commits when it schedules the tokens, so a request admitted later in the same
        step already hits: each layer stores the whole batch's K/V before attending."""
        if not self.enable_prefix_caching:
            return
        table, hashes, bs = self.tables[seq_id], self.seq_hashes[seq_id], self.block_size
        while len(hashes) < num_computed // bs:
            i = len(hashes)
            tokens = token_ids[i * bs : (i + 1) * bs]
            if min(tokens) < 0:  # an overlap_schedule placeholder: published once it is known
                break
            h = block_hash(hashes[-1] if hashes else None, tokens)
            hashes.append(h)
            if h not in self.cached and self.block_hashes[table[i]] is None:
                self.cached[h] = table[i]
                self.block_hashes[table[i]] = h

    def uncommit(self, seq_id: int, num_tokens: int) -> None:
        """Withdraw the hashes this sequence published past `num_tokens` (their KV is not valid:
        the step that was to compute it failed, or the tokens were rolled back)."""
        table, hashes = self.tables[seq_id], self.seq_hashes[seq_id]
        while len(hashes) > num_tokens // self.block_size:
            b = table[len(hashes) - 1]
            if self.block_hashes[b] == hashes.pop():
                self._forget(b)

    def truncate(self, seq_id: int, num_tokens: int) -> list[int]:
        """Roll `seq_id` back to its first `num_tokens` tokens (speculation rejected the rest):
        withdraw the hashes of blocks no longer full of valid KV, free the blocks past the new end
        (returned; the dead slots of the last kept block are overwritten later). No KV moves."""
        table = self.tables[seq_id]
        if num_tokens > len(table) * self.block_size:
            raise ValueError(f"cannot truncate sequence {seq_id} to {num_tokens} tokens: it "
                             f"holds only {len(table) * self.block_size} slots")  # fmt: skip
        self.uncommit(seq_id, num_tokens)
        freed = []
        while len(table) > self.blocks_for(num_tokens):
            b = table.pop()
            self.ref_count[b] -= 1
            if self.ref_count[b] == 0:
                self.free_list[b] = None
                self.free_list.move_to_end(b, last=False)  # nothing cached in it: reuse first
                freed.append(b)
        return freed

    def fork(self, parent_id: int, child_id: int) -> None:
        """The child shares every block of the parent (parallel sampling, beam search)."""
        if child_id in self.tables:
            raise ValueError(f"sequence {child_id} already has blocks")
        for b in self.tables[parent_id]:
            self._ref(b)
        self.tables[child_id] = list(self.tables[parent_id])
        self.seq_hashes[child_id] = list(self.seq_hashes[parent_id])

    def free(self, seq_id: int) -> None:
        """Release a sequence's blocks; cached ones stay findable until their block is reused."""
        for b in reversed(self.tables.pop(seq_id)):
            self.ref_count[b] -= 1
            if self.ref_count[b] == 0:
                self.free_list[b] = None  # most recently freed goes last: evicted last
        self.seq_hashes.pop(seq_id)

    def evict(self, num_blocks: int | None = None) -> int:
        """Forget the cached content of up to `num_blocks` free blocks (default all), LRU first."""
        cached = [b for b in self.free_list if self.block_hashes[b] is not None][:num_blocks]
        for b in cached:
            self._forget(b)
        return len(cached)

    # -- internals -------------------------------------------------------------------------
    def _take_free(self) -> int:
        b, _ = self.free_list.popitem(last=False)
        self._forget(b)  # its old content is about to be overwritten
        self.ref_count[b] = 1
        return b

    def _ref(self, b: int) -> None:
        if self.ref_count[b] == 0:
            self.free_list.pop(b, None)
        self.ref_count[b] += 1

    def _forget(self, b: int) -> None:
        h = self.block_hashes[b]
        if h is not None:
            del self.cached[h]
            self.block_hashes[b] = None

    # -- plain data for the dashboard and the tests --------------------------------------
    def to_dict(self) -> dict:
        return {
            "num_blocks": self.num_blocks,
            "block_size": self.block_size,
            "ref_count": list(self.ref_count),
            "block_hashes": [None if h is None else f"{h:016x}" for h in self.block_hashes],
            "free": list(self.free_list),
            "tables": {str(k): list(v) for k, v in self.tables.items()},
            "num_cached_blocks": self.num_cached_blocks,
        }

    def check_invariants(self) -> None:
        held = Counter(b for table in self.tables.values() for b in table)
        holders = [held[b] for b in range(self.num_blocks)]
        assert self.ref_count == holders, f"ref counts {self.ref_count} != holders {holders}"
        for b in range(self.num_blocks):
            assert (b in self.free_list) == (holders[b] == 0), f"block {b}: free-list wrong"
        for h, b in self.cached.items():
            assert self.block_hashes[b] == h, f"cached hash of block {b} is stale"
        assert sum(h is not None for h in self.block_hashes) == len(self.cached)
