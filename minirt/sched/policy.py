"""Which waiting request goes first: FCFS, longest-prefix-match, DFS-weight (SGLang's policies).

FCFS keeps arrival order (vLLM). LPM admits the requests with the longest cached prefix first, so
the cache's hits are used before eviction drops them. DFS-weight walks the radix tree depth first,
heaviest subtree (most waiting requests) first, so requests sharing a prefix run back to back.
`defer_in_batch` is SGLang's in-batch check: a request whose uncached prefix another request of
this step is computing waits a step and then hits the cache; `InBatchPrefixes` gives the same
answer with one tree walk per request instead of one comparison per prompt. Notebook 11 measures
all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from minirt.kv.radix_tree import RadixNode, common_len, insert, match
from minirt.sched.sequence import Sequence as Seq

# Defer a request when a prompt being computed shares this many more tokens with it than the
# cache does. SGLang uses 32 (IN_BATCH_PREFIX_CACHING_DEPRIORITIZE_THRESHOLD) for prompts of
# thousands of tokens; the workloads here are ~200 tokens with 30-token shared segments: one block.
IN_BATCH_DEFER_TOKENS = 16


def order_waiting(waiting: Iterable[Seq], cache, policy: str) -> list[Seq]:
    """The waiting requests in admission order. `cache` is the BlockManager or RadixCache."""
    seqs = list(waiting)
    if policy == "fcfs":
        return seqs
    if policy == "lpm":  # stable: equal matches keep arrival order
        return sorted(seqs, key=lambda s: -cache.match_len(s.token_ids))
    if policy == "dfs-weight":
        return _dfs_weight(seqs, cache)
    raise ValueError(f"unknown schedule_policy {policy!r}; use 'fcfs', 'lpm' or 'dfs-weight'")


def _dfs_weight(seqs: list[Seq], cache) -> list[Seq]:
    """Group requests by the tree node their match ends at; weight a node by the requests in
    its subtree; emit depth first, heaviest child first (SGLang's schedule_policy.py)."""
    if not hasattr(cache, "match_node"):
        raise ValueError(
            "schedule_policy='dfs-weight' walks the radix tree; use prefix_cache='radix'"
        )
    at: dict[int, list[Seq]] = {}
    weight: dict[int, int] = {}
    children: dict[int, list] = {}
    for s in seqs:
        node = cache.match_node(s.token_ids)
        at.setdefault(id(node), []).append(s)
        while node is not None:
            weight[id(node)] = weight.get(id(node), 0) + 1
            if node.parent is not None and node not in children.setdefault(id(node.parent), []):
                children[id(node.parent)].append(node)
            node = node.parent
    out, stack = [], [cache.root]
    while stack:
        node = stack.pop()
        out += at.get(id(node), [])
        kids = sorted(children.get(id(node), []), key=lambda n: weight[id(n)])
        stack += kids  # the heaviest is popped first
    return out


def defer_in_batch(token_ids: Sequence[int], cached: int, admitted: list[Sequence[int]]) -> bool:
    """Should this request wait a step for a prefix another admitted request computes now?
    The plain version, one prompt at a time; the scheduler asks `InBatchPrefixes`."""
    for other in admitted:
        n = min(common_len(token_ids, other), len(token_ids) - 1, len(other) - 1)
        if n - cached >= IN_BATCH_DEFER_TOKENS:
            return True
    return False


class InBatchPrefixes:
    """The prompts being computed this step, in a token-only radix tree (SGLang's
    waiting_queue_radix_tree): a walk down it finds the longest prefix a request shares with any
    of them, so each check costs a few edge comparisons whatever the number of prompts, where
    `defer_in_batch` compares with every prompt (O(n^2) over a step's admissions). Both trees
    hold prompts less their last token: the cap min(len - 1) of `defer_in_batch` comes free."""

    def __init__(self, prompts: Iterable[Sequence[int]] = ()):
        self.root = RadixNode([], [])
        for p in prompts:
            self.add(p)

    def add(self, token_ids: Sequence[int]) -> None:
        insert(self.root, list(token_ids[:-1]))

    def defers(self, token_ids: Sequence[int], cached: int) -> bool:
        """`defer_in_batch(token_ids, cached, prompts added so far)`, by one walk."""
        return match(self.root, token_ids[:-1])[1] - cached >= IN_BATCH_DEFER_TOKENS
