"""Lab 6 (labs/lab06_radix_tree.ipynb): the radix tree of a prefix cache — match, split and
insert, locks and LRU clocks, eviction — plugged into the engine as `LLM(prefix_cache=...)`.

Tasks 1-4 play the learner's tree functions against minirt's radix cache on random trees (the
grader's trees are minirt's `RadixNode`s, or copies of them in the learner's `Node`). Task 5 runs
the engine twice on fresh multi-turn and branching workloads in a pool small enough to evict —
once with the learner's `MyRadixCache`, once with minirt's `"radix"` — and compares what the
cache decides: every step's admissions, block tables and free blocks, each request's cached
tokens, the greedy tokens, the evicted tokens, and that no block leaks. The notebook gives the
block books, so the same tree makes exactly the same decisions as minirt's; nothing is left to
taste, which is why the comparison can be exact.
"""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

from minirt.grading.core import Mismatch, Refused, Task
from minirt.grading.guard import Forbidden, check_instance
from minirt.kv.radix_cache import RadixCache
from minirt.kv.radix_tree import RadixNode, all_nodes, match, touch
from minirt.kv.radix_tree import insert as insert_path

FORBIDDEN = Forbidden(
    modules=("minirt.kv.radix_cache", "minirt.kv.radix_tree", "minirt.kv.caches"),
    names=("RadixCache", "RadixNode", "PREFIX_CACHES", "make_prefix_cache"),
    strings=("radix", "sglang"),  # the registry's name, and the preset that picks it
    what="minirt's radix cache",
)


def _short(tokens, n: int = 12) -> str:
    tokens = list(tokens)
    return (
        str(tokens)
        if len(tokens) <= n
        else f"[{', '.join(map(str, tokens[:n]))}, … ({len(tokens)})]"
    )


def _path(node) -> list[int]:
    out = []
    while node is not None and node.parent is not None:
        out = list(node.key) + out
        node = node.parent
    return out


def _random_paths(rng: random.Random, n: int, vocab: int = 3, max_len: int = 10) -> list[list]:
    """Token lists that share prefixes (a small vocabulary), as prompts of one app do."""
    paths: list[list[int]] = []
    for _ in range(n):
        if paths and rng.random() < 0.7:  # continue or branch off an earlier one
            base = rng.choice(paths)
            base = base[: rng.randint(0, len(base))]
        else:
            base = []
        paths.append(base + [rng.randrange(vocab) for _ in range(rng.randint(1, max_len))])
    return paths


# -- task 1: match -----------------------------------------------------------------------------
def check_match(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    paths = _random_paths(rng, 0 if i == 0 else rng.randint(1, 2 + i // 4))
    root = RadixNode([], [])
    for p in paths:
        insert_path(root, p)
    kind = i % 4
    if kind == 0 or not paths:  # anything (often a miss)
        tokens = [rng.randrange(3) for _ in range(rng.randint(0, 8))]
    elif kind == 1:  # a whole path
        tokens = list(rng.choice(paths))
    elif kind == 2:  # a path, then more
        tokens = rng.choice(paths) + [rng.randrange(3) for _ in range(rng.randint(1, 4))]
    else:  # a path that leaves another one somewhere, then goes on (its tokens may agree with
        p = rng.choice(paths)  # a deeper edge: a walk must not go on after a partial edge)
        j = rng.randrange(len(p))
        tokens = p[:j] + [rng.choice([t for t in range(3) if t != p[j]])]
        tokens += [rng.randrange(3) for _ in range(rng.randint(0, 6))]
    size = len(tokens) + sum(map(len, paths))
    call = f"tree of the token lists {paths}; match(root, {tokens})"
    got = learner.match(root, list(tokens))
    want_nodes, want_m = match(root, tokens)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise Mismatch(f"{call} returned {got!r}; expected (nodes, m)", size)
    nodes, m = got
    if m != want_m:
        raise Mismatch(f"{call} says {m!r} tokens agree; minirt says {want_m}", size)
    nodes = list(nodes)
    for k, (a, b) in enumerate(zip(nodes, want_nodes, strict=False)):
        if a is not b:
            got_key = getattr(a, "key", a)
            raise Mismatch(
                f"{call}: node {k} of your list has key {got_key}; minirt visits the node "
                f"with key {b.key} there (the root first, then one node per edge walked)",
                size,
            )
    if len(nodes) != len(want_nodes):
        raise Mismatch(
            f"{call} returned {len(nodes)} nodes; minirt visits {len(want_nodes)} (the root, "
            "then every node whose edge was compared, the last one even if it agrees in part)",
            size,
        )


# -- a reference tree built the way the engine builds it ----------------------------------
class _Reference:
    """minirt's RadixCache, driven by random sequences (allocate, cache what was computed,
    maybe free), in a pool large enough that nothing is evicted; `log` says what was done."""

    def __init__(self, rng: random.Random, block_size: int, num_seqs: int, keep_running: float):
        self.cache = RadixCache(4096, block_size)
        self.log: list[str] = []
        self.steps = []  # (tokens, m at allocation, slots of the computed tokens)
        for seq, tokens in enumerate(_random_paths(rng, num_seqs, vocab=3, max_len=12)):
            tokens = tokens + [rng.randrange(3)]  # the last token is never cached
            n = len(tokens) - 1
            m = self.cache.allocate(seq, tokens, len(tokens))
            table, bs = self.cache.tables[seq], block_size
            slots = [table[p // bs] * bs + p % bs for p in range(n)]
            self.cache.cache_computed(seq, tokens, n)
            self.steps.append((tokens, m, slots))
            running = rng.random() < keep_running
            if not running:
                self.cache.free(seq)
            self.log.append(f"{_short(tokens[:n])}{' (still running)' if running else ''}")

    def mirror(self, node_class) -> tuple[object, dict[int, object]]:
        """The tree copied into the learner's Node class; node_id -> the copy."""
        copies: dict[int, object] = {}

        def copy(node, parent):
            mine = node_class(
                list(node.key),
                list(node.slots),
                parent,
                {},
                node.lock_ref,
                node.last_access,
                node.node_id,
            )
            copies[node.node_id] = mine
            for first, child in node.children.items():
                mine.children[first] = copy(child, mine)
            return mine

        return copy(self.cache.root, None), copies


def _shape(root) -> list[tuple]:
    """(path, key, slots) of every node below the root, in a fixed order."""
    out, stack = [], [root]
    while stack:
        n = stack.pop()
        if n is not root:
            out.append((tuple(_path(n)), tuple(n.key), tuple(n.slots)))
        stack += n.children.values()
    return sorted(out)


def _first_difference(mine: list[tuple], want: list[tuple]) -> str:
    a, b = set(mine), set(want)
    extra, missing = sorted(a - b), sorted(b - a)
    parts = []
    if missing:
        path, key, slots = missing[0]
        parts.append(
            f"minirt has a node with key {list(key)} (slots {list(slots)}) at the end "
            f"of the path {_short(path)}, yours does not"
        )
    if extra:
        path, key, slots = extra[0]
        parts.append(
            f"you have a node with key {list(key)} (slots {list(slots)}) at the end "
            f"of the path {_short(path)}"
        )
    return "; ".join(parts)


# -- task 2: split and insert ------------------------------------------------------------------
def check_insert(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    bs = rng.choice((1, 2, 4))
    ref = _Reference(rng, bs, num_seqs=1 + i // 3, keep_running=0.0)
    root = learner.Node([], [], lock_ref=1)
    ids = itertools.count(1)
    done: list[str] = []
    size = sum(len(t) for t, _, _ in ref.steps)
    for tokens, m, slots in ref.steps:
        n = len(slots)
        head = learner.split(root, list(tokens), m, lambda: next(ids))
        done.append(f"split(root, {_short(tokens)}, m={m}, …)")
        if _path(head) != list(tokens[:m]):
            raise Mismatch(
                f"after {'; '.join(done)}: split returned the node of the path "
                f"{_short(_path(head))}; expected the node of the path tokens[:{m}]",
                size,
            )
        node = learner.insert(root, list(tokens[:n]), list(slots), lambda: next(ids))
        done.append(f"insert(root, {_short(tokens[:n])}, slots, …)")
        if _path(node) != list(tokens[:n]):
            raise Mismatch(
                f"after {'; '.join(done)}: insert returned the node of the path "
                f"{_short(_path(node))}; expected the node of the whole token list",
                size,
            )
    want = _shape(ref.cache.root)
    mine = _shape(root)
    if mine != want:
        steps = "\n      ".join(done[-6:])
        raise Mismatch(
            f"block_size {bs}; after\n      {steps}\n    your tree differs from minirt's: "
            f"{_first_difference(mine, want)}",
            size,
        )


# -- task 3: lock and touch --------------------------------------------------------------------
def check_lock_touch(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    ref = _Reference(rng, rng.choice((1, 2, 4)), num_seqs=2 + i // 3, keep_running=0.5)
    root, copies = ref.mirror(learner.Node)
    nodes = all_nodes(ref.cache.root)
    log = [f"a tree of {len(nodes)} nodes made from the token lists: " + ", ".join(ref.log)]
    size = len(nodes)
    for _ in range(6):
        node = rng.choice(nodes)
        where = f"the node of the path {_short(_path(node))}"
        if rng.random() < 0.6:
            d = -1 if node.lock_ref > 0 and rng.random() < 0.5 else +1
            ref.cache._lock(node, d)
            learner.lock(copies[node.node_id], d)
            log.append(f"lock({where}, {d:+d})")
        else:
            clock = ref.cache.clock = ref.cache.clock + 1
            touch(node, clock)
            learner.touch(copies[node.node_id], clock)
            log.append(f"touch({where}, {clock})")
        for n in [ref.cache.root, *nodes]:
            mine = copies[n.node_id]
            for field in ("lock_ref", "last_access"):
                if getattr(mine, field) != getattr(n, field):
                    what = "the root" if n is ref.cache.root else f"path {_short(_path(n))}"
                    steps = "\n      ".join(log[-5:])
                    raise Mismatch(
                        f"after\n      {steps}\n    the node of {what} has {field} "
                        f"{getattr(mine, field)}; minirt's has {getattr(n, field)}",
                        size,
                    )


# -- task 4: LRU eviction ----------------------------------------------------------------------
def check_evict(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    ref = _Reference(rng, rng.choice((1, 2, 4)), num_seqs=2 + i // 3, keep_running=0.3)
    root, copies = ref.mirror(learner.Node)
    order: list[int] = []  # minirt's eviction order (node ids)
    detach = ref.cache._detach
    ref.cache._detach = lambda node: (order.append(node.node_id), detach(node))
    ref.cache.evict()
    stop = len(order) if i % 3 == 0 else rng.randint(0, len(order))
    removed: list = []
    learner.evict_lru(root, lambda: len(removed) >= stop, removed.append)
    ids = [getattr(n, "node_id", n) for n in removed]
    size = len(copies)
    tree = f"a tree of {len(copies) - 1} nodes made from the token lists: " + ", ".join(ref.log)
    if ids != order[:stop]:
        k = next((j for j, (a, b) in enumerate(zip(ids, order, strict=False)) if a != b), None)
        if k is None:
            k = min(len(ids), stop)
        want = _short(_path_of(copies, order[k])) if k < stop else "nothing (enough() was true)"
        got = _short(_path_of(copies, ids[k])) if k < len(ids) else "nothing"
        raise Mismatch(
            f"{tree}; evicting until {stop} nodes are gone: removal {k + 1} was the node of "
            f"{got}; minirt removes {want} (the least recently used unlocked leaf)",
            size,
        )
    for node_id in ids:
        node = copies[node_id]
        if node.parent.children.get(node.key[0]) is node:
            raise Mismatch(
                f"{tree}: you removed the node of path {_short(_path(node))} but "
                "it is still its parent's child",
                size,
            )


def _path_of(copies: dict, node_id: int) -> list[int]:
    # the copy's path as it was (its parent link stays when it is unlinked)
    return _path(copies[node_id])


# -- task 5: the engine -----------------------------------------------------------------------
BYTES_PER_TOKEN = 8192  # the embedded target's KV per token (float32)


def _workload(rng: random.Random, i: int):
    """Rounds of prompts: multi-turn (each round resends a conversation with its reply and a new
    question) or branching (paths of a tree of segments), small enough for a CPU."""
    vocab = 256
    if i % 2 == 0:
        convs = [
            [rng.randrange(vocab) for _ in range(rng.randint(4, 14))] for _ in range(2 + i // 3)
        ]
        return "multi-turn", convs, None
    root = [rng.randrange(vocab) for _ in range(rng.randint(6, 16))]
    level, rounds = [root], [[root]]
    for _ in range(2):
        level = [
            p + [rng.randrange(vocab) for _ in range(rng.randint(2, 6))]
            for p in level
            for _ in range(rng.randint(1, 3))
        ]
        rounds.append(list(level))
    return "branching", None, rounds


def _run(cache, rounds_or_convs, kind, bs, num_blocks, max_tokens, rng_seed):
    from minirt import LLM, SamplingParams  # the engine, only for this task

    llm = LLM(
        device="cpu",
        block_size=bs,
        kv_cache_bytes=num_blocks * bs * BYTES_PER_TOKEN,
        max_num_batched_tokens=32,
        prefix_cache=cache,
        schedule_policy="fcfs",
        trace=True,
    )
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    rng = random.Random(rng_seed)  # the same new questions on both sides
    rounds = []
    if kind == "multi-turn":
        convs = [list(c) for c in rounds_or_convs]
        for _ in range(3):
            outs = llm.generate(convs, params, use_tqdm=False)
            rounds.append((list(map(list, convs)), outs, _steps(llm)))
            convs = [
                c + o.token_ids + [rng.randrange(256) for _ in range(3)]
                for c, o in zip(convs, outs, strict=True)
            ]
    else:
        for prompts in rounds_or_convs:
            outs = llm.generate(prompts, params, use_tqdm=False)
            rounds.append((prompts, outs, _steps(llm)))
    return llm, rounds


def _steps(llm) -> list[dict]:
    return [e for e in llm.recorder.events if e["type"] == "step"]


def check_engine(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    bs = (2, 4, 8)[i % 3]
    kind, convs, branches = _workload(rng, i)
    max_tokens = rng.randint(2, 4)
    prompts0 = convs if convs is not None else branches[-1]
    longest = max(map(len, prompts0)) + (3 + max_tokens) * 3
    num_blocks = -(-longest // bs) + rng.randint(1, 4)  # tight: the cache must evict
    seed = rng.randrange(2**31)
    source = convs if convs is not None else branches
    mine_llm, mine = _run(learner.MyRadixCache, source, kind, bs, num_blocks, max_tokens, seed)
    refusals = check_instance("your cache", mine_llm.block_manager, FORBIDDEN)
    if refusals:
        raise Refused("; ".join(map(str, refusals[:3])))
    ref_llm, want = _run("radix", source, kind, bs, num_blocks, max_tokens, seed)
    size = sum(len(p) for prompts, _, _ in want for p in prompts)
    case = (
        f"{kind}, {len(want)} rounds of {len(want[0][0])}-{len(want[-1][0])} prompts "
        f"({size} tokens), block_size {bs}, {num_blocks} blocks, max_tokens {max_tokens}"
    )
    for r, ((_, m_out, m_steps), (_, w_out, w_steps)) in enumerate(zip(mine, want, strict=True)):
        at = f"{case}: round {r + 1}"
        for ms, ws in zip(m_steps, w_steps, strict=False):
            _compare_step(at, ms, ws, size)
        if len(m_steps) != len(w_steps):
            raise Mismatch(
                f"{at}: your run took {len(m_steps)} steps; minirt's {len(w_steps)}", size
            )
        for k, (a, b) in enumerate(zip(m_out, w_out, strict=True)):
            if a.num_cached_tokens != b.num_cached_tokens:
                raise Mismatch(
                    f"{at}, request {k + 1}: {a.num_cached_tokens} prompt tokens "
                    f"came from your cache; minirt's radix cache had "
                    f"{b.num_cached_tokens}",
                    size,
                )
            if a.token_ids != b.token_ids:
                pairs = zip(a.token_ids, b.token_ids, strict=False)
                j = next((j for j, (x, y) in enumerate(pairs) if x != y), len(b.token_ids))
                raise Mismatch(
                    f"{at}, request {k + 1}: generated token {j + 1} is "
                    f"{a.token_ids[j]}, minirt's {b.token_ids[j]} (a cached block "
                    "held the wrong KV?)",
                    size,
                )
    bm, ref = mine_llm.block_manager, ref_llm.block_manager
    if bm.num_evicted_tokens != ref.num_evicted_tokens:
        raise Mismatch(
            f"{case}: your cache evicted {bm.num_evicted_tokens} tokens; minirt's "
            f"{ref.num_evicted_tokens}",
            size,
        )
    try:
        bm.check_invariants()
    except AssertionError as e:
        raise Mismatch(f"{case}: after the run, check_invariants says: {e}", size) from None
    if bm.tables:
        raise Mismatch(
            f"{case}: after the run sequences {sorted(bm.tables)} still hold blocks", size
        )
    bm.evict()
    if bm.num_free_blocks != bm.num_blocks:
        raise Mismatch(
            f"{case}: with every sequence done and the tree evicted, "
            f"{bm.num_blocks - bm.num_free_blocks} blocks are not free (leaked)",
            size,
        )


def _compare_step(at: str, mine: dict, want: dict, size: int) -> None:
    step = f"{at}, step {mine['step']}"
    adm = [(s["seq_id"], s["num_new_tokens"]) for s in mine["scheduled"]]
    ref = [(s["seq_id"], s["num_new_tokens"]) for s in want["scheduled"]]
    if adm != ref:
        raise Mismatch(
            f"{step}: you scheduled (sequence, new tokens) {adm}; minirt {ref} "
            "(its admissions follow the cache's free and evictable blocks)",
            size,
        )
    for seq, table in want["block_tables"].items():
        got = mine["block_tables"].get(seq)
        if got != table:
            raise Mismatch(f"{step}: sequence {seq}'s block table is {got}; minirt's {table}", size)
    if mine["num_free_blocks"] != want["num_free_blocks"]:
        raise Mismatch(
            f"{step}: {mine['num_free_blocks']} blocks free or evictable; minirt "
            f"has {want['num_free_blocks']}",
            size,
        )


TASKS = [
    Task("1", "match", 2, ("match",), check_match, num_cases=40),
    Task("2", "split, insert", 3, ("Node", "split", "insert"), check_insert, num_cases=30),
    Task("3", "lock, touch", 2, ("Node", "lock", "touch"), check_lock_touch, num_cases=30),
    Task("4", "evict_lru", 3, ("Node", "evict_lru"), check_evict, num_cases=30),
    Task("5", "MyRadixCache in the engine", 5, ("MyRadixCache",), check_engine, num_cases=6),
]
