"""Lab 9 (labs/lab09_moe_dispatch.ipynb): the dispatch and combine of expert parallelism, written
by the learner over `torch.distributed` and plugged into minirt's block as its `Exchange`.

Task 1 calls the learner's plan (who sends which row where) on fresh random routings and compares
it with minirt's `dispatch_plan`. Tasks 2-4 run on 2 gloo processes forked from the grading
process (so they have the notebook's functions as defined): the dispatch and the combine each on
fresh routings, uneven loads and a rank that receives nothing, compared row by row and token by
token with what the ranks must end up holding; then the whole expert-parallel block on the
learner's exchange, which must equal `MoEBlock` in one process. A task's cases share one launch
(process start-up costs more than a case); a case that crashes or desynchronises the ranks ends
the launch, and the cases after it are played on fresh ranks. The grader's worker only plays the
ranks and sends what each returned; the parent computes what they must hold (`expect_*`: the
rows in arrival order, the weighted sums, the block in one process) and compares.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch

from minirt.grading.core import Mismatch, Task
from minirt.grading.guard import Forbidden
from minirt.grading.lab09_ranks import WORLD, OnRanks
from minirt.moe.block import MoEBlock
from minirt.moe.parallel import Exchange, ExpertParallelMoE, dispatch_plan, weighted_sum

FORBIDDEN = Forbidden(
    modules=("minirt.moe.parallel",),
    names=(
        "sort_by_expert",
        "dispatch_plan",
        "all_to_all_dispatch",
        "all_to_all_combine",
        "weighted_sum",
        "_prepare",
        "_dispatch",
        "_compute",
        "_combine",
        "_finish",
        "_split_all_to_all",
    ),
    what="minirt's expert-parallel dispatch and combine",
    allow=("parallel",),
)

TOL = 1e-5  # fp32: the grouped GEMM over fewer rows rounds a little differently
HIDDEN = 4  # the rows tasks 2 and 3 move


# -- random routings ------------------------------------------------------------------------------
def _routing(rng: random.Random, tokens: int, num_experts: int, k: int, world: int, kind: str):
    """experts [tokens, k] (k distinct experts per token) of a `kind` of load: "even", "uneven"
    (a few hot experts) or "idle" (the last rank's experts get no row)."""
    per = num_experts // world
    pool = list(range(num_experts - per if kind == "idle" and world > 1 else num_experts))
    hot = rng.sample(pool, max(1, len(pool) // 3))
    rows = []
    for _ in range(tokens):
        if kind == "uneven":  # the hot experts first, then the rest: a skewed router
            ranked = rng.sample(hot, len(hot)) + rng.sample(
                [e for e in pool if e not in hot], len(pool) - len(hot)
            )
            rows.append(ranked[:k] if rng.random() < 0.8 else rng.sample(pool, k))
        else:
            rows.append(rng.sample(pool, k))
    return torch.tensor(rows, dtype=torch.int64).reshape(tokens, k)


def _weights(rng: random.Random, tokens: int, k: int) -> torch.Tensor:
    """Router weights [tokens, k] fp32: positive, summing to 1 per token, never all equal."""
    w = torch.tensor([rng.uniform(0.1, 1.0) for _ in range(tokens * k)]).reshape(tokens, k)
    return w / w.sum(1, keepdim=True)


def _values(rng: random.Random, rows: int, hidden: int) -> torch.Tensor:
    """[rows, hidden] of distinct values (a row can be recognised wherever it lands)."""
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    return torch.randn(rows, hidden, generator=g)


def _show(experts: torch.Tensor, limit: int = 8) -> str:
    rows = experts.tolist()
    more = f", … ({len(rows)} tokens)" if len(rows) > limit else ""
    return ", ".join(f"t{t}→{r}" for t, r in enumerate(rows[:limit])) + more if rows else "none"


# -- task 1: the plan -----------------------------------------------------------------------------
def draw_plan(rng: random.Random, i: int) -> tuple[torch.Tensor, int, int]:
    """(experts [T, k], num_experts, world_size): first no token, one token, idle ranks."""
    fixed = [(0, 4, 2, 2, "even"), (1, 4, 1, 2, "even"), (5, 8, 2, 2, "idle"), (6, 8, 3, 4, "idle")]
    if i < len(fixed):
        tokens, num_experts, k, world, kind = fixed[i]
    else:
        world = rng.choice((1, 2, 2, 4))
        num_experts = world * rng.choice((1, 2, 3, 4))
        k = rng.randint(1, min(4, num_experts - (num_experts // world if world > 1 else 0)))
        tokens = rng.randint(1, 3 + i // 3)
        kind = rng.choice(("even", "uneven", "idle") if world > 1 else ("even", "uneven"))
    return _routing(rng, tokens, num_experts, k, world, kind), num_experts, world


def check_plan(learner: SimpleNamespace, rng: random.Random, i: int) -> None:
    experts, num_experts, world = draw_plan(rng, i)
    tokens, k = experts.shape
    size = tokens * k + num_experts
    call = (
        f"plan_dispatch(experts, num_experts={num_experts}, world_size={world}) with "
        f"{tokens} tokens, top-{k} ({_show(experts)})"
    )
    want_order, want_counts = dispatch_plan(experts, num_experts, world)
    got = learner.plan_dispatch(experts.clone(), num_experts, world)
    if not (isinstance(got, tuple | list) and len(got) == 2):
        raise Mismatch(f"{call} returned {type(got).__name__}; expected (order, counts)", size)
    order, counts = (torch.as_tensor(v) for v in got)
    per = num_experts // world
    if tuple(counts.shape) != (world, per):
        raise Mismatch(
            f"{call}: counts has shape {list(counts.shape)}; expected [{world}, {per}] (a row per "
            f"rank, a column per expert it holds)",
            size,
        )
    for r in range(world):
        for j in range(per):
            if int(counts[r, j]) != int(want_counts[r, j]):
                raise Mismatch(
                    f"{call}: rank {r} would receive {int(counts[r, j])} rows for expert "
                    f"{r * per + j}, expected {int(want_counts[r, j])} (counts[{r}, {j}])",
                    size,
                )
    flat = experts.reshape(-1).tolist()
    if order.shape != want_order.shape or order.dtype.is_floating_point:
        raise Mismatch(
            f"{call}: order has shape {list(order.shape)} ({order.dtype}); expected "
            f"[{tokens * k}] integers, one per (token, expert) row",
            size,
        )
    if sorted(order.tolist()) != list(range(tokens * k)):
        raise Mismatch(
            f"{call}: order {order.tolist()} is not a permutation of the {tokens * k} rows", size
        )
    for p, (a, b) in enumerate(zip(order.tolist(), want_order.tolist(), strict=True)):
        if a != b:
            raise Mismatch(
                f"{call}: position {p} of your order is row {a} (token {a // k}, expert "
                f"{flat[a]}); minirt's is row {b} (token {b // k}, expert {flat[b]}). Rows go by "
                f"expert, and one expert's rows in token order. minirt's order: "
                f"{want_order.tolist()}",
                size,
            )


# -- the exchange's cases: each rank's tokens and routing ----------------------------------------
def draw_exchange(rng: random.Random, i: int) -> dict:
    """Per rank: its tokens x [T, H], routing and minirt's plan of it. Case 0: a rank without
    tokens; case 1: a rank whose experts receive nothing; then random loads."""
    num_experts = rng.choice((2, 4, 6, 8))
    k = rng.randint(1, min(3, num_experts // 2))
    kind = ("even", "idle")[i] if i < 2 else rng.choice(("even", "uneven", "uneven", "idle"))
    tokens = [rng.randint(1, 3 + i // 2) for _ in range(WORLD)]
    if i == 0:
        tokens[rng.randrange(WORLD)] = 0
    ranks = []
    for r in range(WORLD):
        experts = _routing(rng, tokens[r], num_experts, k, WORLD, kind)
        order, counts = dispatch_plan(experts, num_experts, WORLD)
        x = _values(rng, tokens[r], HIDDEN)
        ranks.append(
            {
                "experts": experts,
                "order": order,
                "counts": counts,
                "x": x,
                "weights": _weights(rng, tokens[r], k),
            }
        )
    load = [int(sum(r["counts"][q].sum() for r in ranks)) for q in range(WORLD)]
    name = (
        f"{num_experts} experts (rank r holds {num_experts // WORLD} of them), top-{k}, tokens per "
        f"rank {tokens}, rows each rank's experts receive {load}; "
        + "; ".join(f"rank {r}'s routing: {_show(d['experts'], 6)}" for r, d in enumerate(ranks))
    )
    return {
        "ranks": ranks,
        "k": k,
        "num_experts": num_experts,
        "name": name,
        "size": sum(tokens) * k,
    }


def _segments(counts: torch.Tensor) -> list[int]:
    """Offsets of the per-rank blocks of a [W, E/W] count table: [0, rows for rank 0, ...]."""
    return [0, *torch.cumsum(counts.sum(1), 0).tolist()]


def _arrivals(case: dict, q: int) -> list[tuple[int, int, int]]:
    """What rank q must receive, row by row: (source rank, token, expert)."""
    out = []
    for s, d in enumerate(case["ranks"]):
        seg = _segments(d["counts"])
        flat = d["experts"].reshape(-1)
        for row in d["order"][seg[q] : seg[q + 1]].tolist():
            out.append((s, row // case["k"], int(flat[row])))
    return out


# -- task 2: the dispatch -------------------------------------------------------------------------
def _play_dispatch(learner, case: dict, rank: int):
    d = case["ranks"][rank]
    got = learner.dispatch(d["x"].clone(), d["order"].clone(), case["k"], d["counts"].clone())
    if not (isinstance(got, tuple | list) and len(got) == 2):
        return {"kind": type(got).__name__}
    return {"recv_x": torch.as_tensor(got[0]), "recv_counts": torch.as_tensor(got[1])}


def expect_dispatch(case: dict) -> list[dict]:
    """What each rank must end up holding: the counts it is told, and the rows in arrival order."""
    out = []
    for q in range(WORLD):
        rows = [case["ranks"][s]["x"][t] for s, t, _ in _arrivals(case, q)]
        recv_x = torch.stack(rows) if rows else torch.empty(0, HIDDEN)
        out.append({"recv_counts": _recv_counts(case, q), "recv_x": recv_x})
    return out


def compare_dispatch(got: list, want: list, case: dict) -> None:
    name, size, per = case["name"], case["size"], case["num_experts"] // WORLD
    for q, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        if "kind" in mine:
            raise Mismatch(
                f"{name}: rank {q}'s dispatch returned {mine['kind']}; expected "
                "(recv_x, recv_counts)",
                size,
            )
        rc = mine["recv_counts"]
        if tuple(rc.shape) != (WORLD, per):
            raise Mismatch(
                f"{name}: rank {q}'s recv_counts has shape {list(rc.shape)}; expected "
                f"[{WORLD}, {per}] (a row per sending rank, a column per expert of rank {q})",
                size,
            )
        for s in range(WORLD):
            for j in range(per):
                count = int(theirs["recv_counts"][s, j])
                if int(rc[s, j]) != count:
                    raise Mismatch(
                        f"{name}: rank {q} was told it receives {int(rc[s, j])} rows from rank "
                        f"{s} for expert {q * per + j}, expected {count} (recv_counts[{s}, {j}])",
                        size,
                    )
        arrivals, rx = _arrivals(case, q), mine["recv_x"]
        if tuple(rx.shape) != tuple(theirs["recv_x"].shape):
            raise Mismatch(
                f"{name}: rank {q} received rows of shape {list(rx.shape)}; expected "
                f"[{len(arrivals)}, {HIDDEN}] (every row routed to its experts, by every rank)",
                size,
            )
        for p, (s, t, e) in enumerate(arrivals):
            if not torch.equal(rx[p], theirs["recv_x"][p]):
                raise Mismatch(
                    f"{name}: rank {q}'s received row {p} should be token {t} of rank {s} (for "
                    f"expert {e}); it is {_which(case, rx[p])}. Rows arrive by sending rank, "
                    "each rank's in the order it sent them (its `order`)",
                    size,
                )


def _which(case: dict, row: torch.Tensor) -> str:
    for s, d in enumerate(case["ranks"]):
        for t in range(d["x"].shape[0]):
            if torch.equal(d["x"][t], row):
                return f"token {t} of rank {s}"
    return "no token's row"


# -- task 3: the combine --------------------------------------------------------------------------
def _expert_outputs(case: dict) -> list[torch.Tensor]:
    """Per rank q: what its experts computed for the rows it received [R_q, HIDDEN], in arrival
    order (distinct values, so that a row in the wrong place shows)."""
    g = torch.Generator().manual_seed(sum(d["x"].numel() for d in case["ranks"]) + case["k"])
    return [torch.randn(len(_arrivals(case, q)), HIDDEN, generator=g) for q in range(WORLD)]


def _recv_counts(case: dict, q: int) -> torch.Tensor:
    return torch.stack([d["counts"][q] for d in case["ranks"]])  # [W, E/W]


def _back(case: dict, outs: list[torch.Tensor], r: int) -> torch.Tensor:
    """The rows rank r gets back [T_r * k, H], in its `order`: from each rank q, the segment of
    q's outputs that came from r."""
    parts = []
    for q in range(WORLD):
        seg = _segments(_recv_counts(case, q))
        parts.append(outs[q][seg[r] : seg[r + 1]])
    return torch.cat(parts)


def _play_combine(learner, case: dict, rank: int):
    d, outs = case["ranks"][rank], _expert_outputs(case)
    args = (d["counts"].clone(), _recv_counts(case, rank), d["order"].clone(), d["weights"].clone())
    return {"y": torch.as_tensor(learner.combine(outs[rank].clone(), *args))}


def expect_combine(case: dict) -> list[torch.Tensor]:
    """Each rank's tokens: the weighted sum of the rows that come back to it."""
    outs = _expert_outputs(case)
    return [
        weighted_sum(_back(case, outs, r), d["order"], d["weights"])
        for r, d in enumerate(case["ranks"])
    ]


def compare_combine(got: list, want: list, case: dict) -> None:
    name, size, k = case["name"], case["size"], case["k"]
    outs = _expert_outputs(case)
    for r, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        d, y = case["ranks"][r], mine["y"]
        if tuple(y.shape) != tuple(theirs.shape):
            raise Mismatch(
                f"{name}: rank {r}'s combine returned shape {list(y.shape)}; expected "
                f"{list(theirs.shape)} (its tokens x hidden)",
                size,
            )
        bad = ((y - theirs).abs() > TOL + TOL * theirs.abs()).any(1).nonzero().flatten().tolist()
        if bad:
            t = bad[0]
            back = _back(case, outs, r)
            raise Mismatch(
                f"{name}: rank {r}, token {t}: output differs (largest |difference| "
                f"{(y[t] - theirs[t]).abs().max():.3g}); {_diagnose(y, back, d, k, t)}",
                size,
            )


def _diagnose(y, back, d: dict, k: int, t: int) -> str:
    """Which slip gives the learner's token t: a named one, or what the token should sum."""
    order, w = d["order"], d["weights"]
    slots = [(p, int(row)) for p, row in enumerate(order.tolist()) if int(row) // k == t]
    guesses = {
        "it is the plain sum of its k rows: the router weights are missing": sum(
            back[p] for p, _ in slots
        ),
        "it sums rows back[t*k : t*k+k] with token t's weights: the rows come back in the order "
        "they were sent (sorted by expert, your `order`), not in token order": sum(
            w[t, j] * back[t * k + j] for j in range(k)
        ),
        "its rows are right, but each weighted by the weight of the row in its place in the "
        "flattened routing, not by its own (weights[order])": sum(
            w.reshape(-1)[p] * back[p] for p, _ in slots
        ),
    }
    for why, value in guesses.items():
        if torch.allclose(y[t], torch.as_tensor(value), atol=TOL, rtol=TOL):
            return why
    where = ", ".join(
        f"back row {p} (its choice {row % k}) x {float(w[t, row % k]):.3f}" for p, row in slots
    )
    return f"it should be the sum of {where}"


# -- task 4: the block on the learner's exchange --------------------------------------------------
def draw_block(rng: random.Random, i: int) -> dict:
    """An MoE block and each rank's tokens; case 0: a rank without tokens, case 1: a rank whose
    experts the router never picks, then random sizes (sometimes two micro-batches)."""
    num_experts = rng.choice((4, 8))
    k = rng.randint(1, num_experts // 2)
    shared = rng.choice((0, 8))
    tokens = [rng.randint(1, 4 + i) for _ in range(WORLD)]
    if i == 0:
        tokens[rng.randrange(WORLD)] = 0
    with torch.random.fork_rng(devices=[]):  # the caller's torch seed stays as it was
        torch.manual_seed(rng.randrange(2**31))
        block = MoEBlock(16, 8, num_experts, k, shared_intermediate=shared)
        x = torch.randn(sum(tokens), 16)
    idle = i == 1 or (i > 3 and rng.random() < 0.25)
    if idle:  # positive logits for rank 0's experts, 0 for the others: rank 1 gets nothing
        with torch.no_grad():
            half = num_experts // WORLD
            block.gate.weight.abs_()
            block.gate.weight[half:] = 0
        x = x.abs()
    micro = 2 if min(tokens) >= 2 and rng.random() < 0.3 else 1
    with torch.no_grad():
        load = block.route(x, num_ranks=WORLD).stats.tokens_per_rank
    name = (
        f"MoEBlock(hidden 16, {num_experts} experts, top-{k}"
        f"{', a shared expert' if shared else ''}) on {WORLD} ranks, tokens per rank {tokens}, "
        f"rows each rank's experts receive {load}" + (", 2 micro-batches" if micro == 2 else "")
    )
    return {
        "block": block,
        "x": x,
        "tokens": tokens,
        "load": load,
        "micro": micro,
        "k": k,
        "name": name,
        "size": sum(tokens) * k,
    }


def _play_block(learner, case: dict, rank: int):
    exchange = Exchange(learner.plan_dispatch, learner.dispatch, learner.combine)
    ep = ExpertParallelMoE(case["block"], exchange=exchange)
    start = sum(case["tokens"][:rank])
    mine = case["x"][start : start + case["tokens"][rank]]
    y, stats = ep.forward(mine, micro_batches=case["micro"])
    return {"y": y, "recv_rows": stats.recv_rows, "send_rows": stats.send_rows}


def expect_block(case: dict) -> torch.Tensor:
    """The block in one process, on every rank's tokens together."""
    with torch.no_grad():
        return case["block"](case["x"])


def compare_block(got: list, want: torch.Tensor, case: dict) -> None:
    name, size = case["name"], case["size"]
    for q, mine in enumerate(got):
        if sum(mine["recv_rows"]) != case["load"][q]:
            raise Mismatch(
                f"{name}: rank {q}'s experts received {sum(mine['recv_rows'])} rows (from ranks "
                f"0-{WORLD - 1}: {mine['recv_rows']}); the router sends them {case['load'][q]}",
                size,
            )
    y = torch.cat([mine["y"] for mine in got])
    if tuple(y.shape) != tuple(want.shape):
        raise Mismatch(
            f"{name}: the ranks' outputs together have shape {list(y.shape)}; "
            f"expected {list(want.shape)}",
            size,
        )
    bad = ((y - want).abs() > TOL + TOL * want.abs()).any(1).nonzero().flatten().tolist()
    if bad:
        t = bad[0]
        rank = next(r for r in range(WORLD) if t < sum(case["tokens"][: r + 1]))
        local = t - sum(case["tokens"][:rank])
        raise Mismatch(
            f"{name}: token {t} (rank {rank}'s token {local}) output differs from the block in "
            f"one process (largest |difference| {(y[t] - want[t]).abs().max():.3g})",
            size,
        )


def _on_ranks(id_, title, points, needs, draw, play_rank, expect, compare, num_cases) -> Task:
    """A task played on the ranks (lab09_ranks.OnRanks), judged by `expect` and `compare`."""
    runs = OnRanks(draw, play_rank, num_cases)
    pieces = (runs.draw, runs.play, expect, compare)
    return Task.played(id_, title, points, needs, num_cases, pieces)


TASKS = [
    Task("1", "plan_dispatch", 3, ("plan_dispatch",), check_plan, num_cases=40, pure=True),
    _on_ranks(
        "2",
        "dispatch",
        4,
        ("dispatch",),
        draw_exchange,
        _play_dispatch,
        expect_dispatch,
        compare_dispatch,
        12,
    ),
    _on_ranks(
        "3",
        "combine",
        4,
        ("combine",),
        draw_exchange,
        _play_combine,
        expect_combine,
        compare_combine,
        12,
    ),
    _on_ranks(
        "4",
        "your exchange in the expert-parallel block",
        5,
        ("plan_dispatch", "dispatch", "combine"),
        draw_block,
        _play_block,
        expect_block,
        compare_block,
        10,
    ),
]
