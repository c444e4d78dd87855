"""Lab 7 (labs/lab07_scheduling.ipynb): who goes first — scheduling policies written by the
learner and plugged into the engine as `LLM(schedule_policy=...)`.

Tasks 1-3 call the learner's policies on random waiting queues over random prefix caches and
compare the order with minirt's `lpm` and `dfs_weight` and, for the aging policy minirt does not
have, with this module's `AgingLPM`, call after call. Task 4 runs the engine twice on fresh
few-shot and multi-turn workloads, in a pool that evicts and with few seats, so that the order
decides who is admitted and what stays cached: once with the learner's policy (every call it gets
is checked against the reference's answer to the same call) and once with the reference. It
compares every step's admissions, block tables and free blocks, each request's cached and greedy
tokens, the hit rate, and that no block leaks. A policy only orders; given the same order, the
engine makes the same decisions, which is why the comparison can be exact.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from minirt.grading.core import Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.kv import BlockManager, RadixCache
from minirt.sampling_params import SamplingParams
from minirt.sched.policy import dfs_weight, lpm
from minirt.sched.sequence import Sequence

FORBIDDEN = Forbidden(
    modules=("minirt.sched.policy",),
    names=("lpm", "dfs_weight", "fcfs", "POLICIES", "resolve_policy", "order_waiting"),
    strings=("lpm", "dfs-weight", "sglang"),  # the registry's names, and the preset that picks one
    what="minirt's scheduling policies",
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


def _cache(rng: random.Random, kind: str, bs: int, paths: list[list[int]]):
    """A prefix cache holding the KV of `paths` (each computed by a finished sequence)."""
    cache = RadixCache(4096, bs) if kind == "radix" else BlockManager(4096, bs)
    for seq, path in enumerate(paths):
        tokens = path + [rng.randrange(4)]  # a prompt's last token is never cached
        cache.allocate(seq, tokens, len(tokens))
        if kind == "radix":
            cache.cache_computed(seq, tokens, len(path))
        else:
            cache.commit(seq, tokens, len(path))
        cache.free(seq)
    return cache


def _queue(rng: random.Random, n: int, paths: list[list[int]], first_id: int = 100):
    """`n` waiting requests: a cached path cut somewhere, then tokens of their own (or none of
    the cache at all), so that matches of every length, ties among them, occur."""
    out = []
    for j in range(n):
        if paths and rng.random() < 0.8:
            p = rng.choice(paths)
            head = p[: rng.randint(0, len(p))]
        else:
            head = []
        tail = [rng.randrange(4) for _ in range(rng.randint(1, 4))]
        out.append(Sequence(first_id + j, head + tail, SamplingParams(max_tokens=1)))
    return out


def _ids(seqs) -> list:
    return [getattr(s, "seq_id", s) for s in seqs]


def _names(ids) -> str:
    """'[r3, r1]' for requests (or their ids)."""
    return "[" + ", ".join(f"r{i}" for i in _ids(ids)) + "]"


def _show_queue(waiting, cache) -> str:
    """'[r100 (3 cached), r101 (0 cached), …]': each waiting request and its cached prefix."""
    return (
        "["
        + ", ".join(f"r{s.seq_id} ({cache.match_len(s.token_ids)} cached)" for s in waiting)
        + "]"
    )


def _check_order(got, want: list[Sequence], waiting: list[Sequence], call: str, size: int):
    """The learner's answer must be a list of the very requests of `waiting`, in `want`'s order."""
    try:
        got = list(got)
    except TypeError:
        what = f"{call} returned {got!r}; expected a list of the waiting requests"
        raise Mismatch(what, size) from None
    given = {id(s) for s in waiting}
    strangers = [g for g in got if id(g) not in given]
    if strangers:
        raise Mismatch(
            f"{call} returned {strangers[0]!r}, which is not one of the waiting requests; "
            "return the requests themselves (the Sequence objects of `waiting`), reordered",
            size,
        )
    if len(got) != len(waiting) or len({id(g) for g in got}) != len(got):
        missing = [s.seq_id for s in waiting if all(g is not s for g in got)]
        what = f"leaves out {_names(missing)}" if missing else "repeats a request"
        raise Mismatch(
            f"{call} returned {len(got)} requests for {len(waiting)} waiting: it {what}; a "
            "policy orders every waiting request, once (the scheduler then admits what fits)",
            size,
        )
    for j, (a, b) in enumerate(zip(got, want, strict=True)):
        if a is not b:
            return j, a, b
    return None


# -- task 1: longest prefix first -----------------------------------------------------------------
def check_lpm(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    kind = ("radix", "hash")[i % 2]
    bs = 1 if kind == "radix" else rng.choice((1, 2))
    paths = _paths(rng, rng.randint(0 if i < 2 else 1, 2 + i // 5), vocab=3, max_len=8)
    cache = _cache(rng, kind, bs, paths)
    waiting = _queue(rng, 1 + i // 3 if i > 1 else i + 1, paths)
    size = len(waiting) + sum(map(len, paths))
    call = (
        f"longest_prefix_first(waiting, cache) on a {kind} cache (blocks of {bs}), waiting "
        f"{_show_queue(waiting, cache)}"
    )
    want = lpm(list(waiting), cache)
    diff = _check_order(
        learner.longest_prefix_first(list(waiting), cache), want, waiting, call, size
    )
    if diff:
        j, a, b = diff
        ma, mb = cache.match_len(a.token_ids), cache.match_len(b.token_ids)
        why = (
            f"r{b.seq_id} has a longer cached prefix ({mb} > {ma} tokens)"
            if mb != ma
            else f"both have {ma} cached tokens, and r{b.seq_id} comes first in `waiting` "
            "(equal matches keep their order)"
        )
        raise Mismatch(
            f"{call}: position {j} of your order is r{a.seq_id}, minirt's lpm puts r{b.seq_id} "
            f"there: {why}. minirt's order: {_names(want)}",
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


def check_dfs(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    paths = _paths(rng, 1 + i // 4, vocab=3, max_len=6)
    cache = _cache(rng, "radix", 1, paths)
    waiting = _queue(rng, 2 + i // 3, paths)
    size = len(waiting) + sum(map(len, paths))
    call = f"heaviest_subtree_first(waiting, cache), waiting {_show_queue(waiting, cache)}"
    want = dfs_weight(list(waiting), cache)
    got = learner.heaviest_subtree_first(list(waiting), cache)
    diff = _check_order(got, want, waiting, call, size)
    if diff:
        j, a, b = diff
        raise Mismatch(
            f"{call}: position {j} of your order is r{a.seq_id}, minirt's dfs_weight puts "
            f"r{b.seq_id} there. Its order: {_names(want)}; the tree: "
            f"{_groups(waiting, cache)}. (At a node: its own requests in `waiting` order, then "
            "its children's subtrees heaviest first; of equal weights, the subtree reached last "
            "first — what a stack pops)",
            size,
        )


# -- task 3: longest prefix first, with aging -----------------------------------------------------
def check_aging(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    """A run of calls on one policy object: each call, the head of the reference's order is
    admitted (0-2 requests), new requests arrive, now and then a preempted one comes back at the
    front, and the cache learns the admitted prompts."""
    max_wait = (0, 1, 2, 3)[i % 4] if i < 8 else rng.randint(0, 4)
    paths = _paths(rng, rng.randint(1, 3), vocab=3, max_len=6)
    cache = _cache(rng, "radix", 1, paths)
    mine, ref = learner.AgingLPM(max_wait), AgingLPM(max_wait)
    waiting = _queue(rng, rng.randint(2, 4), paths)
    next_id, seq_ids = 100 + len(waiting), 0
    log: list[str] = []
    size = 0
    for call_no in range(1, 7 + i // 4):
        size += len(waiting)
        ages = ", ".join(f"r{s.seq_id}: {ref.age.get(s.seq_id, 0) + 1}" for s in waiting)
        call = (
            f"AgingLPM(max_wait={max_wait}); after {len(log)} calls "
            f"({'; '.join(log[-3:]) or '-'}), "
            f"call {call_no} with waiting {_show_queue(waiting, cache)} (ages with this call: "
            f"{ages})"
        )
        want = ref(list(waiting), cache)
        diff = _check_order(mine(list(waiting), cache), want, waiting, call, size)
        if diff:
            j, a, b = diff
            old = [f"r{s.seq_id}" for s in waiting if ref.age[s.seq_id] > max_wait]
            raise Mismatch(
                f"{call}: position {j} of your order is r{a.seq_id}, the reference's is "
                f"r{b.seq_id}. Waiting longer than {max_wait} calls: {old or 'none'} (they go "
                f"first, in `waiting` order); the others by longest cached prefix. The order: "
                f"{_names(want)}",
                size,
            )
        admitted = want[: rng.randint(0, min(2, len(want)))]
        for s in admitted:  # computed: its prompt is cached now, as the engine would leave it
            waiting.remove(s)
            tokens = s.token_ids + [0]
            cache.allocate(10_000 + seq_ids, tokens, len(tokens))
            cache.cache_computed(10_000 + seq_ids, tokens, len(s.token_ids))
            cache.free(10_000 + seq_ids)
            seq_ids += 1
        new = _queue(rng, rng.randint(0, 2), paths, first_id=next_id)
        next_id += len(new)
        waiting += new
        back = ""
        if admitted and rng.random() < 0.2:  # preempted: back at the front, age kept
            waiting.insert(0, admitted[0])
            back = f", r{admitted[0].seq_id} preempted back to the front"
        log.append(f"admitted {_names(admitted)}, {len(new)} arrived{back}")
        if not waiting:
            waiting = _queue(rng, 2, paths, first_id=next_id)
            next_id += 2


# -- task 4: the engine -------------------------------------------------------------------------
BYTES_PER_TOKEN = 8192  # the embedded target's KV per token (float32)


class _Spy:
    """The policy the learner's engine runs: the learner's answer to every call, checked against
    the reference's answer to the same call (the first differing call names its step)."""

    def __init__(self, mine, ref, name: str):
        self.mine, self.ref, self.name = mine, ref, name
        self.scheduler = None
        self.calls = 0

    def __call__(self, waiting, cache):
        self.calls += 1
        step = self.scheduler.num_steps if self.scheduler is not None else "?"
        want = self.ref(list(waiting), cache)
        got = self.mine(list(waiting), cache)
        call = f"step {step}: {self.name}(waiting {_show_queue(waiting, cache)})"
        diff = _check_order(got, want, waiting, call, 0)
        if diff:
            j, a, b = diff
            raise Mismatch(
                f"{call}: position {j} of your order is r{a.seq_id}, the reference puts "
                f"r{b.seq_id} there ({_names(want)})"
            )
        return want


def _workload(rng: random.Random, i: int):
    """Few-shot (system prompts shared by groups of requests, arriving mixed), multi-turn (rounds
    that resend each conversation with a new question) or starving (requests without a shared
    prefix arrive first, then many that share one: longest-prefix-first keeps passing them over),
    small enough for a CPU."""
    vocab = 256

    def tokens(lo: int, hi: int) -> list[int]:
        return [rng.randrange(vocab) for _ in range(rng.randint(lo, hi))]

    if POLICY_CASES[i % 3] == "aging":
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


def _run(policy, cache_kind, rounds, bs, num_blocks, seats, max_tokens):
    from minirt import LLM  # the engine, only for this task

    llm = LLM(
        device="cpu",
        block_size=bs,
        kv_cache_bytes=num_blocks * bs * BYTES_PER_TOKEN,
        max_num_batched_tokens=32,
        max_num_seqs=seats,
        prefix_cache=cache_kind,
        schedule_policy=policy,
        trace=True,
    )
    if isinstance(policy, _Spy):
        policy.scheduler = llm.scheduler
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    out = []
    for prompts in rounds:
        outs = llm.generate(prompts, params, use_tqdm=False)
        steps = [e for e in llm.recorder.events if e["type"] == "step"]
        out.append((prompts, outs, steps, llm.last_stats.prefix_cache_hit_rate))
    return llm, out


POLICY_CASES = ("lpm", "dfs-weight", "aging")


def check_engine(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    which = POLICY_CASES[i % 3]
    kind, rounds = _workload(rng, i)
    bs = rng.choice((2, 4))
    cache_kind = "hash" if which == "lpm" and (i // 3) % 2 else "radix"
    max_tokens, seats = rng.randint(2, 3), rng.randint(2, 3)
    longest = max(len(p) for prompts in rounds for p in prompts) + max_tokens
    num_blocks = seats * -(-longest // bs) + rng.randint(1, 4)  # tight: the cache must evict
    max_wait = rng.randint(1, 3)
    if which == "lpm":
        mine, ref, name = learner.longest_prefix_first, lpm, "longest_prefix_first"
    elif which == "dfs-weight":
        mine, ref, name = learner.heaviest_subtree_first, dfs_weight, "heaviest_subtree_first"
    else:
        mine, ref, name = learner.AgingLPM(max_wait), AgingLPM(max_wait), f"AgingLPM({max_wait})"
    size = sum(len(p) for prompts in rounds for p in prompts)
    case = (
        f"{name} on a {kind} workload ({len(rounds)} rounds of {len(rounds[0])} prompts, {size} "
        f"tokens), {cache_kind} cache, block_size {bs}, {num_blocks} blocks, {seats} seats "
        f"(max_num_seqs), max_tokens {max_tokens}"
    )
    spy = _Spy(mine, ref, name)
    try:
        mine_llm, got = _run(spy, cache_kind, rounds, bs, num_blocks, seats, max_tokens)
    except Mismatch as e:
        raise Mismatch(f"{case}: {e}", size) from e.__cause__
    reference = AgingLPM(max_wait) if which == "aging" else which
    ref_llm, want = _run(reference, cache_kind, rounds, bs, num_blocks, seats, max_tokens)
    for r, (g, w) in enumerate(zip(got, want, strict=True)):
        at = f"{case}: round {r + 1}"
        _compare_round(at, g, w, size)
    bm = mine_llm.block_manager
    try:
        bm.check_invariants()
    except AssertionError as e:
        raise Mismatch(f"{case}: after the run, check_invariants says: {e}", size) from None
    if bm.tables:
        raise Mismatch(f"{case}: after the run sequences {sorted(bm.tables)} hold blocks", size)
    bm.evict()
    if bm.num_free_blocks != bm.num_blocks:
        raise Mismatch(
            f"{case}: with every request done and the cache evicted, "
            f"{bm.num_blocks - bm.num_free_blocks} blocks are not free (leaked)",
            size,
        )
    if spy.calls == 0:
        raise Mismatch(f"{case}: the engine never called your policy", size)


def _compare_round(at: str, got, want, size: int) -> None:
    _, m_out, m_steps, m_rate = got
    _, w_out, w_steps, w_rate = want
    for ms, ws in zip(m_steps, w_steps, strict=False):
        step = f"{at}, step {ms['step']}"
        adm = [(s["seq_id"], s["num_new_tokens"]) for s in ms["scheduled"]]
        ref = [(s["seq_id"], s["num_new_tokens"]) for s in ws["scheduled"]]
        if adm != ref:
            raise Mismatch(f"{step}: scheduled (request, new tokens) {adm}; minirt {ref}", size)
        if ms["block_tables"] != ws["block_tables"]:
            raise Mismatch(
                f"{step}: block tables {ms['block_tables']}; minirt's {ws['block_tables']}", size
            )
        if ms["num_free_blocks"] != ws["num_free_blocks"]:
            raise Mismatch(
                f"{step}: {ms['num_free_blocks']} blocks free or evictable; minirt has "
                f"{ws['num_free_blocks']}",
                size,
            )
    if len(m_steps) != len(w_steps):
        raise Mismatch(f"{at}: your run took {len(m_steps)} steps; minirt's {len(w_steps)}", size)
    for k, (a, b) in enumerate(zip(m_out, w_out, strict=True)):
        if a.num_cached_tokens != b.num_cached_tokens:
            raise Mismatch(
                f"{at}, request {k + 1}: {a.num_cached_tokens} prompt tokens came from the "
                f"cache; with the reference policy {b.num_cached_tokens}",
                size,
            )
        if a.token_ids != b.token_ids:
            raise Mismatch(
                f"{at}, request {k + 1}: generated {a.token_ids}; the reference run {b.token_ids}",
                size,
            )
    if m_rate != w_rate:
        raise Mismatch(
            f"{at}: prefix-cache hit rate {m_rate:.3f}; the reference's {w_rate:.3f}", size
        )


TASKS = [
    Task("1", "longest_prefix_first", 2, ("longest_prefix_first",), check_lpm, num_cases=40),
    Task("2", "heaviest_subtree_first", 4, ("heaviest_subtree_first",), check_dfs, num_cases=40),
    Task("3", "AgingLPM", 3, ("AgingLPM",), check_aging, num_cases=30),
    Task(
        "4",
        "your policies in the engine",
        5,
        ("longest_prefix_first", "heaviest_subtree_first", "AgingLPM"),
        check_engine,
        num_cases=6,
    ),
]
