"""The radix tree under `RadixCache`: nodes of tokens with their pool slots, and walks over them.

Children are keyed by their first token, so a walk down compares one edge at a time.
`check_invariants` recomputes every count the cache keeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class RadixNode:
    key: list[int]  # the tokens on the edge from the parent
    slots: list[int]  # their KV slots: block * block_size + position % block_size
    parent: RadixNode | None = None
    children: dict[int, RadixNode] = field(default_factory=dict)  # first token -> child
    lock_ref: int = 0  # running sequences whose path goes through this node
    last_access: int = 0  # logical clock, for LRU eviction
    node_id: int = 0


def match(root: RadixNode, tokens: Sequence[int]) -> tuple[list[RadixNode], int]:
    """Walk down while tokens agree: the nodes touched (the last may match only in part)
    and the number of tokens matched."""
    node, m, nodes = root, 0, [root]
    while m < len(tokens) and tokens[m] in node.children:
        child = node.children[tokens[m]]
        k = common_len(child.key, tokens, m)
        nodes.append(child)
        m += k
        if k < len(child.key):
            break
        node = child
    return nodes, m


def insert(root: RadixNode, tokens: list[int]) -> None:
    """Add `tokens` as a path of a token-only tree (nodes without slots), splitting the edge
    where they leave it. The scheduler's in-batch check keeps this step's prompts in one."""
    node, pos = root, 0
    while pos < len(tokens):
        child = node.children.get(tokens[pos])
        if child is None:
            node.children[tokens[pos]] = RadixNode(tokens[pos:], [], node)
            return
        k = common_len(child.key, tokens, pos)
        if k < len(child.key):  # leave inside the edge: split it at k
            head = RadixNode(child.key[:k], [], node, {child.key[k]: child})
            node.children[tokens[pos]] = head
            child.key, child.parent = child.key[k:], head
            child = head
        pos += k
        node = child


def common_len(key: Sequence[int], tokens: Sequence[int], start: int = 0) -> int:
    """How many leading tokens of `key` equal tokens[start:]. List slices compare in C: all of
    it at once (the usual case), else slices of doubling length (8, 16, 32, ...) until one
    differs, then a binary search inside it. A token-by-token Python loop here cost more than
    the forward on a GPU (bench sched: LPM ordering 256 prompts of ~900 tokens took 36 ms)."""
    n = min(len(key), len(tokens) - start)
    key, tokens = key[:n], tokens[start : start + n]
    if type(key) is not type(tokens):  # a tuple never equals a list
        key, tokens = list(key), list(tokens)
    if key[:8] == tokens[:8] and key == tokens:  # the usual case: the whole edge matches
        return n
    lo, step = 0, 8  # key[:lo] matches
    while lo < n:
        hi = min(n, lo + step)
        if key[lo:hi] != tokens[lo:hi]:
            break
        lo, step = hi, 2 * step
    else:
        return n
    hi -= 1  # key[:hi + 1] does not match
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if key[lo:mid] == tokens[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def path_slots(node: RadixNode) -> list[int]:
    parts = []
    while node.parent is not None:
        parts.append(node.slots)
        node = node.parent
    return [s for part in reversed(parts) for s in part]


def all_nodes(root: RadixNode) -> list[RadixNode]:
    """Every node below the root."""
    out, stack = [], list(root.children.values())
    while stack:
        n = stack.pop()
        out.append(n)
        stack += n.children.values()
    return out


def touch(node: RadixNode, clock: int) -> None:
    """Mark `node` and its ancestors used at `clock` (LRU eviction takes the oldest leaf)."""
    while node is not None:
        node.last_access = clock
        node = node.parent


def check_invariants(cache) -> None:  # cache: a RadixCache
    """The RadixCache's counts recomputed from its tables and tree (the property tests call it)."""
    bs, nodes = cache.block_size, all_nodes(cache.root)
    held = Counter(b for table in cache.tables.values() for b in table)
    table_ref = [held[b] for b in range(cache.num_blocks)]
    tree_ref, locked_ref = [0] * cache.num_blocks, [0] * cache.num_blocks
    locks = Counter(id(n) for n in cache.seq_nodes.values())
    for n in nodes:
        assert n.key and len(n.key) == len(n.slots), f"node {n.node_id}: key/slots mismatch"
        assert n.parent.children[n.key[0]] is n, f"node {n.node_id}: not its parent's child"
        depth = len(path_slots(n)) - len(n.slots)
        assert all(s % bs == (depth + i) % bs for i, s in enumerate(n.slots)), "offset != p % bs"
        blocks = {s // bs for s in n.slots}  # one table's: a block of positions, one block
        assert sorted(blocks) == cache._blocks(n), f"node {n.node_id}: blocks wrong"
        assert len(blocks) == len({(depth + i) // bs for i in range(len(n.slots))})
        want = locks.get(id(n), 0) + sum(c.lock_ref for c in n.children.values())
        assert n.lock_ref == want, f"node {n.node_id}: lock_ref {n.lock_ref} != {want}"
        for b in cache._blocks(n):
            tree_ref[b] += 1
            locked_ref[b] += n.lock_ref > 0
    assert table_ref == cache.table_ref and tree_ref == cache.tree_ref
    assert locked_ref == cache.locked_ref
    assert cache.num_cached_blocks == sum(1 for r in tree_ref if r), "cached-block count wrong"
    for b in range(cache.num_blocks):
        free = table_ref[b] == 0 and tree_ref[b] == 0
        assert (b in cache.free_list) == free, f"block {b}: free-list membership wrong"
        evict = not free and table_ref[b] == 0 and locked_ref[b] == 0
        assert (b in cache.evictable) == evict, f"block {b}: evictable membership wrong"
