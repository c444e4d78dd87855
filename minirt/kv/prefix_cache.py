"""PrefixCache: what the engine asks of the KV pool's books — who holds which block, and which
cached prompt prefix a new request can reuse. `BlockManager` ("hash": vLLM's hash-chained full
blocks) and `RadixCache` ("radix": SGLang's token radix tree) ship; a third is one class with
these methods, `LLM(prefix_cache=MyCache)`. `PrefixCacheHooks` gives each moment a cache may act
on a do-nothing default. Notebooks 01 (KV cache) and 11.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class PrefixCache(Protocol):
    """The block books. Sizes are in tokens unless named blocks; `seq_id` names a sequence."""

    num_blocks: int
    block_size: int
    tables: dict[int, list[int]]  # seq id -> its block ids, in logical order

    @property
    def num_free_blocks(self) -> int: ...  # blocks an allocation can get now (evictions too)

    @property
    def num_cached_blocks(self) -> int: ...

    def blocks_for(self, num_tokens: int) -> int: ...
    def block_table(self, seq_id: int) -> list[int]: ...
    def match_len(self, token_ids: Sequence[int]) -> int: ...  # never the last token
    def can_allocate(self, token_ids: Sequence[int], num_tokens: int) -> bool: ...
    def allocate(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> int: ...
    def can_append(self, seq_id: int, num_tokens: int) -> bool: ...
    def append(self, seq_id: int, num_tokens: int) -> None: ...
    def truncate(self, seq_id: int, num_tokens: int) -> list[int]: ...  # speculative rollback
    def free(self, seq_id: int) -> None: ...
    def evict(self, num_blocks: int | None = None) -> int: ...
    # The hooks (PrefixCacheHooks has a do-nothing default for each):
    def prepare_write(self, seq_id: int, start: int) -> list[tuple[int, int]]: ...
    def commit(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None: ...
    def uncommit(self, seq_id: int, num_tokens: int) -> None: ...
    def cache_computed(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None: ...
    def take_copies(self) -> list[tuple[int, int]]: ...
    def to_dict(self) -> dict: ...
    def check_invariants(self) -> None: ...


class PrefixCacheHooks:
    """Do-nothing defaults for the moments a cache may act on; override the ones you need."""

    def prepare_write(self, seq_id: int, start: int) -> list[tuple[int, int]]:
        """Scheduled to write from `start`: (src, dst) block copies to make first (copy-on-write
        of a block another sequence shares)."""
        return []

    def commit(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None:
        """Scheduled: the first `num_computed` tokens will have KV once this step has run."""

    def uncommit(self, seq_id: int, num_tokens: int) -> None:
        """The step failed or rolled back: only the first `num_tokens` tokens have valid KV."""

    def cache_computed(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None:
        """Computed: the first `num_computed` tokens have KV in the pool now."""

    def take_copies(self) -> list[tuple[int, int]]:
        """(src, dst) block copies that allocations since the last call need before the forward."""
        return []


class BlockTables(PrefixCacheHooks):
    """What both shipped caches share: a table per sequence, a free list whose front is reused
    first, growing a table; each says how many are free and takes a block (`_take_free`)."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise ValueError("the KV pool needs at least one block")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_list: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.tables: dict[int, list[int]] = {}  # seq id -> block ids, logical order

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def block_table(self, seq_id: int) -> list[int]:
        return self.tables[seq_id]

    def can_append(self, seq_id: int, num_tokens: int) -> bool:
        """Could `seq_id` grow to hold `num_tokens` tokens?"""
        return self.blocks_for(num_tokens) - len(self.tables[seq_id]) <= self.num_free_blocks

    def append(self, seq_id: int, num_tokens: int) -> None:
        """Grow `seq_id`'s table so it holds `num_tokens` tokens."""
        if not self.can_append(seq_id, num_tokens):
            raise RuntimeError(f"not enough free KV blocks to grow sequence {seq_id}")
        self._grow(seq_id, num_tokens)

    def _grow(self, seq_id: int, num_tokens: int) -> None:
        table = self.tables[seq_id]
        while len(table) < self.blocks_for(num_tokens):
            table.append(self._take_free())
