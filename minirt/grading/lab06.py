"""Lab 6 (labs/lab06_radix_tree.ipynb): the radix tree of a prefix cache — match, split and
insert, locks and LRU clocks, eviction — plugged into the engine as `LLM(prefix_cache=...)`.

Tasks 1-4 play the learner's tree functions against minirt's radix cache on random trees (the
grader's trees are minirt's `RadixNode`s, or copies of them in the learner's `Node`). Task 5
(lab06_engine.py) runs the engine twice on fresh multi-turn and branching workloads in a pool
small enough to evict — once with the learner's `MyRadixCache`, once with minirt's `"radix"` —
and compares what the cache decides: every step's admissions, block tables and free blocks, each
request's cached tokens, the greedy tokens, the evicted tokens, and that no block leaks. The
notebook gives the block books, so the same tree makes exactly the same decisions as minirt's;
nothing is left to taste, which is why the comparison can be exact.

Every task is played apart: the grader's worker runs the learner's side and records what came
out as plain data (the nodes a match visited by their place in the tree, the tree's shape, every
node's lock and clock after each operation, the removals, the engine's steps); the parent runs
minirt's side on the same case and compares.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from types import SimpleNamespace

from minirt.grading import lab06_engine
from minirt.grading.core import Mismatch, Task
from minirt.grading.guard import Forbidden
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
# A case is plain data (token lists); each side builds the same tree of minirt's RadixNodes from
# it, and a node the learner returns is named by its place in a fixed walk of that tree.
def draw_match(rng: random.Random, i: int) -> dict:
    paths = _random_paths(rng, 0 if i == 0 else rng.randint(1, 2 + i // 4))
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
    return {"paths": paths, "tokens": tokens}


def _tree(paths: list[list[int]]) -> tuple[RadixNode, dict[int, int]]:
    """The tree of the token lists, and each node's place in a fixed walk (by id())."""
    root = RadixNode([], [])
    for p in paths:
        insert_path(root, p)
    places, stack = {}, [root]
    while stack:
        n = stack.pop()
        places[id(n)] = len(places)
        stack += [n.children[t] for t in sorted(n.children, reverse=True)]
    return root, places


def _named(nodes, places: dict[int, int]) -> list[dict]:
    """Nodes as their place in the tree (None: not one of its nodes) and their key."""
    out = []
    for n in nodes:
        key = getattr(n, "key", n)
        plain = list(key) if isinstance(key, list | tuple) else repr(key)[:80]
        out.append({"place": places.get(id(n)), "key": plain})
    return out


def play_match(learner: SimpleNamespace, case: dict) -> dict:
    root, places = _tree(case["paths"])
    got = learner.match(root, list(case["tokens"]))
    if not (isinstance(got, tuple) and len(got) == 2):
        return {"returned": repr(got)[:300]}
    nodes, m = got
    return {"m": m, "nodes": _named(list(nodes), places)}


def expect_match(case: dict) -> dict:
    root, places = _tree(case["paths"])
    nodes, m = match(root, case["tokens"])
    return {"m": m, "nodes": _named(nodes, places)}


def compare_match(got: dict, want: dict, case: dict) -> None:
    paths, tokens = case["paths"], case["tokens"]
    size = len(tokens) + sum(map(len, paths))
    call = f"tree of the token lists {paths}; match(root, {tokens})"
    if "returned" in got:
        raise Mismatch(f"{call} returned {got['returned']}; expected (nodes, m)", size)
    if got["m"] != want["m"]:
        raise Mismatch(f"{call} says {got['m']!r} tokens agree; minirt says {want['m']}", size)
    for k, (a, b) in enumerate(zip(got["nodes"], want["nodes"], strict=False)):
        if a["place"] is None or a["place"] != b["place"]:
            raise Mismatch(
                f"{call}: node {k} of your list has key {a['key']}; minirt visits the node "
                f"with key {b['key']} there (the root first, then one node per edge walked)",
                size,
            )
    if len(got["nodes"]) != len(want["nodes"]):
        raise Mismatch(
            f"{call} returned {len(got['nodes'])} nodes; minirt visits {len(want['nodes'])} "
            "(the root, then every node whose edge was compared, the last one even if it agrees "
            "in part)",
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
# Tasks 2-4 draw a seed: each side builds the same reference tree from it (minirt's RadixCache,
# driven as the engine drives it), and the learner's side works on a copy in its own Node class.
def _draw_tree(num_seqs: Callable[[int], int]):
    def draw(rng: random.Random, i: int) -> dict:
        bs = rng.choice((1, 2, 4))
        return {"block_size": bs, "num_seqs": num_seqs(i), "seed": rng.randrange(2**32), "i": i}

    return draw


def _insert_reference(case: dict) -> _Reference:
    return _Reference(random.Random(case["seed"]), case["block_size"], case["num_seqs"], 0.0)


def play_insert(learner: SimpleNamespace, case: dict) -> dict:
    """The paths of the nodes split and insert returned, step by step (up to the first at the
    wrong place: the tree cannot be built on from there), then the tree's shape."""
    ref = _insert_reference(case)
    root = learner.Node([], [], lock_ref=1)
    ids = itertools.count(1)
    steps = []
    for tokens, m, slots in ref.steps:
        n = len(slots)
        head = learner.split(root, list(tokens), m, lambda: next(ids))
        steps.append({"head": _path(head)})
        if steps[-1]["head"] != list(tokens[:m]):
            return {"steps": steps}
        node = learner.insert(root, list(tokens[:n]), list(slots), lambda: next(ids))
        steps[-1]["node"] = _path(node)
        if steps[-1]["node"] != list(tokens[:n]):
            return {"steps": steps}
    return {"steps": steps, "shape": _shape(root)}


def expect_insert(case: dict) -> dict:
    ref = _insert_reference(case)
    steps = [{"tokens": tokens, "m": m, "n": len(slots)} for tokens, m, slots in ref.steps]
    return {"steps": steps, "shape": _shape(ref.cache.root)}


def compare_insert(got: dict, want: dict, case: dict) -> None:
    done: list[str] = []
    size = sum(len(s["tokens"]) for s in want["steps"])
    for g, w in zip(got["steps"], want["steps"], strict=False):
        tokens, m, n = w["tokens"], w["m"], w["n"]
        done.append(f"split(root, {_short(tokens)}, m={m}, …)")
        if g["head"] != list(tokens[:m]):
            raise Mismatch(
                f"after {'; '.join(done)}: split returned the node of the path "
                f"{_short(g['head'])}; expected the node of the path tokens[:{m}]",
                size,
            )
        done.append(f"insert(root, {_short(tokens[:n])}, slots, …)")
        if g["node"] != list(tokens[:n]):
            raise Mismatch(
                f"after {'; '.join(done)}: insert returned the node of the path "
                f"{_short(g['node'])}; expected the node of the whole token list",
                size,
            )
    mine, want_shape = got["shape"], want["shape"]
    if mine != want_shape:
        steps = "\n      ".join(done[-6:])
        raise Mismatch(
            f"block_size {case['block_size']}; after\n      {steps}\n    your tree differs from "
            f"minirt's: {_first_difference(mine, want_shape)}",
            size,
        )


# -- task 3: lock and touch --------------------------------------------------------------------
def _lock_touch(case: dict, learner: SimpleNamespace | None = None) -> dict:
    """Six locks and touches on random nodes of the reference tree, chosen from the seed and the
    reference's own locks; after each, every node's [lock_ref, last_access], on minirt's tree or
    (given the `learner`) on the learner's copy of it, which the learner's lock and touch change
    instead."""
    rng = random.Random(case["seed"])
    ref = _Reference(rng, case["block_size"], case["num_seqs"], keep_running=0.5)
    nodes = all_nodes(ref.cache.root)
    copies = ref.mirror(learner.Node)[1] if learner else {}
    ops, states = [], []
    for _ in range(6):
        node = rng.choice(nodes)
        where = f"the node of the path {_short(_path(node))}"
        if rng.random() < 0.6:
            d = -1 if node.lock_ref > 0 and rng.random() < 0.5 else +1
            ref.cache._lock(node, d)  # the reference's locks choose the next unlock
            if learner:
                learner.lock(copies[node.node_id], d)
            ops.append(f"lock({where}, {d:+d})")
        else:
            clock = ref.cache.clock = ref.cache.clock + 1
            touch(node, clock)
            if learner:
                learner.touch(copies[node.node_id], clock)
            ops.append(f"touch({where}, {clock})")
        seen = [ref.cache.root, *nodes]
        if learner:
            seen = [copies[n.node_id] for n in seen]
        states.append([[n.lock_ref, n.last_access] for n in seen])
    tree = f"a tree of {len(nodes)} nodes made from the token lists: " + ", ".join(ref.log)
    paths = [None] + [_path(n) for n in nodes]  # the root, then each node, as in `states`
    return {"ops": ops, "states": states, "tree": tree, "paths": paths}


def play_lock_touch(learner: SimpleNamespace, case: dict) -> list:
    return _lock_touch(case, learner)["states"]


def expect_lock_touch(case: dict) -> dict:
    return _lock_touch(case)


def compare_lock_touch(got: list, want: dict, case: dict) -> None:
    log, size = [want["tree"]], len(want["paths"]) - 1
    for op, mine, theirs in zip(want["ops"], got, want["states"], strict=True):
        log.append(op)
        for path, a, b in zip(want["paths"], mine, theirs, strict=True):
            for field, x, y in zip(("lock_ref", "last_access"), a, b, strict=True):
                if x != y:
                    what = "the root" if path is None else f"path {_short(path)}"
                    steps = "\n      ".join(log[-5:])
                    raise Mismatch(
                        f"after\n      {steps}\n    the node of {what} has {field} {x}; "
                        f"minirt's has {y}",
                        size,
                    )


# -- task 4: LRU eviction ----------------------------------------------------------------------
def _eviction(case: dict) -> tuple[_Reference, int]:
    """The reference tree, and after how many removals `enough()` turns true: every third case
    never before the tree has no unlocked leaf left, the others after a random share of its
    nodes (often before that, sometimes after)."""
    ref = _Reference(random.Random(case["seed"]), case["block_size"], case["num_seqs"], 0.3)
    num_nodes = len(all_nodes(ref.cache.root))
    share = random.Random(case["seed"] + 1).random()
    return ref, num_nodes if case["i"] % 3 == 0 else int(share * (num_nodes + 1))


def play_evict(learner: SimpleNamespace, case: dict) -> dict:
    """What the learner's evict_lru removed (node ids), and whether each is still linked."""
    ref, stop = _eviction(case)
    root, copies = ref.mirror(learner.Node)
    removed: list = []
    learner.evict_lru(root, lambda: len(removed) >= stop, removed.append)
    ids = [getattr(n, "node_id", n) for n in removed]
    known = [i if isinstance(i, int) and i in copies else None for i in ids]
    linked = [
        i is not None and copies[i].parent.children.get(copies[i].key[0]) is copies[i]
        for i in known
    ]
    return {"removed": ids, "linked": linked}


def expect_evict(case: dict) -> dict:
    """minirt's removals (node ids, in order) up to the case's stop, and every node's path."""
    ref, stop = _eviction(case)
    paths = {n.node_id: _path(n) for n in all_nodes(ref.cache.root)}
    order: list[int] = []
    detach = ref.cache._detach
    ref.cache._detach = lambda node: (order.append(node.node_id), detach(node))
    ref.cache.evict()
    tree = f"a tree of {len(paths)} nodes made from the token lists: " + ", ".join(ref.log)
    return {"removed": order[:stop], "stop": stop, "paths": paths, "tree": tree}


def compare_evict(got: dict, want: dict, case: dict) -> None:
    ids, theirs, stop, paths = got["removed"], want["removed"], want["stop"], want["paths"]
    size, tree = len(paths) + 1, want["tree"]

    def shown(node_id) -> str:
        known = isinstance(node_id, int) and node_id in paths
        return _short(paths[node_id]) if known else f"{node_id!r} (no node of the tree)"

    if ids != theirs:
        pairs = enumerate(zip(ids, theirs, strict=False))
        k = next((j for j, (a, b) in pairs if a != b), min(len(ids), len(theirs)))
        if k < len(theirs):
            minirts = _short(paths[theirs[k]])
        elif k >= stop:
            minirts = "nothing (enough() was true)"
        else:
            minirts = "nothing (no unlocked leaf is left)"
        mine = shown(ids[k]) if k < len(ids) else "nothing"
        raise Mismatch(
            f"{tree}; evicting until {stop} nodes are gone: removal {k + 1} was the node of "
            f"{mine}; minirt removes {minirts} (the least recently used unlocked leaf)",
            size,
        )
    for node_id, linked in zip(ids, got["linked"], strict=True):
        if linked:
            raise Mismatch(
                f"{tree}: you removed the node of path {_short(paths[node_id])} but "
                "it is still its parent's child",
                size,
            )


# -- task 5: the engine (minirt.grading.lab06_engine) -------------------------------------------
def play_engine(learner: SimpleNamespace, case: dict) -> dict:
    return lab06_engine.run(learner.MyRadixCache, case, FORBIDDEN)


def expect_engine(case: dict) -> dict:
    return lab06_engine.run("radix", case)


def _played(id_, title, points, needs, num_cases, draw, play, expect, compare) -> Task:
    return Task.played(id_, title, points, needs, num_cases, (draw, play, expect, compare))


TASKS = [
    _played("1", "match", 2, ("match",), 40, draw_match, play_match, expect_match, compare_match),
    _played(
        "2",
        "split, insert",
        3,
        ("Node", "split", "insert"),
        30,
        _draw_tree(lambda i: 1 + i // 3),
        play_insert,
        expect_insert,
        compare_insert,
    ),
    _played(
        "3",
        "lock, touch",
        2,
        ("Node", "lock", "touch"),
        30,
        _draw_tree(lambda i: 2 + i // 3),
        play_lock_touch,
        expect_lock_touch,
        compare_lock_touch,
    ),
    _played(
        "4",
        "evict_lru",
        3,
        ("Node", "evict_lru"),
        30,
        _draw_tree(lambda i: 2 + i // 3),
        play_evict,
        expect_evict,
        compare_evict,
    ),
    _played(
        "5",
        "MyRadixCache in the engine",
        5,
        ("MyRadixCache",),
        6,
        lab06_engine.draw,
        play_engine,
        expect_engine,
        lab06_engine.compare,
    ),
]
