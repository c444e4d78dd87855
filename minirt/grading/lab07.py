"""Lab 7 (labs/lab07_scheduling.ipynb): who goes first and who runs — scheduling policies and the
scheduler's step, written by the learner and plugged into the engine.

Tasks 1-3 call the learner's policies on random waiting queues over random prefix caches and
compare the order with minirt's `lpm` and `dfs_weight` and, for the aging policy minirt does not
have, with this module's `AgingLPM`, call after call. Task 4 runs the engine on the learner's
policies and on the references (minirt.grading.lab07_engine). Tasks 5-7 run the engine on the
learner's scheduler class, `LLM(scheduler=...)`, and on minirt's `Scheduler`: the token budget,
chunked prefill and admission (5), recompute preemption (6), prefill-first (7). Every task is
played in the grader's worker on the learner's side only (what each call answered, what the engine
did) and judged in the parent against minirt's side of the same case. A policy only orders; given
the same order, the engine makes the same decisions, which is why the comparison can be exact.
"""

from __future__ import annotations

import random
from functools import partial
from types import SimpleNamespace

from minirt.grading import lab07_engine as engine
from minirt.grading.core import Mismatch, Refused, Task
from minirt.grading.guard import NOTEBOOK, Forbidden, check_instance, check_objects
from minirt.grading.lab07_engine import answer, names, order_difference, show_queue
from minirt.kv import BlockManager, RadixCache
from minirt.sampling_params import SamplingParams
from minirt.sched.policy import dfs_weight, lpm
from minirt.sched.sequence import Sequence

# minirt's scheduler step, by the names that reach it (Batch, SchedulerBase and the rest of
# minirt.sched.scheduler are the learner's to use)
SCHEDULER = Forbidden(
    names=(
        "Scheduler",
        "_schedule_running",
        "_admit",
        "_preempt",
        *(f"Scheduler.{m}" for m in ("schedule", "_schedule_running", "_admit", "_preempt")),
    ),
    what="minirt's scheduler",
)
FORBIDDEN = Forbidden(
    modules=("minirt.sched.policy",),
    names=("lpm", "dfs_weight", "fcfs", "POLICIES", "resolve_policy", "order_waiting")
    + SCHEDULER.names,
    strings=("lpm", "dfs-weight", "sglang"),  # the registry's names, and the preset that picks one
    what="minirt's scheduling policies and scheduler",
)


class AgingLPM:
    """The reference for task 3: longest prefix first, but a request that has been waiting for
    more than `max_wait` calls goes ahead of every younger one (those, in the order of
    `waiting`). The age of a request counts the calls it was waiting in, this one included."""

    def __init__(self, max_wait: int):
        self.max_wait = max_wait
        self.age: dict[int, int] = {}

    def __call__(self, waiting: list[Sequence], cache) -> list[Sequence]:
        for s in waiting:
            self.age[s.seq_id] = self.age.get(s.seq_id, 0) + 1
        old = [s for s in waiting if self.age[s.seq_id] > self.max_wait]
        young = [s for s in waiting if self.age[s.seq_id] <= self.max_wait]
        return old + sorted(young, key=lambda s: -cache.match_len(s.token_ids))


# -- random caches and queues -------------------------------------------------------------------
def _paths(rng: random.Random, n: int, vocab: int, max_len: int) -> list[list[int]]:
    """Token lists that share prefixes (a small vocabulary), as prompts of one app do."""
    out: list[list[int]] = []
    for _ in range(n):
        base = []
        if out and rng.random() < 0.7:  # continue or branch off an earlier one
            base = rng.choice(out)[: rng.randint(0, max_len)]
        out.append(base + [rng.randrange(vocab) for _ in range(rng.randint(1, max_len))])
    return out


def _cached(rng: random.Random, paths: list[list[int]]) -> list[list[int]]:
    """The prompts whose KV a cache holds: each path and a last token (never cached)."""
    return [path + [rng.randrange(4)] for path in paths]


def _cache(kind: str, bs: int, prompts: list[list[int]]):
    """A prefix cache holding the KV of `prompts` (each computed by a finished sequence)."""
    cache = RadixCache(4096, bs) if kind == "radix" else BlockManager(4096, bs)
    for seq, tokens in enumerate(prompts):
        cache.allocate(seq, tokens, len(tokens))
        if kind == "radix":
            cache.cache_computed(seq, tokens, len(tokens) - 1)
        else:
            cache.commit(seq, tokens, len(tokens) - 1)
        cache.free(seq)
    return cache


def _queue(rng: random.Random, n: int, paths: list[list[int]]) -> list[list[int]]:
    """`n` waiting prompts: a cached path cut somewhere, then tokens of their own (or none of
    the cache at all), so that matches of every length, ties among them, occur."""
    out = []
    for _ in range(n):
        head = []
        if paths and rng.random() < 0.8:
            p = rng.choice(paths)
            head = p[: rng.randint(0, len(p))]
        out.append(head + [rng.randrange(4) for _ in range(rng.randint(1, 4))])
    return out


def _requests(prompts: list[list[int]], first_id: int = 100) -> list[Sequence]:
    return [Sequence(first_id + j, p, SamplingParams(max_tokens=1)) for j, p in enumerate(prompts)]


def _setup(case: dict):
    """The case's cache and waiting requests, built afresh (on either side)."""
    return _cache(case["kind"], case["bs"], case["cached"]), _requests(case["queue"])


def _order_case(case: dict, policy) -> dict:
    cache, waiting = _setup(case)
    return answer(policy(list(waiting), cache), waiting)


# -- task 1: longest prefix first -----------------------------------------------------------------
def draw_lpm(rng: random.Random, i: int) -> dict:
    kind = ("radix", "hash")[i % 2]
    bs = 1 if kind == "radix" else rng.choice((1, 2))
    paths = _paths(rng, rng.randint(0 if i < 2 else 1, 2 + i // 5), vocab=3, max_len=8)
    cached = _cached(rng, paths)
    n = 1 + i // 3 if i > 1 else i + 1
    return {"kind": kind, "bs": bs, "cached": cached, "queue": _queue(rng, n, paths)}


def compare_lpm(got: dict, want: dict, case: dict) -> None:
    cache, waiting = _setup(case)
    size = len(waiting) + sum(map(len, case["cached"]))
    call = (
        f"longest_prefix_first(waiting, cache) on a {case['kind']} cache (blocks of "
        f"{case['bs']}), waiting {show_queue(waiting, cache)}"
    )
    diff = order_difference(got, want, call, size)
    if diff:
        j, a, b = diff
        match = {s.seq_id: cache.match_len(s.token_ids) for s in waiting}
        why = (
            f"r{b} has a longer cached prefix ({match[b]} > {match[a]} tokens)"
            if match[a] != match[b]
            else f"both have {match[a]} cached tokens, and r{b} comes first in `waiting` "
            "(equal matches keep their order)"
        )
        raise Mismatch(
            f"{call}: position {j} of your order is r{a}, minirt's lpm puts r{b} there: {why}. "
            f"minirt's order: {names(want['order'])}",
            size,
        )


# -- task 2: heaviest subtree first ---------------------------------------------------------------
def _path(node) -> list[int]:
    out: list[int] = []
    while node is not None and node.parent is not None:
        out = list(node.key) + out
        node = node.parent
    return out


def _groups(waiting, cache) -> str:
    """Each request's match node (its path) and the node's weight, for a message."""
    weight: dict[int, int] = {}
    ends = []
    for s in waiting:
        node = cache.match_node(s.token_ids)
        ends.append((s, node))
        while node is not None:
            weight[id(node)] = weight.get(id(node), 0) + 1
            node = node.parent
    return "; ".join(
        f"r{s.seq_id} ends at the node of {_path(n) or 'the root'} (weight {weight[id(n)]})"
        for s, n in ends
    )


def draw_dfs(rng: random.Random, i: int) -> dict:
    paths = _paths(rng, 1 + i // 4, vocab=3, max_len=6)
    cached = _cached(rng, paths)
    return {"kind": "radix", "bs": 1, "cached": cached, "queue": _queue(rng, 2 + i // 3, paths)}


def compare_dfs(got: dict, want: dict, case: dict) -> None:
    cache, waiting = _setup(case)
    size = len(waiting) + sum(map(len, case["cached"]))
    call = f"heaviest_subtree_first(waiting, cache), waiting {show_queue(waiting, cache)}"
    diff = order_difference(got, want, call, size)
    if diff:
        j, a, b = diff
        raise Mismatch(
            f"{call}: position {j} of your order is r{a}, minirt's dfs_weight puts r{b} there. "
            f"Its order: {names(want['order'])}; the tree: {_groups(waiting, cache)}. (At a "
            "node: its own requests in `waiting` order, then its children's subtrees heaviest "
            "first; of equal weights, the subtree reached last first — what a stack pops)",
            size,
        )


# -- task 3: longest prefix first, with aging -----------------------------------------------------
def draw_aging(rng: random.Random, i: int) -> dict:
    """A run of calls on one policy object: each call, the head of the policy's order is admitted
    (0-2 requests), new requests arrive, now and then a preempted one comes back at the front,
    and the cache learns the admitted prompts."""
    max_wait = (0, 1, 2, 3)[i % 4] if i < 8 else rng.randint(0, 4)
    paths = _paths(rng, rng.randint(1, 3), vocab=3, max_len=6)
    calls = []
    for _ in range(6 + i // 4):
        new = _queue(rng, rng.randint(0, 2), paths)
        calls.append({"admit": rng.randint(0, 2), "new": new, "back": rng.random() < 0.2})
    return {
        "max_wait": max_wait,
        "cached": _cached(rng, paths),
        "queue": _queue(rng, rng.randint(2, 4), paths),
        "calls": calls,
        "refill": _queue(rng, 2 * len(calls), paths),  # when the queue runs empty
    }


def aging_run(policy, case: dict) -> list[dict]:
    """`policy` through the case's calls, each admitting the head of its own order (so that the
    learner's run and the reference's are the same run up to their first difference): each
    call's answer, and what it was called with."""
    cache = _cache("radix", 1, case["cached"])
    waiting = _requests(case["queue"])
    next_id, refill, age = 100 + len(waiting), list(case["refill"]), {}
    log, out = [], []
    for call_no, plan in enumerate(case["calls"], start=1):
        for s in waiting:
            age[s.seq_id] = age.get(s.seq_id, 0) + 1
        ages = ", ".join(f"r{s.seq_id}: {age[s.seq_id]}" for s in waiting)
        call = (
            f"AgingLPM(max_wait={case['max_wait']}); after {len(log)} calls "
            f"({'; '.join(log[-3:]) or '-'}), call {call_no} with waiting "
            f"{show_queue(waiting, cache)} (ages with this call: {ages})"
        )
        got = policy(list(waiting), cache)
        said = answer(got, waiting)
        old = [f"r{s.seq_id}" for s in waiting if age[s.seq_id] > case["max_wait"]]
        out.append({"call": call, "old": old, **said})
        if said["strangers"] or sorted(said["order"]) != sorted(s.seq_id for s in waiting):
            break  # not the waiting requests reordered: the run ends here
        by_id = {s.seq_id: s for s in waiting}
        admitted = [by_id[k] for k in said["order"][: min(plan["admit"], len(waiting))]]
        for s in admitted:  # computed: its prompt is cached now, as the engine would leave it
            waiting.remove(s)
            tokens = s.token_ids + [0]
            cache.allocate(10_000 + s.seq_id, tokens, len(tokens))
            cache.cache_computed(10_000 + s.seq_id, tokens, len(s.token_ids))
            cache.free(10_000 + s.seq_id)
        new = _requests(plan["new"], first_id=next_id)
        next_id += len(new)
        waiting += new
        back = ""
        if admitted and plan["back"]:  # preempted: back at the front, age kept
            waiting.insert(0, admitted[0])
            back = f", r{admitted[0].seq_id} preempted back to the front"
        log.append(f"admitted {names(s.seq_id for s in admitted)}, {len(new)} arrived{back}")
        if not waiting:
            waiting = _requests([refill.pop(), refill.pop()], first_id=next_id)
            next_id += 2
    return out


def compare_aging(got: list, want: list, case: dict) -> None:
    size = 0
    for g, w in zip(got, want, strict=False):
        size += len(w["order"])
        diff = order_difference(g, w, w["call"], size)
        if diff:
            j, a, b = diff
            raise Mismatch(
                f"{w['call']}: position {j} of your order is r{a}, the reference's is r{b}. "
                f"Waiting longer than {case['max_wait']} calls: {w['old'] or 'none'} (they go "
                f"first, in `waiting` order); the others by longest cached prefix. The order: "
                f"{names(w['order'])}",
                size,
            )


# -- task 4: the learner's policies in the engine ----------------------------------------------
def _policy(learner: SimpleNamespace | None, case: dict):
    """(the policy, its name) of the case: the learner's, or the reference (learner None)."""
    which, w = case["which"], case["max_wait"]
    if which == "lpm":
        return (learner.longest_prefix_first if learner else lpm), "longest_prefix_first"
    if which == "dfs-weight":
        return (learner.heaviest_subtree_first if learner else dfs_weight), "heaviest_subtree_first"
    return (learner.AgingLPM(w) if learner else AgingLPM(w)), f"AgingLPM({w})"


def play_policies(learner: SimpleNamespace, case: dict) -> dict:
    return engine.run_policies(*_policy(learner, case), case)


def expect_policies(case: dict) -> dict:
    return engine.run_policies(*_policy(None, case), case)


# -- tasks 5-7: the learner's scheduler in the engine ---------------------------------------------
def _refuse_minirts(scheduler) -> None:
    """The scheduler the engine built from the learner's class: no class of it, nor anything it
    holds, may be minirt's Scheduler (a subclass, a wrapper, a borrowed method)."""
    mine = {c.__qualname__: c for c in type(scheduler).__mro__ if c.__module__ == NOTEBOOK}
    refusals = check_objects(mine, SCHEDULER)
    refusals += check_instance("your scheduler", scheduler, SCHEDULER)
    if refusals:
        raise Refused("; ".join(map(str, refusals[:3])))


def play_batching(name: str, learner: SimpleNamespace, case: dict) -> dict:
    return engine.run_batching(getattr(learner, name), case, refuse=_refuse_minirts)


def expect_batching(case: dict) -> dict:
    return engine.run_batching(None, case)


def _batching_task(id: str, title: str, points: int, name: str, tight: bool, priority: str):
    draw = partial(engine.draw_batching, tight=tight, priority=priority)
    pieces = (draw, partial(play_batching, name), expect_batching, engine.compare_batching)
    return Task.played(id, title, points, (name,), 4, pieces)


def _orders(draw, policy_of, compare):
    """A policy task's pieces: the order the learner's function gives, and minirt's."""
    return {
        "draw": draw,
        "play": lambda learner, case: _order_case(case, policy_of(learner)),
        "expect": lambda case: _order_case(case, policy_of(None)),
        "compare": compare,
    }


def _lpm_of(learner):
    return learner.longest_prefix_first if learner else lpm


def _dfs_of(learner):
    return learner.heaviest_subtree_first if learner else dfs_weight


def _aging_of(learner, case):
    return (learner.AgingLPM if learner else AgingLPM)(case["max_wait"])


TASKS = [
    Task(
        "1",
        "longest_prefix_first",
        2,
        ("longest_prefix_first",),
        None,
        num_cases=40,
        **_orders(draw_lpm, _lpm_of, compare_lpm),
    ),
    Task(
        "2",
        "heaviest_subtree_first",
        4,
        ("heaviest_subtree_first",),
        None,
        num_cases=40,
        **_orders(draw_dfs, _dfs_of, compare_dfs),
    ),
    Task(
        "3",
        "AgingLPM",
        3,
        ("AgingLPM",),
        None,
        num_cases=30,
        draw=draw_aging,
        play=lambda learner, case: aging_run(_aging_of(learner, case), case),
        expect=lambda case: aging_run(_aging_of(None, case), case),
        compare=compare_aging,
    ),
    Task(
        "4",
        "your policies in the engine",
        5,
        ("longest_prefix_first", "heaviest_subtree_first", "AgingLPM"),
        None,
        num_cases=6,
        draw=engine.draw_policies,
        play=play_policies,
        expect=expect_policies,
        compare=engine.compare_policies,
    ),
    _batching_task(
        "5",
        "BudgetScheduler: budget, chunks, admission",
        5,
        "BudgetScheduler",
        False,
        "decode-first",
    ),
    _batching_task(
        "6",
        "PreemptingScheduler: recompute preemption",
        5,
        "PreemptingScheduler",
        True,
        "decode-first",
    ),
    _batching_task("7", "MyScheduler: prefill-first", 3, "MyScheduler", False, "prefill-first"),
]
