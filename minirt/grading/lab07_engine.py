"""Lab 7 in the engine: the learner's policies (task 4) and the learner's scheduler (tasks 5-7).

Task 4 runs the engine on fresh few-shot, multi-turn and starving workloads, in a pool that evicts
and with few seats, once on the learner's policy and once on minirt's (or the lab's `AgingLPM`):
every call the policy gets is recorded (what waited, what it answered), then every step's
decisions and each request's tokens. Tasks 5-7 run the engine on `LLM(scheduler=<the learner's
class>)` and on minirt's `Scheduler` with the same requests (prompts of mixed lengths, some longer
than the token budget, a few seats): the pool ample (task 5: the budget, chunked prefill and
admission), tight enough to preempt (task 6), or with `batch_priority="prefill-first"` (task 7).
A scheduler decides everything the engine does, so the two runs must agree step for step: who is
scheduled with how many tokens, who is preempted, the block tables, the free and cached blocks,
then each request's greedy tokens; and at the end no block is held. The grader's worker runs the
learner's side only; the parent runs minirt's and compares (`compare_policies`,
`compare_batching`).
"""

from __future__ import annotations

import random

from minirt.grading.core import Mismatch
from minirt.grading.engine_runs import (
    STEP_FIELDS,
    books_after,
    check_books_after,
    compare_rounds,
    first_step_difference,
    round_record,
)

VOCAB = 256  # the embedded model's byte-level vocabulary


# -- what a policy answered, as plain data ---------------------------------------------------
def answer(got, waiting) -> dict:
    """A policy's answer to one call: the seq_ids in its order (None for an object that is not one
    of the waiting requests), and what those strangers were."""
    try:
        got = list(got)
    except TypeError:
        return {"order": None, "strangers": [repr(got)[:80]]}
    ids = {id(s): s.seq_id for s in waiting}
    return {
        "order": [ids.get(id(g)) for g in got],
        "strangers": [repr(g)[:80] for g in got if id(g) not in ids],
    }


def order_difference(got: dict, want: dict, call: str, size: int) -> tuple[int, int, int] | None:
    """(position, yours, minirt's) where two answers first differ, or None; an answer that is not
    the waiting requests reordered raises `Mismatch`."""
    if got["order"] is None:
        what = f"{call} returned {got['strangers'][0]}; expected a list of the waiting requests"
        raise Mismatch(what, size)
    if got["strangers"]:
        raise Mismatch(
            f"{call} returned {got['strangers'][0]}, which is not one of the waiting requests; "
            "return the requests themselves (the Sequence objects of `waiting`), reordered",
            size,
        )
    mine, ref = got["order"], want["order"]
    if len(mine) != len(ref) or len(set(mine)) != len(mine):
        missing = [s for s in ref if s not in mine]
        what = f"leaves out {names(missing)}" if missing else "repeats a request"
        raise Mismatch(
            f"{call} returned {len(mine)} requests for {len(ref)} waiting: it {what}; a "
            "policy orders every waiting request, once (the scheduler then admits what fits)",
            size,
        )
    return next(((j, a, b) for j, (a, b) in enumerate(zip(mine, ref, strict=True)) if a != b), None)


def names(ids) -> str:
    """'[r3, r1]' for request ids."""
    return "[" + ", ".join(f"r{i}" for i in ids) + "]"


def show_queue(waiting, cache) -> str:
    """'[r100 (3 cached), r101 (0 cached), …]': each waiting request and its cached prefix."""
    shown = (f"r{s.seq_id} ({cache.match_len(s.token_ids)} cached)" for s in waiting)
    return "[" + ", ".join(shown) + "]"


# -- task 4: the learner's policies in the engine -------------------------------------------------
class PolicyCalls:
    """The policy the engine runs, each call recorded: the step, what waited (with its cached
    tokens) and the answer. An answer that is not the waiting requests reordered stops the run."""

    def __init__(self, policy, name: str):
        self.policy, self.name = policy, name
        self.scheduler = None
        self.calls: list[dict] = []

    def __call__(self, waiting, cache):
        step = self.scheduler.num_steps if self.scheduler is not None else 0
        call = f"step {step}: {self.name}(waiting {show_queue(waiting, cache)})"
        got = self.policy(list(waiting), cache)
        said = answer(got, waiting)
        self.calls.append({"step": step, "call": call, **said})
        order_difference(said, {"order": [s.seq_id for s in waiting]}, call, 0)  # well-formed?
        return list(got)


def draw_policies(rng: random.Random, i: int) -> dict:
    """Case `i`: the policy (lpm, dfs-weight and aging in turn), a workload that makes its order
    matter, and a pool that evicts with two or three seats."""
    which = POLICY_CASES[i % 3]
    kind, rounds = _workload(rng, which, i)
    bs = rng.choice((2, 4))
    max_tokens, seats = rng.randint(2, 3), rng.randint(2, 3)
    longest = max(len(p) for prompts in rounds for p in prompts) + max_tokens
    return {
        "which": which,
        "kind": kind,
        "rounds": rounds,
        "cache": "hash" if which == "lpm" and (i // 3) % 2 else "radix",
        "block_size": bs,
        "num_blocks": seats * -(-longest // bs) + rng.randint(1, 4),  # tight: the cache evicts
        "seats": seats,
        "max_tokens": max_tokens,
        "max_wait": rng.randint(1, 3),
    }


POLICY_CASES = ("lpm", "dfs-weight", "aging")


def _workload(rng: random.Random, which: str, i: int):
    """Few-shot (system prompts shared by groups of requests, arriving mixed), multi-turn (rounds
    that resend each conversation with a new question) or starving (requests without a shared
    prefix arrive first, then many that share one: longest-prefix-first keeps passing them over),
    small enough for a CPU."""

    def tokens(lo: int, hi: int) -> list[int]:
        return [rng.randrange(VOCAB) for _ in range(rng.randint(lo, hi))]

    if which == "aging":
        system = tokens(16, 24)
        loners = [tokens(8, 14) for _ in range(rng.randint(2, 3))]
        group = [system + tokens(2, 5) for _ in range(rng.randint(6, 8))]
        return "starving", [group[:1] + loners + group[1:]]
    if (i // 3) % 2 == 0:
        systems = [tokens(10, 24) for _ in range(3)]
        return "few-shot", [[rng.choice(systems) + tokens(2, 6) for _ in range(rng.randint(7, 10))]]
    rounds = [[tokens(6, 14) for _ in range(4)]]
    for _ in range(2):
        rounds.append([c + tokens(5, 8) for c in rounds[-1]])
    return "multi-turn", rounds


def run_policies(policy, name: str, case: dict) -> dict:
    """The engine on `policy` through the case's rounds: every call of the policy, every step's
    decisions, every request's tokens and each round's hit rate, then what the cache holds."""
    from minirt import LLM, SamplingParams  # the engine, only for these tasks

    calls = PolicyCalls(policy, name)
    llm = LLM(
        device="cpu",
        block_size=case["block_size"],
        num_kv_blocks=case["num_blocks"],
        max_num_batched_tokens=32,
        max_num_seqs=case["seats"],
        prefix_cache=case["cache"],
        schedule_policy=calls,
        trace=True,
    )
    calls.scheduler = llm.scheduler
    params = SamplingParams(temperature=0, max_tokens=case["max_tokens"], ignore_eos=True)
    rounds = []
    for prompts in case["rounds"]:
        outputs = llm.generate(prompts, params, use_tqdm=False)
        rounds.append(round_record(llm, outputs))
        rounds[-1]["hit_rate"] = llm.last_stats.prefix_cache_hit_rate
    return {"calls": calls.calls, "rounds": rounds, "end": books_after(llm.block_manager)}


def compare_policies(got: dict, want: dict, case: dict) -> None:
    rounds = case["rounds"]
    size = sum(len(p) for prompts in rounds for p in prompts)
    about = (
        f"{POLICY_NAMES[case['which']]} on a {case['kind']} workload ({len(rounds)} rounds of "
        f"{len(rounds[0])} prompts, {size} tokens), {case['cache']} cache, block_size "
        f"{case['block_size']}, {case['num_blocks']} blocks, {case['seats']} seats "
        f"(max_num_seqs), max_tokens {case['max_tokens']}"
    )
    if case["which"] == "aging":
        about = about.replace("AgingLPM", f"AgingLPM({case['max_wait']})")
    for g, w in zip(got["calls"], want["calls"], strict=False):  # the same run up to a difference
        diff = order_difference(g, w, f"{about}: {w['call']}", size)
        if diff:
            j, a, b = diff
            raise Mismatch(
                f"{about}: {w['call']}: position {j} of your order is r{a}, the reference puts "
                f"r{b} there ({names(w['order'])})",
                size,
            )
    if not got["calls"]:
        raise Mismatch(f"{about}: the engine never called your policy", size)
    compare_rounds(got["rounds"], want["rounds"], about, size)
    for r, (g, w) in enumerate(zip(got["rounds"], want["rounds"], strict=True)):
        if g["hit_rate"] != w["hit_rate"]:
            raise Mismatch(
                f"{about}: round {r + 1}: prefix-cache hit rate {g['hit_rate']:.3f}; the "
                f"reference's {w['hit_rate']:.3f}",
                size,
            )
    check_books_after(got["end"], about, size)


POLICY_NAMES = {
    "lpm": "longest_prefix_first",
    "dfs-weight": "heaviest_subtree_first",
    "aging": "AgingLPM",
}


# -- tasks 5-7: the learner's scheduler -----------------------------------------------------------
def draw_batching(rng: random.Random, i: int, tight: bool, priority: str) -> dict:
    """Case `i`: 3-6 requests (4-6 in a tight pool), some sharing a prefix, the first longer
    than the token budget (chunked prefill); the pool holds every request at once, or (`tight`)
    the longest and at most two blocks more, with 3-4 seats, so that growing sequences preempt."""
    budget, bs = rng.randint(6, 12), (2, 4)[i % 2]
    heads = [[rng.randrange(VOCAB) for _ in range(rng.randint(4, 10))] for _ in range(2)]

    def prompt(lo: int, hi: int) -> list[int]:
        head = rng.choice(heads) if rng.random() < 0.4 else []
        return head + [rng.randrange(VOCAB) for _ in range(rng.randint(lo, hi))]

    prompts = [prompt(budget + 1, 3 * budget)]
    prompts += [prompt(1, 3 * budget) for _ in range(rng.randint(3 if tight else 2, 5))]
    max_tokens = rng.randint(2, 5)
    need = [-(-(len(p) + max_tokens) // bs) for p in prompts]
    num_blocks = max(need) + rng.randint(0, 2) if tight else sum(need) + 1
    return {
        "prompts": prompts,
        "budget": budget,
        "block_size": bs,
        "num_blocks": num_blocks,
        "seats": rng.randint(3 if tight else 2, 4),
        "max_tokens": max_tokens,
        "priority": priority,
    }


def run_batching(scheduler, case: dict, refuse=None) -> dict:
    """The engine on `scheduler` (a class; None: minirt's) through the case: every step's
    decisions and every request's tokens, then what the books hold at the end. `refuse`: the
    grader's check of the scheduler object (it may raise `Refused`)."""
    from minirt import LLM, SamplingParams  # the engine, only for these tasks

    llm = LLM(
        device="cpu",
        block_size=case["block_size"],
        num_kv_blocks=case["num_blocks"],
        max_num_batched_tokens=case["budget"],
        max_num_seqs=case["seats"],
        batch_priority=case["priority"],
        prefix_cache="hash",
        schedule_policy="fcfs",
        scheduler=scheduler,
        trace=True,
    )
    if refuse is not None:
        refuse(llm.scheduler)
    params = SamplingParams(temperature=0, max_tokens=case["max_tokens"], ignore_eos=True)
    try:
        outputs = llm.generate(case["prompts"], params, use_tqdm=False)
    except RuntimeError as e:  # an empty batch while requests wait: the run cannot go on
        if "found nothing to run" not in str(e):
            raise
        record = round_record(llm, [])
        last = llm.scheduler.last_batch  # that batch (no step event has its preemptions)
        preempted = [s.seq_id for s in last.preempted] if last is not None else []
        stalled = {"step": len(record["steps"]), "preempted": preempted}
        return {"rounds": [record], "stalled": stalled, "end": None}
    return {
        "rounds": [round_record(llm, outputs)],
        "stalled": None,
        "end": books_after(llm.block_manager),
    }


def compare_batching(got: dict, want: dict, case: dict) -> None:
    size = sum(map(len, case["prompts"]))
    lengths = ", ".join(str(len(p)) for p in case["prompts"])
    about = (
        f"{len(case['prompts'])} requests of {lengths} prompt tokens, max_tokens "
        f"{case['max_tokens']}; token budget {case['budget']}, {case['seats']} seats, "
        f"block_size {case['block_size']}, {case['num_blocks']} blocks, {case['priority']}"
    )
    hints = {**HINTS, "scheduled": PREFILL_FIRST} if case["priority"] == "prefill-first" else HINTS
    if got["stalled"]:  # the steps before it, then the stall itself
        for gs, ws in zip(got["rounds"][0]["steps"], want["rounds"][0]["steps"], strict=False):
            diff = first_step_difference(gs, ws, FIELDS)
            if diff:
                raise Mismatch(f"{about}: step {ws['step']}: {diff[1]} ({hints[diff[0]]})", size)
        step, preempted = got["stalled"]["step"], got["stalled"]["preempted"]
        theirs = want["rounds"][0]["steps"][step:][:1]
        if theirs and preempted != theirs[0]["preempted"]:
            what = f"preempted sequences: yours {preempted}, minirt {theirs[0]['preempted']}"
            raise Mismatch(f"{about}: step {step}: {what} ({hints['preempted']})", size)
        raise Mismatch(
            f"{about}: step {step}: your scheduler scheduled nothing while requests were still "
            "unfinished (one dropped from the queues, or starved); the engine cannot go on",
            size,
        )
    compare_rounds(got["rounds"], want["rounds"], about, size, hints, FIELDS)
    check_books_after(got["end"], about, size)


# A step's preemptions first: who is scheduled in that step follows from them.
FIELDS = {"preempted": STEP_FIELDS["preempted"], **STEP_FIELDS}

HINTS = {
    "scheduled": "running sequences first, oldest first: a decode token each, or the next chunk "
    "of a prompt, while the budget lasts; then waiting requests in arrival order (a preempted "
    "one first in line) while the budget, the seats and the blocks last; a chunk is what is "
    "left of the budget",
    "preempted": "when a running sequence cannot get its blocks, the newest running sequence "
    "gives up its own, until the sequence fits or is itself the newest",
    "block_tables": "blocks follow what is scheduled: the tokens computed so far and this step's",
    "num_free_blocks": "a preempted sequence frees every block it holds",
    "num_cached_blocks": "every block a step fills is published (commit) when it is scheduled",
    "cached": "an admission asks the cache for the prompt's cached prefix",
    "tokens": "a preempted sequence computes its tokens again from the first one",
}
PREFILL_FIRST = (
    "prefill-first: a step with prompt work (a running prompt's next chunk, an admission) runs "
    "no decode; a step without any, as decode-first"
)
