"""Which waiting request goes first: FCFS, longest-prefix-match, DFS-weight (SGLang's policies).

LPM uses the cache's hits before eviction drops them; DFS-weight runs requests sharing a prefix
back to back. `defer_in_batch` is SGLang's in-batch check: a request whose uncached prefix another
request of this step computes waits a step, then hits the cache. Notebook 11 measures all three.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

from minirt.checks import named_part
from minirt.kv.radix_tree import RadixNode, common_len, insert, match
from minirt.sched.sequence import Sequence as Seq

# Defer a request when a prompt being computed shares this many more tokens with it than the
# cache does. SGLang uses 32 for prompts of thousands of tokens; ours are ~200: one block.
IN_BATCH_DEFER_TOKENS = 16


class Policy(Protocol):
    """A scheduling policy: the waiting requests in admission order. It may ask the prefix cache
    (`match_len`, or what an optional `needs` attribute lists) but not change it. A new policy is
    one such function, in POLICIES or passed as `LLM(schedule_policy=fn)`."""

    def __call__(self, waiting: list[Seq], cache) -> list[Seq]: ...


def fcfs(waiting: list[Seq], cache) -> list[Seq]:
    """First come, first served (vLLM): arrival order."""
    return waiting


def lpm(waiting: list[Seq], cache) -> list[Seq]:
    """Longest prefix match first; stable, so equal matches keep arrival order."""
    return sorted(waiting, key=lambda s: -cache.match_len(s.token_ids))


def dfs_weight(waiting: list[Seq], cache) -> list[Seq]:
    """Group requests by the tree node their match ends at; weight a node by the requests in
    its subtree; emit depth first, heaviest child first (SGLang's schedule_policy.py)."""
    at, children, weight = defaultdict(list), defaultdict(list), Counter()  # by id(node)
    for s in waiting:
        node = cache.match_node(s.token_ids)
        at[id(node)].append(s)
        while node is not None:
            weight[id(node)] += 1
            if node.parent is not None and node not in children[id(node.parent)]:
                children[id(node.parent)].append(node)
            node = node.parent
    out, stack = [], [cache.root]
    while stack:
        node = stack.pop()
        out += at[id(node)]
        kids = sorted(children[id(node)], key=lambda n: weight[id(n)])
        stack += kids  # the heaviest is popped first
    return out


dfs_weight.needs = ("match_node", "root")  # it walks a radix tree: prefix_cache="radix"

# The policies by name: config names, the dashboard's choices and the benchmarks' presets.
POLICIES: dict[str, Policy] = {"fcfs": fcfs, "lpm": lpm, "dfs-weight": dfs_weight}


def resolve_policy(policy: str | Policy, cache) -> Policy:
    """The policy function for a name or a function, checked against the prefix cache."""
    otherwise = " or pass a function (waiting, cache) -> waiting in admission order"
    policy = named_part("schedule_policy", policy, POLICIES, otherwise, "a name or a function")
    missing = [m for m in getattr(policy, "needs", ()) if not hasattr(cache, m)]
    if missing:
        name = getattr(policy, "__name__", repr(policy))
        raise ValueError(
            f"schedule_policy {name} needs the prefix cache's {', '.join(missing)}, which "
            f"{type(cache).__name__} lacks; use prefix_cache='radix'"
        )
    return policy


def order_waiting(waiting: Iterable[Seq], cache, policy: str | Policy) -> list[Seq]:
    """The waiting requests in admission order (`policy` a name of POLICIES or a function)."""
    return resolve_policy(policy, cache)(list(waiting), cache)


def defer_in_batch(token_ids: Sequence[int], cached: int, admitted: list[Sequence[int]]) -> bool:
    """Should this request wait a step for a prefix another admitted request computes now?
    The plain version, one prompt at a time; the scheduler asks `InBatchPrefixes`."""
    shared = (min(common_len(token_ids, p), len(token_ids) - 1, len(p) - 1) for p in admitted)
    return any(n - cached >= IN_BATCH_DEFER_TOKENS for n in shared)


class InBatchPrefixes:
    """The prompts being computed this step, less their last token, in a token-only radix tree
    (SGLang's waiting_queue_radix_tree): one walk finds the longest prefix a request shares with
    any of them, where `defer_in_batch` compares with every prompt (O(n^2) over a step)."""

    def __init__(self, prompts: Iterable[Sequence[int]] = ()):
        self.root = RadixNode([], [])
        for p in prompts:
            self.add(p)

    def add(self, token_ids: Sequence[int]) -> None:
        insert(self.root, list(token_ids[:-1]))

    def defers(self, token_ids: Sequence[int], cached: int) -> bool:
        """`defer_in_batch(token_ids, cached, prompts added so far)`, by one walk."""
        return match(self.root, token_ids[:-1])[1] - cached >= IN_BATCH_DEFER_TOKENS
