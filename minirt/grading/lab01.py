"""Lab 1 (labs/lab01_kv_blocks.ipynb): KV bytes per token, blocks in a budget, a ref-counted
block allocator, the prefix-cache hash chain, and then the learner's block books running the
engine (`LLM(prefix_cache=HashBlocks)`, task 4: minirt.grading.lab01_engine).

Every expected answer comes from minirt.kv itself (`kv_cache_bytes_per_token`, `num_kv_blocks`,
`BlockManager`, the engine on its `"hash"` cache), never from a second copy of the logic here.
"""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

from minirt.config import PRESETS, ModelConfig
from minirt.grading import lab01_engine
from minirt.grading.core import Mismatch, Task, _where
from minirt.grading.guard import Forbidden
from minirt.kv import BlockManager, kv_cache_bytes_per_token, num_kv_blocks
from minirt.kv.pool import dtype_bytes

DTYPES = ("float32", "float16", "bfloat16", "float8_e4m3fn", "int8")
VOCAB = 151936  # Qwen3's: token ids as large as real ones


def _call(name: str, **kwargs) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def _expect_int(got, want: int, call: str) -> None:
    if type(got) is not int:  # a bool or a float is not a count of bytes or blocks
        raise Mismatch(f"{call} returned {got!r} ({type(got).__name__}); expected the int {want}")
    if got != want:
        raise Mismatch(f"{call} returned {got:,}; minirt says {want:,}")


def _config(rng: random.Random, i: int) -> ModelConfig:
    presets = list(PRESETS.values())
    if i < len(presets):  # real shapes first, then random ones
        return presets[i]
    return ModelConfig(
        num_hidden_layers=rng.randint(1, 96),
        num_key_value_heads=rng.choice((1, 2, 4, 8, 16)),
        head_dim=rng.choice((32, 64, 80, 96, 128, 256)),
    )


# -- task 1a: bytes per token ---------------------------------------------------------------
def check_kv_bytes(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    c, dtype = _config(rng, i), rng.choice(DTYPES)
    args = dict(
        num_layers=c.num_hidden_layers,
        num_kv_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        dtype_bytes=dtype_bytes(dtype),
    )
    call = _call("kv_bytes_per_token", **args)
    _expect_int(learner.kv_bytes_per_token(**args), kv_cache_bytes_per_token(c, dtype), call)


# -- task 1b: whole blocks in a budget -----------------------------------------------------
def check_blocks_in_budget(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    c, dtype = _config(rng, i), rng.choice(DTYPES)
    block_size = rng.choice((1, 8, 16, 32))
    per_token = kv_cache_bytes_per_token(c, dtype)
    block = block_size * per_token
    k = rng.randint(1, 200)
    # exactly k blocks, one byte short of k blocks, anything, less than one block
    budget = [k * block, k * block - 1, rng.randrange(200 * block), rng.randrange(block)][i % 4]
    args = dict(budget_bytes=budget, block_size=block_size, bytes_per_token=per_token)
    call = _call("blocks_in_budget", **args)
    try:
        want = num_kv_blocks(c, block_size, dtype, budget)
    except ValueError:
        want = None
    try:
        got = learner.blocks_in_budget(**args)
    except ValueError as e:
        if want is None:
            return
        raise Mismatch(f"{call} raised ValueError({e}); minirt says {want:,}") from None
    if want is None:
        raise Mismatch(f"{call} returned {got!r}; not one block fits, so raise ValueError")
    _expect_int(got, want, call)


# -- task 2: a block allocator with reference counts ------------------------------------------
# A case is a seed: the operations follow from it and from the holders the driver keeps itself,
# never from what an allocator answers, so the learner's allocator and minirt's BlockManager
# (block_size 1 there, so tokens = blocks) are driven through the very same calls.
OPS = ["allocate"] * 3 + ["grow", "fork", "free", "free", "double"]
REFUSALS = {"allocate": "RuntimeError", "grow": "RuntimeError", "double": "ValueError"}


def draw_allocator(rng: random.Random, i: int) -> dict:
    return {"num_blocks": rng.randint(1, 12), "seed": rng.randrange(2**32), "steps": 30}


class _Learners:
    """The learner's allocator, called by holder as the driver calls it."""

    def __init__(self, allocator_class, num_blocks: int):
        self.num_blocks, self.a = num_blocks, allocator_class(num_blocks)

    def allocate(self, holder: int, table: list[int] | None, n: int):
        return self.a.allocate(n)

    def fork(self, parent: int, child: int, table: list[int]):
        return self.a.fork(list(table))

    def free(self, holder: int, table: list[int]) -> None:
        self.a.free(list(table))

    def free_block(self, b: int) -> None:
        self.a.free([b])

    def state(self) -> tuple[int, list[int]]:
        return self.a.num_free_blocks, [self.a.ref_count[b] for b in range(self.num_blocks)]


class _Minirts:
    """minirt's BlockManager behind the same calls; a double free is refused as the task asks."""

    def __init__(self, num_blocks: int):
        self.bm = BlockManager(num_blocks, block_size=1, enable_prefix_caching=False)

    def allocate(self, holder: int, table: list[int] | None, n: int) -> list[int]:
        if table is None:
            self.bm.allocate(holder, [], n)
            return list(self.bm.block_table(holder))
        self.bm.append(holder, len(table) + n)
        return list(self.bm.block_table(holder)[len(table) :])

    def fork(self, parent: int, child: int, table: list[int]) -> list[int]:
        self.bm.fork(parent, child)
        return list(self.bm.block_table(child))

    def free(self, holder: int, table: list[int]) -> None:
        self.bm.free(holder)

    def free_block(self, b: int) -> None:
        if self.bm.ref_count[b] == 0:
            raise ValueError(f"block {b} is free already")

    def state(self) -> tuple[int, list[int]]:
        return self.bm.num_free_blocks, list(self.bm.ref_count)


def _usable(got, n: int | None = None) -> bool:
    """Block ids the driver can hand back later (a list of ints; of n of them, if n)."""
    ok = isinstance(got, list) and all(isinstance(b, int) and not isinstance(b, bool) for b in got)
    return ok and (n is None or len(got) == n)


def _next_op(rng: random.Random, tables: dict, next_id: int, num_blocks: int) -> dict | None:
    """The next operation, from the seed and the holders alone (None: a double free with no
    free block to try it on)."""
    holders = list(tables)
    op = rng.choice(OPS)
    if op == "allocate" or not holders or op == "grow":
        op = "grow" if op == "grow" and holders else "allocate"
        n = rng.randint(1, max(1, num_blocks // 2))
        holder = rng.choice(holders) if op == "grow" else next_id
        call = f"s{holder} {'+=' if op == 'grow' else '='} a.allocate({n})"
        return {"op": op, "holder": holder, "n": n, "call": call}
    if op == "fork":
        parent = rng.choice(holders)
        return {
            "op": op,
            "parent": parent,
            "holder": next_id,
            "call": f"s{next_id} = a.fork(s{parent})",
        }
    if op == "free":
        holder = rng.choice(holders)
        return {"op": op, "holder": holder, "call": f"a.free(s{holder})"}
    held = {b for table in tables.values() for b in table}
    free = [b for b in range(num_blocks) if b not in held]
    if not free:
        return None
    b = rng.choice(free)
    return {"op": "double", "block": b, "call": f"a.free([{b}])  # block {b} is free already"}


def _apply(side, step: dict, tables: dict):
    op, holder = step["op"], step.get("holder")
    if op in ("allocate", "grow"):
        return side.allocate(holder, tables.get(holder), step["n"])
    if op == "fork":
        return side.fork(step["parent"], holder, tables[step["parent"]])
    if op == "free":
        return side.free(holder, tables.pop(holder))
    return side.free_block(step["block"])


def _drive(side, case: dict) -> list[dict]:
    """The case's operations on `side`; after each, what the side answered (returned, or the
    exception it raised) and its state: free blocks, every block's count, each holder's ids. The
    drive stops early only where an answer gives no block ids to go on with."""
    rng, num_blocks = random.Random(case["seed"]), case["num_blocks"]
    tables: dict[int, list[int]] = {}  # holder -> the side's block ids, in order
    next_id, record = 0, []
    for _ in range(case["steps"]):
        step = _next_op(rng, tables, next_id, num_blocks)
        if step is None:
            continue
        record.append(step)
        try:
            step["returned"] = got = _apply(side, step, tables)
        except NotImplementedError:
            raise
        except Exception as e:
            step["raised"] = [type(e).__name__, f"{e}{_where(e)}"]
        if "returned" in step and step["op"] in ("allocate", "grow", "fork"):
            if not _usable(got, step.get("n")):
                break
            if step["op"] == "grow":
                tables[step["holder"]] = tables[step["holder"]] + got
            else:
                tables[step["holder"]], next_id = list(got), next_id + 1
        try:
            free_blocks, ref_count = side.state()
            step["state"] = {"free": free_blocks, "ref_count": list(ref_count)}
        except NotImplementedError:
            raise
        except Exception as e:
            step["state_raised"] = [type(e).__name__, f"{e}{_where(e)}"]
        step["tables"] = {h: list(t) for h, t in tables.items()}
    return record


def play_allocator(learner: SimpleNamespace, case: dict) -> list[dict]:
    return _drive(_Learners(learner.BlockAllocator, case["num_blocks"]), case)


def expect_allocator(case: dict) -> list[dict]:
    return _drive(_Minirts(case["num_blocks"]), case)


def compare_allocator(got: list[dict], want: list[dict], case: dict) -> None:
    """The first operation where the learner's allocator answers or counts otherwise than
    minirt's, with the operations that led to it. Block ids may differ from minirt's, one to
    one: which blocks are shared with which may not."""
    num_blocks = case["num_blocks"]
    log = [f"a = BlockAllocator({num_blocks})"]
    before: dict = {"tables": {}, "state": {"free": num_blocks}}  # the step before, minirt's
    mine_before: dict = {"tables": {}}

    def fail(what: str) -> Mismatch:
        steps = "\n      ".join(log[-8:])
        return Mismatch(f"after\n      {steps}\n    {what}")

    for g, w in zip(got, want, strict=False):
        log.append(g["call"])
        op = w["op"]
        if "raised" in w:  # minirt refuses: too few free blocks, or a double free
            if "raised" in g and g["raised"][0] == w["raised"][0]:
                pass
            elif "raised" in g:
                kind, message = g["raised"]
                raise fail(f"raised {kind}: {message}; expected {REFUSALS[op]}")
            elif op == "double":
                raise fail("a double free must raise ValueError (and change nothing)")
            else:
                free = before["state"]["free"]
                raise fail(f"only {free} blocks are free: raise RuntimeError")
        elif "raised" in g:
            kind, message = g["raised"]
            raise fail(f"raised {kind}: {message}")
        elif op in ("allocate", "grow"):
            mine, n = g["returned"], w["n"]
            if not _usable(mine, n) or len(set(mine)) != n:
                raise fail(f"returned {mine!r}; expected a list of {n} different block ids")
            held = {b for table in mine_before["tables"].values() for b in table}
            if any(not 0 <= b < num_blocks or b in held for b in mine):
                raise fail(f"returned {mine!r}, but a block id is out of range or still held")
            log[-1] += f"  # -> {mine}"
        elif op == "fork":
            shared = mine_before["tables"][w["parent"]]
            if g["returned"] != shared:
                raise fail(f"returned {g['returned']!r}; a fork shares the same blocks {shared}")
        if "state_raised" in g:
            kind, message = g["state_raised"]
            raise fail(f"raised {kind}: {message}")
        _compare_state(g, w, num_blocks, fail)
        before, mine_before = w, g
    if len(got) != len(want):
        raise fail(f"the operations stopped after {len(got)} of {len(want)}")


def _compare_state(g: dict, w: dict, num_blocks: int, fail) -> None:
    mine, ref = g["state"], w["state"]
    if mine["free"] != ref["free"]:
        raise fail(f"num_free_blocks is {mine['free']}; minirt's BlockManager has {ref['free']}")
    held = Counter(b for table in g["tables"].values() for b in table)
    pairs: dict[int, int] = {}  # the learner's block id -> minirt's, which must be one-to-one
    for holder, table in g["tables"].items():
        for b, theirs in zip(table, w["tables"].get(holder, []), strict=False):
            if pairs.setdefault(b, theirs) != theirs:
                raise fail(f"block {b} is shared where minirt's blocks are not")
    for b in range(num_blocks):
        want = ref["ref_count"][pairs[b]] if b in pairs else 0
        if mine["ref_count"][b] != want:
            raise fail(
                f"ref_count[{b}] is {mine['ref_count'][b]}; {held[b]} holder(s) hold it "
                f"(minirt's count: {want})"
            )


# -- task 3: the prefix-cache hash chain -------------------------------------------------------
def check_chain_hashes(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    bs = rng.choice((1, 2, 3, 4, 8, 16))
    # no tokens, one short of a block, exactly one block, exactly three, then anything
    n = [0, bs - 1, bs, 3 * bs][i] if i < 4 else rng.randint(0, 7 * bs - 1)
    tokens = [rng.randrange(VOCAB) for _ in range(n)]
    # minirt's answer: what its BlockManager publishes once these tokens' KV is computed
    bm = BlockManager(num_blocks=n // bs + 1, block_size=bs)
    bm.allocate(0, tokens, n)
    bm.commit(0, tokens, n)
    want = bm.seq_hashes[0]
    shown = tokens if n <= 8 else f"[{', '.join(map(str, tokens[:6]))}, … ({n} tokens)]"
    call = f"chain_hashes({shown}, block_size={bs})"
    got = learner.chain_hashes(list(tokens), bs)
    if not isinstance(got, list):
        raise Mismatch(f"{call} returned a {type(got).__name__}; expected a list of ints", n)
    if len(got) != len(want):
        raise Mismatch(
            f"{call} returned {len(got)} hashes; {n} tokens fill {len(want)} full block(s) "
            f"of {bs}, and only full blocks are hashed",
            size=n,
        )
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            raise Mismatch(f"{call}: hash {k} is {g!r}; minirt's BlockManager has {w}", size=n)


# -- task 4: your block books in the engine ----------------------------------------------------
def play_engine(learner: SimpleNamespace, case: dict) -> dict:
    return lab01_engine.run(learner.HashBlocks, case, FORBIDDEN)


def expect_engine(case: dict) -> dict:
    return lab01_engine.run("hash", case)


TASKS = [
    Task(
        "1a",
        "kv_bytes_per_token",
        2,
        ("kv_bytes_per_token",),
        check_kv_bytes,
        num_cases=40,
        pure=True,
    ),
    Task("1b", "blocks_in_budget", 2, ("blocks_in_budget",), check_blocks_in_budget, 40, pure=True),
    Task(
        "2",
        "BlockAllocator",
        4,
        ("BlockAllocator",),
        None,
        num_cases=40,
        draw=draw_allocator,
        play=play_allocator,
        expect=expect_allocator,
        compare=compare_allocator,
    ),
    Task("3", "chain_hashes", 2, ("chain_hashes",), check_chain_hashes, num_cases=60, pure=True),
    Task(
        "4",
        "HashBlocks in the engine",
        4,
        ("HashBlocks",),
        None,
        num_cases=4,
        draw=lab01_engine.draw,
        play=play_engine,
        expect=expect_engine,
        compare=lab01_engine.compare,
    ),
]

# What the tasks are compared with; block_hash is not graded (task 3 builds the chain with it).
FORBIDDEN = Forbidden(
    modules=("minirt.kv.pool", "minirt.kv.caches"),
    names=(
        "kv_cache_bytes_per_token",
        "num_kv_blocks",
        "BlockManager",
        "PREFIX_CACHES",
        "make_prefix_cache",
    ),
    strings=("hash", "vllm"),  # the registry's name of minirt's books, and the preset that picks it
    what="minirt's KV sizing and block manager",
    allow=("caches",),  # an everyday word; the module's contents stay refused
)
