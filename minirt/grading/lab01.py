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
from minirt.grading.core import Mismatch, Task
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
class _AllocatorRun:
    """One random sequence of operations, played on the learner's allocator and on minirt's
    BlockManager side by side (block_size 1 there, so tokens = blocks)."""

    def __init__(self, learner: SimpleNamespace, rng: random.Random):
        self.rng = rng
        self.num_blocks = rng.randint(1, 12)
        self.log = [f"a = BlockAllocator({self.num_blocks})"]
        self.a = learner.BlockAllocator(self.num_blocks)
        self.bm = BlockManager(self.num_blocks, block_size=1, enable_prefix_caching=False)
        self.tables: dict[int, list[int]] = {}  # holder -> the learner's block ids, in order
        self.next_id = 0

    def fail(self, what: str) -> Mismatch:
        steps = "\n      ".join(self.log[-8:])
        return Mismatch(f"after\n      {steps}\n    {what}")

    def held(self) -> Counter:
        return Counter(b for table in self.tables.values() for b in table)

    def allocate(self, holder: int | None) -> None:
        n = self.rng.randint(1, max(1, self.num_blocks // 2))
        name = f"s{self.next_id}" if holder is None else f"s{holder}"
        self.log.append(f"{name} {'=' if holder is None else '+='} a.allocate({n})")
        if n > self.bm.num_free_blocks:
            try:
                self.a.allocate(n)
            except RuntimeError:
                return
            except NotImplementedError:
                raise
            except Exception as e:
                raise self.fail(f"raised {type(e).__name__}: {e}; expected RuntimeError") from e
            raise self.fail(f"only {self.bm.num_free_blocks} blocks are free: raise RuntimeError")
        got = self.a.allocate(n)
        held = self.held()
        if not isinstance(got, list) or len(got) != n or len(set(got)) != n:
            raise self.fail(f"returned {got!r}; expected a list of {n} different block ids")
        if any(not 0 <= b < self.num_blocks or held[b] for b in got):
            raise self.fail(f"returned {got!r}, but a block id is out of range or still held")
        self.log[-1] += f"  # -> {got}"
        if holder is None:
            holder, self.next_id = self.next_id, self.next_id + 1
            self.bm.allocate(holder, [], n)
            self.tables[holder] = list(got)
        else:
            self.bm.append(holder, len(self.tables[holder]) + n)
            self.tables[holder] += got

    def fork(self, parent: int) -> None:
        child, self.next_id = self.next_id, self.next_id + 1
        self.log.append(f"s{child} = a.fork(s{parent})")
        got = self.a.fork(list(self.tables[parent]))
        if list(got) != self.tables[parent]:
            raise self.fail(
                f"returned {got!r}; a fork shares the same blocks {self.tables[parent]}"
            )
        self.bm.fork(parent, child)
        self.tables[child] = list(got)

    def free(self, holder: int) -> None:
        self.log.append(f"a.free(s{holder})")
        self.a.free(list(self.tables.pop(holder)))
        self.bm.free(holder)

    def double_free(self) -> None:
        free = sorted(set(range(self.num_blocks)) - set(self.held()))
        if not free:
            return
        b = self.rng.choice(free)
        self.log.append(f"a.free([{b}])  # block {b} is free already")
        try:
            self.a.free([b])
        except ValueError:
            return
        except NotImplementedError:
            raise
        except Exception as e:
            raise self.fail(f"raised {type(e).__name__}: {e}; expected ValueError") from e
        raise self.fail("a double free must raise ValueError (and change nothing)")

    def compare(self) -> None:
        if self.a.num_free_blocks != self.bm.num_free_blocks:
            raise self.fail(
                f"num_free_blocks is {self.a.num_free_blocks}; "
                f"minirt's BlockManager has {self.bm.num_free_blocks}"
            )
        held = self.held()
        pairs: dict[int, int] = {}  # the learner's block id -> minirt's, which must be one-to-one
        for holder, table in self.tables.items():
            for mine, ref in zip(table, self.bm.block_table(holder), strict=True):
                if pairs.setdefault(mine, ref) != ref:
                    raise self.fail(f"block {mine} is shared where minirt's blocks are not")
        for b in range(self.num_blocks):
            want = self.bm.ref_count[pairs[b]] if b in pairs else 0
            if self.a.ref_count[b] != want:
                raise self.fail(
                    f"ref_count[{b}] is {self.a.ref_count[b]}; {held[b]} holder(s) hold it "
                    f"(minirt's count: {want})"
                )

    def play(self, steps: int) -> None:
        for _ in range(steps):
            holders = list(self.tables)
            op = self.rng.choice(["allocate"] * 3 + ["grow", "fork", "free", "free", "double"])
            if op == "allocate" or not holders:
                self.allocate(None)
            elif op == "grow":
                self.allocate(self.rng.choice(holders))
            elif op == "fork":
                self.fork(self.rng.choice(holders))
            elif op == "free":
                self.free(self.rng.choice(holders))
            else:
                self.double_free()
            self.compare()


def check_allocator(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    run = _AllocatorRun(learner, rng)
    try:
        run.play(steps=30)
    except (Mismatch, NotImplementedError):
        raise
    except Exception as e:  # show the steps that led to the crash
        raise run.fail(f"raised {type(e).__name__}: {e}") from e


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
    Task("2", "BlockAllocator", 4, ("BlockAllocator",), check_allocator, num_cases=40),
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
