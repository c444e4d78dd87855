"""The cost model of speculative decoding: when do k cheap guesses and one wide verify pay?

A step runs k draft forwards and one target forward over k + 1 tokens per sequence, and emits
1 + α + ... + α^k tokens on average (α: the chance a guess is accepted). It pays while a verify
costs about what a plain decode step does: at small batch, where reading the weights bounds a
forward. GPU times come from a `CostCurve`, measured or roofline-modelled; the host's from plain
steps (`host_overhead`), per forward by the rows it builds. Notebook 07 plots it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from numbers import Integral, Real
from typing import Any

from minirt.config import ModelConfig
from minirt.tools.roofline import H100_SXM, Hardware, decode_step

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_TOKENS = tuple(range(1, 10))  # a verify of k + 1 tokens for k = 0..8
DEFAULT_KS = range(0, 9)


def _check_alpha(alpha: float) -> None:
    if not isinstance(alpha, Real) or not 0.0 <= alpha <= 1.0:  # also rejects NaN
        raise ValueError(
            f"alpha is the probability that one draft token is accepted, so 0 <= alpha <= 1; "
            f"got {alpha!r}. Estimate it with acceptance_rate(num_accepted, k)"
        )


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
        raise ValueError(f"k counts draft tokens per step, an integer >= 0 (0 = none); got {k!r}")


def expected_tokens(alpha: float, k: int) -> float:
    """Mean tokens one step emits per sequence: (1 - α^(k+1)) / (1 - α), and k + 1 at α = 1.

    Draft token i is kept only if tokens 1..i all were: probability α^i. The target's corrected
    or bonus token always comes. So E = 1 + α + ... + α^k, summed as such: the closed form is 0/0
    at α = 1 and loses digits to cancellation just below it.
    """
    _check_alpha(alpha)
    _check_k(k)
    return math.fsum(alpha**i for i in range(k + 1))


def acceptance_rate(num_accepted: Iterable[int], k: int) -> float:
    """Estimate α from how many of k draft tokens each step (per sequence) accepted.

    Each examined draft token is a coin flip: a step that accepted n < k tokens saw n heads and
    one tail; a step that accepted all k saw k heads and stopped. The likelihood is
    α^accepted (1 - α)^rejections, so the maximum-likelihood estimate is the plain ratio
    accepted / (accepted + rejections), a truncated geometric's MLE.
    """
    _check_k(k)
    accepted = rejections = 0
    for n in num_accepted:
        if not 0 <= n <= k:
            raise ValueError(f"a step with k={k} accepts 0..{k} draft tokens, got {n}")
        accepted += n
        rejections += n < k
    if accepted + rejections == 0:
        raise ValueError(
            "no draft token was examined (no steps, or k = 0); record steps with k >= 1"
        )
    return accepted / (accepted + rejections)


def alpha_from_acceptance_rate(rate: float, k: int) -> float:
    """The per-guess α behind an engine's acceptance rate (accepted / proposed, what
    `GenerateStats.acceptance_rate` and vLLM report): not the same number. A step proposes k
    guesses but examines them only up to the first rejection, so accepted / proposed counts the
    unexamined ones as failures. Mean accepted per step is k x rate = E(α, k) - 1: solve for α."""
    _check_k(k)
    if k == 0 or not 0.0 <= rate <= 1.0:
        raise ValueError(f"need k >= 1 and 0 <= rate <= 1 (accepted / proposed); got {k}, {rate}")
    lo, hi = 0.0, 1.0  # E(α, k) grows with α: bisect
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens(mid, k) < 1 + k * rate else (lo, mid)
    return (lo + hi) / 2


def _bracket(grid: Sequence[float], x: float) -> tuple[int, float]:
    """Index i and weight w with x = (1 - w) grid[i] + w grid[i + 1] (grid sorted, x inside)."""
    if len(grid) == 1:
        return 0, 0.0
    i = min(bisect.bisect_right(grid, x) - 1, len(grid) - 2)
    return i, (x - grid[i]) / (grid[i + 1] - grid[i])


@dataclass(frozen=True)
class CostCurve:
    """Time of one forward, in ms, over a grid of (batch, tokens per sequence).

    `ms_grid[i][j]` is the time at `batches[i]` sequences of `tokens[j]` new tokens each. Between
    grid points `ms()` interpolates linearly in log2(batch) (batches grow in powers of two) and
    in tokens; outside the grid it raises rather than guess.
    """

    batches: tuple[int, ...]
    tokens: tuple[int, ...]
    ms_grid: tuple[tuple[float, ...], ...]  # [len(batches)][len(tokens)]
    name: str = ""

    def __post_init__(self) -> None:
        for axis, grid in (("batches", self.batches), ("tokens", self.tokens)):
            if not grid or grid[0] < 1 or any(a >= b for a, b in pairwise(grid)):
                raise ValueError(f"{axis} must be increasing integers >= 1, got {grid}")
        if len(self.ms_grid) != len(self.batches) or any(
            len(r) != len(self.tokens) for r in self.ms_grid
        ):
            raise ValueError(
                f"ms_grid must hold one row per batch ({len(self.batches)}) of one time per token "
                f"count ({len(self.tokens)})"
            )
        if not all(math.isfinite(t) and t > 0 for row in self.ms_grid for t in row):
            raise ValueError("every time in ms_grid must be a finite number > 0")

    def ms(self, batch: float, tokens: float) -> float:
        """Interpolated ms of one forward of `batch` sequences of `tokens` tokens each."""
        for what, x, grid in (("batch", batch, self.batches), ("tokens", tokens, self.tokens)):
            if not grid[0] <= x <= grid[-1]:
                raise ValueError(
                    f"{what}={x} is outside the curve {self.name!r}, measured for "
                    f"{what} {grid[0]}..{grid[-1]}; measure that range or stay inside it"
                )
        i, wb = _bracket([math.log2(b) for b in self.batches], math.log2(batch))
        j, wt = _bracket(self.tokens, tokens)
        i2, j2 = min(i + 1, len(self.batches) - 1), min(j + 1, len(self.tokens) - 1)
        row_lo = (1 - wt) * self.ms_grid[i][j] + wt * self.ms_grid[i][j2]
        row_hi = (1 - wt) * self.ms_grid[i2][j] + wt * self.ms_grid[i2][j2]
        return (1 - wb) * row_lo + wb * row_hi

    def rows(self) -> list[dict[str, Any]]:
        """The grid as JSON rows {"batch", "tokens", "ms"}: what `from_rows` reads back."""
        return [
            {"batch": b, "tokens": t, "ms": self.ms_grid[i][j]}
            for i, b in enumerate(self.batches)
            for j, t in enumerate(self.tokens)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows()}

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], name: str = "") -> CostCurve:
        """A curve from measured rows {"batch", "tokens", "ms"} covering a full grid."""
        table = {}
        for r in rows:
            key = (int(r["batch"]), int(r["tokens"]))
            if key in table:
                raise ValueError(f"two rows for (batch, tokens) = {key}; keep one (e.g. median)")
            table[key] = float(r["ms"])
        if not table:
            raise ValueError("no rows: a curve needs {'batch', 'tokens', 'ms'} measurements")
        batches = tuple(sorted({b for b, _ in table}))
        tokens = tuple(sorted({t for _, t in table}))
        missing = [(b, t) for b in batches for t in tokens if (b, t) not in table]
        if missing:
            raise ValueError(f"the rows do not cover the grid; missing (batch, tokens) {missing}")
        ms = tuple(tuple(table[b, t] for t in tokens) for b in batches)
        return cls(batches, tokens, ms, name)

    @classmethod
    def flat(
        cls,
        ms: float,
        batches: Sequence[int] = DEFAULT_BATCHES,
        tokens: Sequence[int] = DEFAULT_TOKENS,
        name: str = "flat",
    ) -> CostCurve:
        """The same time everywhere: the constant-cost assumption of the paper's closed form."""
        return cls(tuple(batches), tuple(tokens), tuple((ms,) * len(tokens) for _ in batches), name)

    @classmethod
    def roofline(
        cls,
        config: ModelConfig,
        hw: Hardware = H100_SXM,
        batches: Sequence[int] = DEFAULT_BATCHES,
        tokens: Sequence[int] = DEFAULT_TOKENS,
        overhead_ms: float = 0.0,
        weight_bytes_per_param: float = 2.0,
        name: str = "",
    ) -> CostCurve:
        """A modelled curve, for use before measurements exist: `roofline.decode_step` time
        plus a fixed `overhead_ms` per forward (launches, Python, sampling).

        A forward of b sequences x t tokens does the matmuls of b*t decode tokens on one read
        of the weights: max(weight bytes / bandwidth, 2 params b t / peak). Context is taken as
        0, so attention's KV reads are left out: fine for short contexts only.
        """

        def forward_ms(b: int, t: int) -> float:
            step = decode_step(config, b * t, 0, hw, weight_bytes_per_param)
            return step.time_s * 1e3 + overhead_ms

        grid = tuple(tuple(forward_ms(b, t) for t in tokens) for b in batches)
        return cls(tuple(batches), tuple(tokens), grid, name or f"roofline {hw.name}")


HostMs = float | Callable[[float], float]  # the host's time per forward, or one per row count


def _host(host_ms: HostMs, rows: float) -> float:
    return float(host_ms(rows) if callable(host_ms) else host_ms)


def padded_rows(rows: int, graph_sizes: Sequence[int] | None = None) -> int:
    """The rows a forward of `rows` one-token rows really runs: a CUDA graph is replayed at the
    next captured size up (`minirt.engine.cuda_graph.default_graph_sizes`), its padding rows
    costing the matmuls what real ones do. Unchanged without sizes or past the largest."""
    if not graph_sizes:
        return rows
    sizes = sorted(graph_sizes)
    i = bisect.bisect_left(sizes, rows)
    return sizes[i] if i < len(sizes) else rows


def step_time_ms(
    target: CostCurve,
    draft: CostCurve,
    batch: int,
    k: int,
    host_ms: HostMs = 0.0,
    graph_sizes: Sequence[int] | None = None,
) -> float:
    """One speculative step: k draft forwards of 1 token per sequence, then one target verify of
    k + 1 tokens per sequence (the k guesses and the token before them).

    `host_ms`: what the host adds to a forward (building its inputs, the launch, sampling) when
    the curves time the GPU alone; a number, or a function of the forward's rows
    (`host_overhead`): a draft forward has `batch` rows, the verify `batch x (k + 1)` one-token
    rows (batch expansion), and the host builds every one. `graph_sizes`: the engine's captured
    CUDA-graph sizes; a forward costs the GPU what its padded size does (`padded_rows`).
    Left out: after an all-accepted step the draft's first forward feeds 2 tokens (it lacks the
    last guess's KV), and the accept / roll-back work per sequence. k = 0 is a plain decode step.
    """
    _check_k(k)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rows = batch * (k + 1)
    verify = target.ms(padded_rows(rows, graph_sizes) / (k + 1), k + 1) + _host(host_ms, rows)
    if not k:  # k = 0 needs no draft curve
        return verify
    guess = draft.ms(padded_rows(batch, graph_sizes), 1) + _host(host_ms, batch)
    return k * guess + verify


def speedup(
    alpha: float,
    k: int,
    batch: int,
    target: CostCurve,
    draft: CostCurve,
    host_ms: HostMs = 0.0,
    graph_sizes: Sequence[int] | None = None,
) -> float:
    """Tokens/s with speculation over tokens/s of plain decoding with the target (k = 0 → 1).

    Every sequence of the batch gains E tokens per step on average; the batch cancels out, but
    the times depend on it: E x plain step time / speculative step time.
    """
    plain = step_time_ms(target, draft, batch, 0, host_ms, graph_sizes)
    spec = step_time_ms(target, draft, batch, k, host_ms, graph_sizes)
    return expected_tokens(alpha, k) * plain / spec


def host_overhead(target: CostCurve, plain_ms: Mapping[int, float]) -> Callable[[float], float]:
    """The host's time per forward as a function of its rows, from measured plain decode steps
    (one row per sequence): step_ms(batch) (wall time, e.g. batch / tokens_per_s of a run without
    speculation) minus the GPU time target(batch, 1). Interpolated linearly in log2(rows); flat
    below the smallest batch; past the largest, extended along the last two batches' slope per
    row (a wide verify: the host builds each row's inputs, so its time grows with the rows)."""
    batches = sorted(plain_ms)
    if not batches:
        raise ValueError("plain_ms is empty: give {batch: ms per decode step} for some batches")
    h = [max(0.0, plain_ms[b] - target.ms(b, 1)) for b in batches]

    def host_ms(rows: float) -> float:
        if rows <= batches[0] or len(batches) == 1:
            return h[0]
        if rows >= batches[-1]:
            per_row = (h[-1] - h[-2]) / (batches[-1] - batches[-2])
            return h[-1] + max(0.0, per_row) * (rows - batches[-1])
        i, t = _bracket([math.log2(b) for b in batches], math.log2(rows))
        return h[i] + t * (h[i + 1] - h[i])

    return host_ms


def end_to_end_speedups(
    rows: Iterable[Mapping[str, Any]], workload: str = "closed"
) -> list[dict[str, Any]]:
    """The end-to-end rows of `python -m minirt.bench spec` that ran `workload`, each with its
    `speedup`: tokens/s over the k = 0 row of the same pair, batch and engine mode (CUDA graphs
    or eager) and workload; 1.0 for that row itself, None where it is missing.

    "closed" is `batch` requests at once, "steady" 4 x batch requests through batch slots: a
    steady k = 0 row must never be the baseline of a closed one. Rows older than the `workload`
    field are closed.
    """

    def key(r: Mapping[str, Any]) -> tuple:
        return r.get("pair"), r["batch"], bool(r.get("cuda_graphs"))

    mine = [
        r
        for r in rows
        if r.get("experiment") == "end_to_end" and r.get("workload", "closed") == workload
    ]
    plain = {key(r): r["tokens_per_s"] for r in mine if r["k"] == 0}
    out = []
    for r in mine:
        base, tps = plain.get(key(r)), r["tokens_per_s"]
        out.append({**r, "speedup": tps / base if base and tps is not None else None})
    return out


def speedup_constant_cost(alpha: float, k: int, c: float) -> float:
    """Leviathan et al. 2023 (§3.4): (1 - α^(k+1)) / ((1 - α)(k c + 1)), where c = draft time /
    target time and a verify of k + 1 tokens costs the same as a decode of 1 (flat curves)."""
    if not c >= 0:
        raise ValueError(f"c is the draft's time over the target's, so c >= 0; got {c!r}")
    return expected_tokens(alpha, k) / (k * c + 1)


def best_k(
    alpha: float,
    batch: int,
    target: CostCurve,
    draft: CostCurve,
    ks: Iterable[int] = DEFAULT_KS,
    host_ms: HostMs = 0.0,
) -> int:
    """The k in `ks` with the largest speedup; on a tie the smallest (same tokens, less work)."""
    best, best_speedup = None, -math.inf
    for k in ks:
        s = speedup(alpha, k, batch, target, draft, host_ms)
        if s > best_speedup:
            best, best_speedup = k, s
    if best is None:
        raise ValueError("ks is empty; pass the draft lengths to try, e.g. range(0, 9)")
    return best


def break_even_batch(
    alpha: float,
    k: int,
    target: CostCurve,
    draft: CostCurve,
    batches: Iterable[int] | None = None,
    host_ms: HostMs = 0.0,
    graph_sizes: Sequence[int] | None = None,
) -> int | None:
    """The smallest batch (of `batches`, default the target's grid) at which speculating with k
    drafts is slower than not speculating (speedup < 1); None if it never is."""
    for b in sorted(target.batches if batches is None else batches):
        if speedup(alpha, k, b, target, draft, host_ms, graph_sizes) < 1:
            return b
    return None


@dataclass
class Prediction:
    """The best draft length at one batch size, and what it buys."""

    batch: int
    k: int
    expected_tokens: float  # per sequence per step
    step_ms: float
    speedup: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict(
    alpha: float,
    target: CostCurve,
    draft: CostCurve,
    batches: Iterable[int] | None = None,
    ks: Iterable[int] = DEFAULT_KS,
    host_ms: HostMs = 0.0,
) -> list[Prediction]:
    """One row per batch (default: the target's grid): the best k, its tokens, time, speedup
    (`host_ms` as in `step_time_ms`: the host's time per forward, when the curves lack it)."""
    ks = list(ks)
    out = []
    for b in target.batches if batches is None else batches:
        k = best_k(alpha, b, target, draft, ks, host_ms)
        out.append(
            Prediction(
                batch=b,
                k=k,
                expected_tokens=expected_tokens(alpha, k),
                step_ms=step_time_ms(target, draft, b, k, host_ms),
                speedup=speedup(alpha, k, b, target, draft, host_ms),
            )
        )
    return out
