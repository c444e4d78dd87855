"""Lab 5 (labs/lab05_bank_conflicts.ipynb): shared-memory banks, wavefronts and a swizzle.
Expected answers come from `minirt.tools.bank.simulate`, the model Nsight Compute keeps honest
(`python -m minirt.bench bank`): task 1 the bank and wavefronts of 4-byte loads, task 2 of 8- and
16-byte loads (phases; no warp whose thread pairs all share an address), task 3 a swizzled fp32
tile whose row and column reads are both conflict-free, checked to store each element once.
The learner may not use the simulator nor its swizzle (`FORBIDDEN`); the notebook's own cells do.
"""

from __future__ import annotations

import operator
import random
from collections import defaultdict
from types import SimpleNamespace

from minirt.grading.core import Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.tools.bank import BANKS, WARP, WORD_BYTES, _pairs_share, simulate

# What the tasks are compared with: the bank simulator (and the bench that re-exports it), and
# CuTe's swizzle as minirt computes it (task 3 asks for a layout of the learner's own design).
FORBIDDEN = Forbidden(
    modules=("minirt.tools.bank", "minirt.bench.bank"),
    names=(
        "simulate",
        "BankAccess",
        "_pairs_share",
        "PATTERNS",
        "swizzle",
        "swizzled_column_access",
        "ldmatrix_rows",
    ),
    what="minirt's bank simulator and swizzle",
    allow=("bank",),  # an everyday word; the module's contents stay refused
)

TILE_SHAPES = [(32, 32), (64, 32), (16, 32)]  # task 3: (tile_rows, tile_cols) of fp32


def _count(got, call: str) -> int:
    try:
        if isinstance(got, bool):
            raise TypeError
        return operator.index(got)
    except TypeError:
        raise Mismatch(f"{call} returned {got!r}; expected an int") from None


def _show(addresses) -> str:
    return "[" + ", ".join("None" if a is None else str(a) for a in addresses) + "]"


def _words_per_bank(addresses, access_bytes: int) -> dict[int, dict[int, list[int]]]:
    """bank -> word -> the threads (in `addresses`' numbering) whose access touches it."""
    banks: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for t, a in enumerate(addresses):
        if a is not None:
            for w in range(a // WORD_BYTES, (a + access_bytes) // WORD_BYTES):
                banks[w % BANKS][w].append(t)
    return banks


def _worst_bank(addresses, access_bytes: int, first_thread: int = 0) -> str:
    """'bank 3 serves 4 distinct words: word 35 (threads 1, 9), ...' for the busiest bank."""
    banks = _words_per_bank(addresses, access_bytes)
    if not banks:
        return "no thread is active"
    b, words = max(banks.items(), key=lambda kv: (len(kv[1]), -kv[0]))
    parts = [
        f"word {w} (thread{'s' if len(ts) > 1 else ''} "
        f"{', '.join(str(t + first_thread) for t in ts)})"
        for w, ts in sorted(words.items())
    ]
    n = len(words)
    return f"bank {b} serves {n} distinct word{'s' if n > 1 else ''}: {', '.join(parts)}"


def _naive(addresses, access_bytes: int, per_phase: int) -> int:
    """The wrong count that takes every thread's access as its own, even of a shared word."""
    total = 0
    for start in range(0, WARP, per_phase):
        hits: dict[int, int] = defaultdict(int)
        for a in addresses[start : start + per_phase]:
            if a is not None:
                for w in range(a // WORD_BYTES, (a + access_bytes) // WORD_BYTES):
                    hits[w % BANKS] += 1
        total += max(hits.values(), default=0)
    return total


# -- task 1: banks and wavefronts of 4-byte loads ---------------------------------------------
def _warp4(rng: random.Random, i: int) -> tuple[list[int | None], str]:
    """A warp of 4-byte loads: fixed edge cases first, then strides, tile columns and random
    addresses in a small window (so that threads share words and banks), some threads off."""
    fixed = [
        ([t * 4 for t in range(WARP)], "contiguous words"),
        ([t * 128 for t in range(WARP)], "stride 32 words: a tile column"),
        ([40] * WARP, "every thread reads the same word (broadcast)"),
        ([(t // 4) * 128 for t in range(WARP)], "groups of 4 threads share a word"),
        ([None] * WARP, "every thread inactive"),
        ([t * 128 if t % 2 else None for t in range(WARP)], "stride 32, odd threads only"),
    ]
    if i < len(fixed):
        return fixed[i]
    kind = rng.choice(["stride", "window", "window", "mixed"])
    base = rng.randrange(0, 256) * 4
    if kind == "stride":
        s = rng.choice([1, 2, 3, 4, 8, 16, 17, 32, 33, 64])
        addresses = [base + t * s * 4 for t in range(WARP)]
        note = f"stride {s} words"
    elif kind == "window":
        n = rng.choice([8, 32, 64, 200])
        addresses = [base + rng.randrange(n) * 4 for _ in range(WARP)]
        note = f"random words among {n}"
    else:
        addresses = [base + rng.randrange(8) * 128 + rng.randrange(4) * 4 for _ in range(WARP)]
        note = "a few words in a few banks"
    off = rng.choice([0, 0, 0.25, 0.5])
    return [None if rng.random() < off else a for a in addresses], note


def check_banks(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    addresses, note = _warp4(rng, i)
    ref = simulate(addresses, 4)
    for a, b in zip(addresses, ref.banks, strict=True):
        if a is None:
            continue
        got = learner.bank_of(a)
        if got != b:
            hint = (
                f": that is the byte address mod 32; a bank is a 4-byte word wide, so bank = "
                f"({a} // 4) % 32"
                if got == a % BANKS
                else f": bank = (address // 4) % 32, the word {a // 4} mod 32"
            )
            raise Mismatch(f"bank_of({a}) returned {got!r}; it is bank {b}{hint}")
    call = f"wavefronts({_show(addresses)}) ({note})"
    got = _count(learner.wavefronts(list(addresses)), call)
    if got == ref.wavefronts:
        return
    why = f"; {_worst_bank(addresses, 4)}" if ref.wavefronts else ""
    if got == _naive(addresses, 4, WARP) and got > ref.wavefronts:
        why += (
            ". You counted every thread that reaches a bank; threads reading the same 32-bit "
            "word get it in one access (a broadcast), so a bank costs one wavefront per "
            "distinct word"
        )
    elif ref.wavefronts == 0:
        why = ": no thread is active (None), so nothing is read"
    raise Mismatch(f"{call} returned {got}; simulate says {ref.wavefronts}{why}")


# -- task 2: 8- and 16-byte loads -------------------------------------------------------------
def _warp_wide(rng: random.Random, i: int) -> tuple[list[int | None], int, str]:
    """A warp of 8- or 16-byte loads; never every pair (2i, 2i + 1) sharing an address (the
    paired-load rule, left out of the task)."""
    fixed = [
        ([t * 8 for t in range(WARP)], 8, "contiguous 8-byte elements"),
        ([t * 16 for t in range(WARP)], 16, "contiguous 16-byte elements"),
        ([t * 128 for t in range(WARP)], 16, "float4 (t, 0:4) of a 32-column fp32 tile"),
        ([t * 144 for t in range(WARP)], 16, "the same, rows padded by 4 floats"),
        ([(t % 8) * 16 for t in range(WARP)], 16, "every quarter-warp reads the same 128 bytes"),
        ([(t % 16) * 8 for t in range(WARP)], 8, "both half-warps read the same 128 bytes"),
    ]
    if i < len(fixed):
        return fixed[i]
    while True:
        width = rng.choice([8, 16])
        base = rng.randrange(0, 64) * width
        kind = rng.choice(["stride", "window", "window"])
        if kind == "stride":
            s = rng.choice([1, 2, 3, 4, 8, 9, 16, 17])
            addresses = [base + t * s * width for t in range(WARP)]
            note = f"stride {s} elements"
        else:
            n = rng.choice([8, 16, 32, 100])
            addresses = [base + rng.randrange(n) * width for _ in range(WARP)]
            note = f"random elements among {n}"
        off = rng.choice([0, 0, 0.25])
        addresses = [None if rng.random() < off else a for a in addresses]
        if not _pairs_share(addresses):
            return addresses, width, note


def _phases(addresses, width: int) -> str:
    per = 128 // width
    costs = []
    for start in range(0, WARP, per):
        phase = addresses[start : start + per]
        ref = simulate([*phase, *[None] * (WARP - per)], width)
        costs.append(f"threads {start}-{start + per - 1}: {ref.wavefronts}")
    return "; ".join(costs)


def check_wide(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    addresses, width, note = _warp_wide(rng, i)
    ref = simulate(addresses, width)
    call = f"wavefronts_wide({_show(addresses)}, access_bytes={width}) ({note})"
    got = _count(learner.wavefronts_wide(list(addresses), width), call)
    if got == ref.wavefronts:
        return
    per = 128 // width
    name = {8: "half-warps (16 threads)", 16: "quarter-warps (8 threads)"}[width]
    why = (
        f"; a {width}-byte load is served in phases of 128 bytes, {name}, one after the other, "
        f"each costing the most distinct words one bank serves in it ({_phases(addresses, width)})"
    )
    if got == _naive(addresses, width, per) and got > ref.wavefronts:
        why += (
            ". You counted threads that read the same word twice; within a phase that is a "
            "broadcast"
        )
    elif got in (
        max((len(w) for w in _words_per_bank(addresses, width).values()), default=0),
        _naive(addresses, width, WARP),
    ):
        why += ". You looked at the whole warp at once: count per phase, then add the phases"
    else:
        why += f". A {width}-byte access at address a covers the {width // 4} words from a // 4"
    raise Mismatch(f"{call} returned {got}; simulate says {ref.wavefronts}{why}")


# -- task 3: a swizzled tile ------------------------------------------------------------------
def _column_rows(tile_rows: int) -> list[int]:
    """The rows thread t reads in a column read: t, wrapping (broadcast) in a tile under 32."""
    return [t % tile_rows for t in range(WARP)]


def check_swizzle(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    tile_rows, tile_cols = TILE_SHAPES[i % len(TILE_SHAPES)]
    col = [0, 31, 5][i] if i < 3 else rng.randrange(tile_cols)
    shape = f"a {tile_rows}x{tile_cols} fp32 tile"
    row_bytes = tile_cols * 4
    where: dict[int, tuple[int, int]] = {}
    for r in range(tile_rows):
        for c in range(tile_cols):
            a = learner.stored_at(r, c, tile_rows, tile_cols)
            call = f"stored_at({r}, {c}, {tile_rows}, {tile_cols})"
            a = _count(a, call)
            if not r * row_bytes <= a < (r + 1) * row_bytes or a % 4:
                padded = a == (r * (tile_cols + 1) + c) * 4 or a >= tile_rows * row_bytes
                raise Mismatch(
                    f"{call} returned {a}, outside row {r}'s own {row_bytes} bytes "
                    f"({r * row_bytes}..{(r + 1) * row_bytes - 4}, 4-byte aligned) of {shape}"
                    + (
                        ": that is padding. Padding makes column reads conflict-free too, but "
                        f"the tile then takes more than {tile_rows * row_bytes} bytes and rows "
                        "no longer start at multiples of the row size (a TMA copy or a 128-byte "
                        "vector load of a row breaks); permute the columns within each row "
                        "instead (a swizzle)"
                        if padded
                        else "; a swizzle permutes the elements within each row"
                    )
                )
            if a in where:
                r2, c2 = where[a]
                raise Mismatch(
                    f"stored_at puts both ({r2}, {c2}) and ({r}, {c}) of {shape} at byte {a}: "
                    "one overwrites the other. A swizzle must be a bijection: every element in "
                    "its own place, each place used once (XOR with a constant per row is one; "
                    "OR, AND or a multiplication by an even number is not)"
                )
            where[a] = (r, c)
    for r in range(tile_rows):
        for c0 in range(0, tile_cols, WARP):
            reads = [learner.stored_at(r, c0 + t, tile_rows, tile_cols) for t in range(WARP)]
            ref = simulate(reads, 4)
            if ref.wavefronts > 1:
                raise Mismatch(
                    f"reading row {r} (columns {c0}..{c0 + WARP - 1}) of {shape}, thread t "
                    f"reading column t, costs {ref.wavefronts} wavefronts, not 1: "
                    f"{_worst_bank(reads, 4)}"
                )
    call = f"conflict_free_column({tile_rows}, {tile_cols}, {col})"
    got = learner.conflict_free_column(tile_rows, tile_cols, col)
    try:
        got = [operator.index(a) for a in got]
        if len(got) != WARP:
            raise ValueError
    except (TypeError, ValueError):
        raise Mismatch(f"{call} returned {got!r}; expected 32 byte addresses") from None
    rows = _column_rows(tile_rows)
    for t, (a, r) in enumerate(zip(got, rows, strict=True)):
        want = learner.stored_at(r, col, tile_rows, tile_cols)
        if a != want:
            raise Mismatch(
                f"{call} returned {_show(got)}: thread {t} reads byte {a}, but your stored_at "
                f"puts element ({r}, {col}) at byte {want}; thread t reads row t"
                + (f" % {tile_rows}: the tile has {tile_rows} rows" if tile_rows < WARP else "")
            )
    for r0 in range(0, tile_rows, WARP):  # the other 32-row slabs of a tall tile, too
        reads = got if r0 == 0 else [
            learner.stored_at(r0 + t, col, tile_rows, tile_cols) for t in range(WARP)
        ]  # fmt: skip
        ref = simulate(reads, 4)
        if ref.wavefronts > 1:
            what = call if r0 == 0 else f"rows {r0}..{r0 + WARP - 1} of column {col} of {shape}"
            raise Mismatch(
                f"{what}: reading the column costs {ref.wavefronts} wavefronts, not 1: "
                f"{_worst_bank(reads, 4)}. Make the column's 32 elements land in 32 different "
                "banks, e.g. stored column = col XOR (row % 32)"
            )


TASKS = [
    Task(
        "1",
        "bank_of, wavefronts",
        3,
        ("bank_of", "wavefronts"),
        check_banks,
        num_cases=60,
        pure=True,
    ),
    Task("2", "wavefronts_wide", 3, ("wavefronts_wide",), check_wide, num_cases=60, pure=True),
    Task(
        "3",
        "a swizzled tile",
        4,
        ("stored_at", "conflict_free_column"),
        check_swizzle,
        num_cases=12,
        pure=True,
    ),
]
