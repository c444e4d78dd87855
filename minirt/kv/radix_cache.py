"""RadixCache: SGLang-style token-level prefix cache (a radix tree) over the same paged KV pool.

A node holds a run of tokens and their KV *slots*; position p sits at offset p % block_size, so
block tables, pool and kernels stay those of `BlockManager`. A match shares the full blocks of
the prefix read-only and gives a match ending inside a block a private copy of it (no slot the
tree holds is written again). Sequences lock their path; eviction drops unlocked leaves, least
recently used first. Tokens enter after their forward (`cache_computed`). Notebook 11.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from minirt.kv.prefix_cache import BlockTables
from minirt.kv.radix_tree import RadixNode, all_nodes, check_invariants, match, touch


class RadixCache(BlockTables):
    """A `PrefixCache` like `BlockManager` with a radix tree as the cache; its tokens enter the
    tree after their forward (`cache_computed`): the schedule-time hooks do nothing."""

    def __init__(self, num_blocks: int, block_size: int):
        super().__init__(num_blocks, block_size)
        self._ids = itertools.count(1)
        self.root = RadixNode([], [], lock_ref=1)  # never evicted
        self.table_ref = [0] * num_blocks  # block tables holding the block
        self.tree_ref = [0] * num_blocks  # tree nodes with a slot in the block
        self.locked_ref = [0] * num_blocks  # of those, locked ones
        self._num_cached_blocks = 0  # blocks with tree_ref > 0
        self.evictable: set[int] = set()  # only unlocked nodes hold it: freed by evicting them
        self.seq_nodes: dict[int, RadixNode] = {}  # seq id -> the node its lock sits on
        self.copies: list[tuple[int, int]] = []  # (src, dst) blocks to copy before the forward
        self.clock = self.hit_tokens = self.num_evicted_tokens = 0

    # -- queries -------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can get: free ones, and ones that evicting unlocked nodes frees."""
        return len(self.free_list) + len(self.evictable)

    @property
    def num_cached_blocks(self) -> int:
        return self._num_cached_blocks  # kept by _attach: the trace asks every step

    @property
    def num_cached_tokens(self) -> int:
        return sum(len(n.key) for n in all_nodes(self.root))

    def match_len(self, token_ids: Sequence[int]) -> int:
        """Tokens of the longest cached prefix (never the last token: its logits are needed)."""
        return match(self.root, token_ids[:-1])[1]

    def match_node(self, token_ids: Sequence[int]) -> RadixNode:
        """The deepest node the match reaches (the DFS-weight policy groups requests by it)."""
        return match(self.root, token_ids[:-1])[0][-1]

    def can_allocate(self, token_ids: Sequence[int], num_tokens: int) -> bool:
        return self._fits(*match(self.root, token_ids[:-1]), num_tokens)

    def _fits(self, nodes: list[RadixNode], m: int, num_tokens: int) -> bool:
        """Room for a table of num_tokens whose match is (nodes, m)? Evictable blocks count as
        free, except those of the matched path (the allocation locks them)."""
        m = min(m, num_tokens)
        need = self.blocks_for(num_tokens) - len(self._shared_blocks(nodes, m))
        if need <= len(self.free_list):  # the usual case: no eviction needed
            return True
        # The lock pins the first m matched slots' blocks (the split leaves the tail evictable).
        slots = [s for n in nodes[1:] for s in n.slots][:m]
        pinned = {s // self.block_size for s in slots}
        return need <= self.num_free_blocks - len(pinned & self.evictable)

    # -- changes ---------------------------------------------------------------------------
    def allocate(self, seq_id: int, token_ids: Sequence[int], num_tokens: int) -> int:
        """Give `seq_id` a table: shared full blocks of its cached prefix, a private copy of a
        partly matched block, fresh blocks up to num_tokens. Returns the cached token count."""
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id} already has blocks; free it first")
        nodes, m = match(self.root, token_ids[:-1])
        if not self._fits(nodes, m, num_tokens):
            raise RuntimeError(f"not enough free KV blocks for sequence {seq_id}")
        m = min(m, num_tokens)
        table = self._shared_blocks(nodes, m)  # before the split below: it keeps those slots
        node = self._split(token_ids, m)
        self._lock(node, +1)
        self._touch(node)
        self.seq_nodes[seq_id] = node
        self._table_refs(table, +1)
        self.tables[seq_id] = table
        if m % self.block_size:  # the match ends inside a block: copy its cached head
            dst = self._take_free()
            table.append(dst)
            self.copies.append((node.slots[-1] // self.block_size, dst))  # node ends at m
        self._grow(seq_id, num_tokens)
        self.hit_tokens += m
        return m

    def take_copies(self) -> list[tuple[int, int]]:
        """The (src, dst) block copies allocations asked for since the last call."""
        out, self.copies = self.copies, []
        return out

    def cache_computed(self, seq_id: int, token_ids: Sequence[int], num_computed: int) -> None:
        """Insert the first `num_computed` tokens (their KV is in the pool) and move the
        sequence's lock down to their node (SGLang's cache_unfinished_req)."""
        table, bs = self.tables[seq_id], self.block_size
        _, m = match(self.root, token_ids[:num_computed])
        parent = self._split(token_ids, m)
        if m < num_computed:
            key = list(token_ids[m:num_computed])
            slots = []  # slot of position p: table[p // bs] * bs + p % bs, a block at a time
            for i in range(m // bs, self.blocks_for(num_computed)):
                lo, hi = max(m, i * bs), min(num_computed, (i + 1) * bs)
                slots += range(table[i] * bs + lo % bs, table[i] * bs + (hi - 1) % bs + 1)
            child = RadixNode(key, slots, parent, node_id=next(self._ids))
            parent.children[key[0]] = child
            self._attach(child)
            parent = child
        self._touch(parent)
        self._lock(parent, +1)  # before the old lock goes: the shared path stays locked
        self._lock(self.seq_nodes[seq_id], -1)
        self.seq_nodes[seq_id] = parent

    def truncate(self, seq_id: int, num_tokens: int) -> list[int]:
        """Roll back to `num_tokens` (speculative decoding): drop blocks past the end."""
        table, freed = self.tables[seq_id], []
        if num_tokens > len(table) * self.block_size:
            raise ValueError(f"cannot truncate sequence {seq_id} to {num_tokens} tokens")
        while len(table) > self.blocks_for(num_tokens):
            b = table.pop()
            self._table_refs([b], -1)
            if b in self.free_list:
                freed.append(b)
        return freed

    def free(self, seq_id: int) -> None:
        """Release the table and the lock; inserted tokens stay cached until evicted."""
        self._table_refs(reversed(self.tables.pop(seq_id)), -1)
        self._lock(self.seq_nodes.pop(seq_id), -1)

    def evict(self, num_blocks: int | None = None) -> int:
        """Drop unlocked leaves, least recently used first, until `num_blocks` blocks are free
        again (default: every unlocked node). Returns the number of blocks freed."""
        leaves = [n for n in all_nodes(self.root) if self._evictable_leaf(n)]
        heap = [(n.last_access, n.node_id, n) for n in leaves]
        heapq.heapify(heap)
        before = len(self.free_list)
        while heap and (num_blocks is None or len(self.free_list) - before < num_blocks):
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            del parent.children[node.key[0]]
            self._detach(node)
            self.num_evicted_tokens += len(node.key)
            if parent is not self.root and self._evictable_leaf(parent):
                heapq.heappush(heap, (parent.last_access, parent.node_id, parent))
        return len(self.free_list) - before

    # -- the tree ------------------------------------------------------------------------------
    def _touch(self, node: RadixNode) -> None:
        self.clock += 1
        touch(node, self.clock)

    def _split(self, token_ids: Sequence[int], m: int) -> RadixNode:
        """The node whose path ends exactly after `m` cached tokens of token_ids (splitting
        the node the match ends inside, as SGLang does, so that a lock covers just the match)."""
        node, pos = self.root, 0
        while pos < m:
            child = node.children[token_ids[pos]]
            if pos + len(child.key) > m:
                k = m - pos
                self._detach(child)
                head = RadixNode(child.key[:k], child.slots[:k], node, {child.key[k]: child},
                                 child.lock_ref, child.last_access, next(self._ids))  # fmt: skip
                node.children[head.key[0]] = head
                child.key, child.slots, child.parent = child.key[k:], child.slots[k:], head
                self._attach(head)
                self._attach(child)
                return head
            pos += len(child.key)
            node = child
        return node

    def _shared_blocks(self, nodes: list[RadixNode], m: int) -> list[int]:
        """Blocks shared read-only for the m matched tokens of the path `nodes` (root first): per
        full block, the block of its last slot (whoever inserted that slot had the whole block of
        the prefix in the same block, so its KV is valid from the block's first slot on)."""
        bs, out, depth = self.block_size, [], 0
        end = m // bs * bs  # positions bs - 1, 2 bs - 1, ... below end are block ends
        for n in nodes[1:]:
            if depth >= end:
                break
            first = depth + (bs - 1 - depth) % bs  # the first block end in this node
            out += [s // bs for s in n.slots[first - depth : end - depth : bs]]
            depth += len(n.key)
        return out

    def _blocks(self, node: RadixNode) -> list[int]:
        """The blocks a node's slots lie in. Its tokens came from one table, so the slots of
        one block of positions share a block: the first slot and each block start say all."""
        bs, slots = self.block_size, node.slots
        heads = slots[(-slots[0]) % bs :: bs] if slots else []
        return sorted({s // bs for s in slots[:1] + heads})

    def _attach(self, node: RadixNode, d: int = 1) -> None:
        """Count the node's blocks in the tree (d = 1), or no longer (d = -1)."""
        for b in self._blocks(node):
            self.tree_ref[b] += d
            if self.tree_ref[b] == (d > 0):  # its first node came (0 -> 1) or its last went
                self._num_cached_blocks += d
            if node.lock_ref:
                self.locked_ref[b] += d
            if not self.table_ref[b]:  # a block in a table stays in use, whatever the tree does
                self._update(b)

    def _detach(self, node: RadixNode) -> None:
        self._attach(node, -1)

    def _lock(self, node: RadixNode, d: int) -> None:
        """Add d to the lock of every node from `node` up to the root; a node's blocks stop
        (start) being evictable when its first lock comes (its last one goes)."""
        while node is not self.root:
            was = node.lock_ref > 0
            node.lock_ref += d
            if was != (node.lock_ref > 0):
                for b in self._blocks(node):
                    self.locked_ref[b] += d
                    if not self.table_ref[b]:  # (as in _attach)
                        self._update(b)
            node = node.parent

    def _evictable_leaf(self, n: RadixNode) -> bool:
        return n is not self.root and not n.children and n.lock_ref == 0

    # -- blocks ---------------------------------------------------------------------------------
    def _table_refs(self, blocks, d: int) -> None:
        """Add d to the table count of each block. A block's place (free, evictable, in use)
        changes only when its first table comes or its last goes, so only then is `_update`
        called: a shared prefix's block is admitted and freed by hundreds of tables."""
        ref = self.table_ref
        for b in blocks:
            ref[b] += d
            if ref[b] == (d > 0):  # 0 -> 1 or 1 -> 0
                self._update(b)

    def _update(self, b: int) -> None:
        """Put block b where its counts say: free, evictable (only unlocked nodes), or in use."""
        if self.table_ref[b] == 0 and self.tree_ref[b] == 0:
            self.evictable.discard(b)
            self.free_list.setdefault(b)  # at the end when it comes; a free block keeps its place
        elif self.table_ref[b] == 0 and self.locked_ref[b] == 0:
            self.free_list.pop(b, None)
            self.evictable.add(b)
        else:
            self.free_list.pop(b, None)
            self.evictable.discard(b)

    def _take_free(self) -> int:
        if not self.free_list:
            self.evict(1)
        if not self.free_list:
            raise RuntimeError("no free KV block, and no unlocked cached node left to evict")
        b, _ = self.free_list.popitem(last=False)
        self.table_ref[b] = 1  # off the free list, in no node: in use once in the table it joins
        return b

    # -- plain data for the dashboard and the tests --------------------------------------
    def to_dict(self) -> dict:
        return {
            "kind": "radix",
            "num_blocks": self.num_blocks,
            "block_size": self.block_size,
            "free": list(self.free_list),
            "evictable": sorted(self.evictable),
            "tables": {str(k): list(v) for k, v in self.tables.items()},
            "nodes": [
                {
                    "id": n.node_id,
                    "parent": n.parent.node_id,
                    "tokens": list(n.key),
                    "blocks": self._blocks(n),
                    "lock_ref": n.lock_ref,
                    "last_access": n.last_access,
                }  # fmt: skip
                for n in sorted(all_nodes(self.root), key=lambda n: n.node_id)
            ],
            "num_cached_blocks": self.num_cached_blocks,
            "num_cached_tokens": self.num_cached_tokens,
            "hit_tokens": self.hit_tokens,
        }

    def check_invariants(self) -> None:
        check_invariants(self)  # minirt/kv/radix_tree.py
