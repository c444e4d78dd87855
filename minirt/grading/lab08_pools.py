"""Lab 8's cases: paged pools drawn as plain data, the same tensors built from them on both sides.

A case is a dict of numbers and lists (its shapes, contexts, block tables and a seed); the
grader's worker builds the tensors from it to run the learner's kernel, and the parent builds the
very same tensors to run minirt's reference. Slots no context covers hold NaN, as `torch.empty`
may; block tables are scattered and padded, as after a while of serving. `close` compares one
kernel's output with the reference and names the first row that differs.
"""

from __future__ import annotations

import random

import torch

from minirt.grading.core import Mismatch

# Relative and absolute error allowed, by dtype: float32 sums in another order differ by ~1e-7;
# float16 rounds each stored value to ~5e-4 of itself.
TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 1e-3)}
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def draw_pool(rng: random.Random, i: int, small: bool = False, prefill: bool = False) -> dict:
    """Case `i`: a pool with some sequences in it (plain data). `prefill`: every sequence brings
    1..context new queries (a cached prefix before them), none is a padding row."""
    kv_heads = rng.choice((1, 2)) if small else rng.choice((1, 2, 4))
    group = rng.choice((1, 2)) if small else rng.choice((1, 2, 4))
    head_dim = rng.choice((4, 8)) if small else rng.choice((4, 8, 16, 64))
    bs = rng.choice((1, 2, 4)) if small else rng.choice((1, 2, 4, 8, 16))
    n = rng.randint(1, 3) if small else rng.randint(1, 5)
    longest = 20 if small else 48  # small: still several of a Triton kernel's tiles
    lens = [rng.randint(1, longest) for _ in range(n)]
    note = []
    if i == 0:
        lens, note = [1] * n, ["every context is one token"]
    elif prefill:
        pass
    elif i == 1 and n > 1:
        lens[0] = 0
        note.append("sequence 0 is a padding row (context 0)")
    elif i % 5 == 2:
        lens[rng.randrange(n)] = 0
        note.append("a padding row (context 0)")
    blocks = [-(-c // bs) for c in lens]
    width = max(1, max(blocks) + rng.randint(0, 2))  # tables padded past their blocks
    num_blocks = sum(blocks) + rng.randint(1, 6)
    ids = list(range(num_blocks))
    rng.shuffle(ids)  # scattered, as after a while of serving
    pad = -1 if rng.random() < 0.5 else 0
    tables, at = [], 0
    for b in blocks:
        tables.append(ids[at : at + b] + [pad] * (width - b))
        at += b
    case = {
        "n": n,
        "kv_heads": kv_heads,
        "num_heads": kv_heads * group,
        "head_dim": head_dim,
        "block_size": bs,
        "num_blocks": num_blocks,
        "lens": lens,
        "tables": tables,
        "seed": rng.randrange(2**31),
        "note": note,
    }
    if prefill:
        if i == 0 or i % 4 == 1:  # a whole prompt: no cached prefix
            case["q_lens"] = list(lens)
            note.append("no cached prefix" if i else "")
        else:
            case["q_lens"] = [rng.randint(1, c) for c in lens]
            note.append("queries after a cached prefix")
        case["max_context_len"] = max(lens)
    else:
        case["max_context_len"] = max(lens) + rng.choice((0, 0, 3, 100))  # an upper bound
    case["note"] = [x for x in note if x]
    return case


def pool_tensors(case: dict) -> dict[str, torch.Tensor]:
    """The case's tensors: q (one query per sequence, or `q_lens` queries each), the pools with
    only the contexts written, block tables, context lengths (and query_start_loc)."""
    g = torch.Generator().manual_seed(case["seed"])
    bs, kv_heads, head_dim = case["block_size"], case["kv_heads"], case["head_dim"]
    tables = torch.tensor(case["tables"], dtype=torch.int32)
    shape = (case["num_blocks"], bs, kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"))
    v_cache = torch.full(shape, float("nan"))
    for s, c in enumerate(case["lens"]):  # write the contexts (and only them)
        for t in range(c):
            b = int(tables[s, t // bs])
            k_cache[b, t % bs] = torch.randn(kv_heads, head_dim, generator=g)
            v_cache[b, t % bs] = torch.randn(kv_heads, head_dim, generator=g)
    rows = sum(case["q_lens"]) if "q_lens" in case else case["n"]
    out = {
        "q": torch.randn(rows, case["num_heads"], head_dim, generator=g),
        "k_cache": k_cache,
        "v_cache": v_cache,
        "block_tables": tables,
        "context_lens": torch.tensor(case["lens"], dtype=torch.int32),
    }
    if "q_lens" in case:
        starts = [0]
        for q_len in case["q_lens"]:
            starts.append(starts[-1] + q_len)
        out["query_start_loc"] = torch.tensor(starts, dtype=torch.int32)
    return out


def describe_pool(case: dict) -> str:
    what = (
        f"{case['n']} sequences with contexts {case['lens']}, {case['num_heads']} query heads on "
        f"{case['kv_heads']} KV heads, head_dim {case['head_dim']}, blocks of "
        f"{case['block_size']}, block_tables {case['tables']}, "
        f"max_context_len {case['max_context_len']}"
    )
    if "q_lens" in case:
        what += f", new queries per sequence {case['q_lens']}"
    return what + (f" ({'; '.join(case['note'])})" if case["note"] else "")


def pool_size(case: dict) -> int:
    return sum(case["lens"]) + case["n"]


def close(got, want: torch.Tensor, call: str, size: int, rows: str = "sequence") -> None:
    """Raise `Mismatch` unless `got` is `want` within the dtype's tolerance; a difference names
    its first row (`rows`: what a row is) and head."""
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{call} returned {type(got).__name__}; expected a tensor", size)
    if tuple(got.shape) != tuple(want.shape):
        raise Mismatch(
            f"{call} returned shape {tuple(got.shape)}; expected {tuple(want.shape)} "
            f"([num_{rows}s, num_heads, head_dim], one output per query head)",
            size,
        )
    rtol, atol = TOLERANCE.get(want.dtype, TOLERANCE[torch.float32])
    got, want = got.detach().float(), want.float()
    if torch.isnan(got).any():
        s, h = (int(x) for x in torch.isnan(got).nonzero()[0][:2])
        raise Mismatch(
            f"{call}: the output of {rows} {s}, head {h} is NaN. Either a slot past a context "
            "got into it (those were never written: they hold NaN here, as torch.empty may; "
            "leave them out of the softmax, and out of the sum with V: 0 * NaN is NaN), or its "
            "scores were all -inf (a query that sees no key at all)",
            size,
        )
    if not torch.allclose(got, want, rtol=rtol, atol=atol):
        err = (got - want).abs()
        s, h = (int(x) for x in (err == err.max()).nonzero()[0][:2])
        raise Mismatch(
            f"{call}: {rows} {s}, head {h} differs from minirt's reference by up to "
            f"{err.max().item():.3g} (allowed {atol} + {rtol} x |reference|): got "
            f"{got[s, h, :4].tolist()}…, expected {want[s, h, :4].tolist()}…",
            size,
        )


def decode_args(case: dict) -> tuple:
    """The arguments of a decode attention call on the case: (q, k_cache, v_cache, block_tables,
    context_lens, scale, max_context_len), as the backend's `decode_attention` takes them."""
    t = pool_tensors(case)
    return (
        t["q"],
        t["k_cache"],
        t["v_cache"],
        t["block_tables"],
        t["context_lens"],
        case["head_dim"] ** -0.5,
        case["max_context_len"],
    )


def prefill_args(case: dict) -> tuple:
    """The arguments of a prefill attention call on the case, as the backend's takes them."""
    t = pool_tensors(case)
    return (
        t["q"],
        t["k_cache"],
        t["v_cache"],
        t["block_tables"],
        t["context_lens"],
        t["query_start_loc"],
        case["head_dim"] ** -0.5,
        max(case["q_lens"]),
        case["max_context_len"],
    )
