"""When speculative decoding pays, drawn: `minirt.tools.spec`'s cost model over cost curves.

Measured curves come from a committed `python -m minirt.bench spec` run
(`bench/results/<device>/spec-<date>.json`, with the engine's end-to-end speedups as points),
else the roofline model of two `minirt.config.PRESETS` shapes; the host's time per forward is
fitted on the runs without a draft. The captions tell the chapter's point with the chart's own
numbers. Notebook 07 (speculative decoding).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from minirt.config import PRESETS
from minirt.results import load_results
from minirt.tools.results import ResultFile, find_results, results_root
from minirt.tools.spec import (
    CostCurve,
    HostMs,
    alpha_from_acceptance_rate,
    break_even_batch,
    expected_tokens,
    host_overhead,
    predict,
    speedup,
)

KS = tuple(range(1, 9))  # the draft lengths drawn
ROOFLINE_BATCHES = tuple(2**i for i in range(11))  # 1 .. 1024
DEFAULT_TARGET, DEFAULT_DRAFT = "qwen3-8b", "qwen3-0.6b"
EMBEDDED_TARGET, EMBEDDED_DRAFT = "embedded-target", "embedded-draft"  # the bench's names
# The forward times a cost_curve row may carry (`python -m minirt.bench spec`), and the engine
# mode whose end-to-end runs they describe.
TIMES = {
    "ms": "eager: wall time, host launches included (ms)",
    "gpu_ms": "CUDA graph: the GPU alone (gpu_ms)",
    "gpu_ms_expanded": "CUDA graph, k + 1 one-token rows as the engine verifies (gpu_ms_expanded)",
}
MODES = {"ms": "eager", "gpu_ms": "CUDA graphs", "gpu_ms_expanded": "CUDA graphs"}
ENGINE_TIME = "gpu_ms_expanded"  # how minirt's engine runs a verify: the page's first choice


class SpecError(ValueError):
    """A committed spec run this page can't use: the message says what is wrong."""


def roofline_pair(
    target: str = DEFAULT_TARGET, draft: str = DEFAULT_DRAFT, overhead_ms: float = 0.0
) -> tuple[CostCurve, CostCurve]:
    """Modelled H100 SXM curves of two PRESETS shapes (no measurement needed)."""
    return tuple(
        CostCurve.roofline(
            PRESETS[name],
            batches=ROOFLINE_BATCHES,
            overhead_ms=overhead_ms,
            name=f"roofline {name}",
        )
        for name in (target, draft)
    )


class SpecResult(ResultFile):
    """One committed `<device>/spec-<date>.json` (`minirt.tools.results.ResultFile`)."""

    @property
    def label(self) -> str:
        extra = f" (#{self.n + 1})" if self.n else ""
        return f"{self.device} / {self.date}{extra}"


def discover(root: str | Path | None = None) -> list[SpecResult]:
    """Every `<root>/<device>/spec-<date>.json`, newest first (`root`: the repository's
    bench/results). Found by name only; `load_spec` reads one."""
    found = find_results("spec", root if root is not None else results_root())
    return [SpecResult(f.path, f.device, f.topic, f.stamp, f.n) for f in found]


@dataclass
class LoadedSpec:
    """A spec run's rows: forward times per model (cost curves) and end-to-end runs."""

    record: dict[str, Any]
    cost_rows: list[dict[str, Any]]
    end_to_end: list[dict[str, Any]]

    def models(self) -> list[str]:
        return sorted({r["model"] for r in self.cost_rows})

    def contexts(self) -> list[int]:
        return sorted({int(r.get("context_len", 0)) for r in self.cost_rows})

    def times(self) -> list[str]:
        """The kinds of forward time measured (keys of TIMES), in TIMES' order."""
        return [t for t in TIMES if any(r.get(t) is not None for r in self.cost_rows)]

    def pairs(self) -> list[str]:
        """The draft/target pairs run end to end ("embedded": embedded-target + -draft)."""
        return sorted({str(r.get("pair", "")) for r in self.end_to_end})

    def curve(self, model: str, context_len: int, time: str = "ms") -> CostCurve:
        """The model's measured curve at one context length, from one kind of forward time
        (`time`, a key of TIMES); repeated rows: their median."""
        times: dict[tuple[int, int], list[float]] = {}
        for r in self.cost_rows:
            if r["model"] == model and int(r.get("context_len", 0)) == context_len:
                if r.get(time) is not None:
                    key = (int(r["batch"]), int(r["tokens"]))
                    times.setdefault(key, []).append(float(r[time]))
        rows = [
            {"batch": b, "tokens": t, "ms": statistics.median(v)} for (b, t), v in times.items()
        ]
        try:
            curve = CostCurve.from_rows(rows, name=f"{model} (measured)")
        except ValueError as e:
            raise SpecError(f"its {model} rows at context {context_len}: {e}") from None
        if curve.tokens[0] != 1:
            raise SpecError(f"{model} has no 1-token forward (a plain decode) to compare with")
        return curve


def curve_run(sets: list[SpecResult], chosen: SpecResult) -> SpecResult | None:
    """The run whose cost curves price `chosen`: itself when it has cost_curve rows, else the
    newest run of the same device that has them, for the pairs `chosen` ran if one has (`bench
    spec --pair --decode-only` writes none: a forward's time depends on the model shapes and the
    GPU, not on the trained weights)."""
    same = [chosen] + [s for s in sets if s.device == chosen.device and s.path != chosen.path]
    try:  # the pairs `chosen` ran end to end: prefer curves of those models
        pairs = {str(r.get("pair")) for r in load_spec(chosen).end_to_end}
    except SpecError:
        pairs = set()
    found = []
    for s in same:
        try:
            models = load_spec(s).models()
        except SpecError:
            continue
        if models:
            found.append(s)
            if not pairs or any(f"{p}-target" in models for p in pairs):
                return s
    return found[0] if found else None


def default_models(models: list[str]) -> tuple[int, int]:
    """Indices of the target and draft to show first: the embedded pair, else the first
    "<pair>-target" with its "<pair>-draft" (a pair: its end-to-end points can be drawn)."""
    pick = {m: i for i, m in enumerate(models)}
    if EMBEDDED_TARGET in pick:
        return pick[EMBEDDED_TARGET], pick.get(EMBEDDED_DRAFT, 0)
    for m in models:
        draft = f"{m.removesuffix('-target')}-draft"
        if m.endswith("-target") and draft in pick:
            return pick[m], pick[draft]
    return 0, 0


def _check_cost_row(r: dict[str, Any]) -> None:
    """Raise (KeyError, TypeError, ValueError) unless the row has a grid point and a time."""
    int(r["batch"]), int(r["tokens"]), str(r["model"])
    times = [r[t] for t in TIMES if r.get(t) is not None]
    if not times:
        raise KeyError("ms")
    for t in times:
        float(t)


def load_spec(result: SpecResult) -> LoadedSpec:
    """Read a committed spec run (`load_results`); SpecError when it can't be used."""
    name = f"{result.device}/{result.path.name}"
    try:
        record = load_results(result.path)
    except (ValueError, OSError) as e:
        raise SpecError(f"{name} is unreadable: {e}") from None
    if record.get("topic", "spec") != "spec":
        raise SpecError(f"{name} is a {record.get('topic')!r} result, not a spec run")
    rows = [r for r in record.get("results", []) if isinstance(r, dict)]
    try:
        cost = [r for r in rows if r.get("experiment") == "cost_curve"]
        for r in cost:
            _check_cost_row(r)
        e2e = [r for r in rows if r.get("experiment") == "end_to_end"]
        for r in e2e:
            float(r["tokens_per_s"]), int(r["batch"]), int(r["k"])
    except (KeyError, TypeError, ValueError) as e:
        raise SpecError(f"{name} has a malformed row ({e!r})") from None
    return LoadedSpec(record, cost, e2e)


def default_run(sets: list[SpecResult]) -> int:
    """Where the cost view starts: the newest run with end-to-end rows (its measured speedups
    sit on the curves, and the host's time is fitted on them); else the newest."""
    for i, result in enumerate(sets):
        try:
            if load_spec(result).end_to_end:
                return i
        except SpecError:
            continue
    return 0


def usable_ks(target: CostCurve) -> list[int]:
    """The draft lengths the target curve can price: a verify of k + 1 tokens must be on it."""
    return [k for k in KS if k + 1 <= target.tokens[-1]]


def plot_batches(target: CostCurve, draft: CostCurve, per_octave: int = 4) -> list[int]:
    """Batches to draw, inside both curves: every power of two and a few between (log2 axis)."""
    lo = max(target.batches[0], draft.batches[0])
    hi = min(target.batches[-1], draft.batches[-1])
    steps = int(math.log2(hi / lo) * per_octave) if hi > lo else 0
    return sorted({lo, hi} | {round(lo * 2 ** (i / per_octave)) for i in range(steps + 1)})


def speedup_frame(
    alpha: float,
    target: CostCurve,
    draft: CostCurve,
    ks: list[int],
    batches: list[int],
    host: HostMs = 0.0,
) -> pd.DataFrame:
    """The model's speedup over plain decoding, one row per (k, batch)."""
    rows = [
        {"k": k, "batch": b, "speedup": speedup(alpha, k, b, target, draft, host)}
        for k in ks
        for b in batches
    ]
    return pd.DataFrame(rows, columns=["k", "batch", "speedup"])


def best_frame(
    alpha: float,
    target: CostCurve,
    draft: CostCurve,
    batches: list[int],
    ks: list[int],
    host: HostMs = 0.0,
) -> pd.DataFrame:
    """`predict`: the best k (0 = don't speculate) per batch, its tokens, step time, speedup."""
    rows = [
        (p.batch, p.k, p.expected_tokens, p.step_ms, p.speedup)
        for p in predict(alpha, target, draft, batches, [0, *ks], host)
    ]
    return pd.DataFrame(rows, columns=["batch", "best k", "tokens / step", "step (ms)", "speedup"])


def break_even(
    alpha: float, k: int, target: CostCurve, draft: CostCurve, host: HostMs = 0.0
) -> int | None:
    """The smallest whole batch (inside both curves) at which k guesses are slower than none."""
    lo = max(target.batches[0], draft.batches[0])
    hi = min(target.batches[-1], draft.batches[-1])
    return break_even_batch(alpha, k, target, draft, range(lo, hi + 1), host)


def plain_step_ms(end_to_end: list[dict[str, Any]], pair: str) -> dict[int, float]:
    """{batch: ms per engine step} of the pair's runs without a draft (k = 0) in CUDA graphs,
    where the host's time shows: full-batch decode steps when the run has them, else closed
    batches (their steps include the prefills). What `host_overhead` fits the host on."""
    for workload in ("decode", "closed"):
        rows = [
            r
            for r in end_to_end
            if r.get("pair") == pair
            and int(r["k"]) == 0
            and r.get("cuda_graphs")
            and r.get("workload", "closed") == workload
            and r.get("num_steps")
        ]
        if rows:
            return {int(r["batch"]): 1e3 * r["elapsed_s"] / r["num_steps"] for r in rows}
    return {}


def host_model(end_to_end: list[dict[str, Any]], pair: str | None, target: CostCurve):
    """The host's time per forward, as a function of the rows it carries
    (`minirt.tools.spec.host_overhead`: a plain step's wall time minus the target's GPU time,
    fitted on runs without a draft only), or None when the run has no such steps."""
    plain = plain_step_ms(end_to_end, pair) if pair else {}
    return host_overhead(target, plain) if plain else None


def alpha_per_guess(points: pd.DataFrame) -> float | None:
    """The median per-guess α behind measured points (their rates are accepted / proposed)."""
    rates = [
        alpha_from_acceptance_rate(r.acceptance_rate, int(r.k))
        for r in points.itertuples()
        if r.acceptance_rate is not None and not math.isnan(r.acceptance_rate)
    ]
    return statistics.median(rates) if rates else None


def verify_cost(target: CostCurve, batch: int, k: int) -> float:
    """A verify of k + 1 tokens per sequence over a plain decode step, at one batch."""
    return target.ms(batch, k + 1) / target.ms(batch, 1)


def pair_of(target: str, draft: str) -> str | None:
    """The end-to-end pair two cost-curve models belong to ("embedded-target" and
    "embedded-draft" -> "embedded"), or None when they are not one pair."""
    pair = target.removesuffix("-target")
    return pair if pair != target and draft == f"{pair}-draft" else None


def measured_speedups(end_to_end: list[dict[str, Any]]) -> pd.DataFrame:
    """Each speculating end-to-end run over the k = 0 run of the same pair, batch, engine mode
    (eager, or CUDA graphs) and workload (closed batch, a steady queue, or full-batch decode
    steps): measured tokens/s ratios, each at its own measured α."""

    def key(r):
        workload = r.get("workload", "closed")  # runs before 2026-11-27 were all closed
        return r.get("pair"), int(r["batch"]), bool(r.get("cuda_graphs")), workload

    base = {key(r): r["tokens_per_s"] for r in end_to_end if int(r["k"]) == 0}
    rows = []
    for r in end_to_end:
        plain = base.get(key(r))
        if int(r["k"]) > 0 and plain and r["tokens_per_s"]:
            mode = "CUDA graphs" if key(r)[2] else "eager"
            if key(r)[3] != "closed":
                mode += f", {key(r)[3]}"
            rows.append((r.get("pair"), mode, int(r["k"]), int(r["batch"]),
                         r["tokens_per_s"] / plain, r.get("acceptance_rate")))  # fmt: skip
    columns = ["pair", "mode", "k", "batch", "speedup", "acceptance_rate"]
    return pd.DataFrame(rows, columns=columns)


def speedup_chart(
    lines: pd.DataFrame,
    best: pd.DataFrame,
    chosen_k: int,
    even: int | None,
    points: pd.DataFrame | None = None,
) -> alt.LayerChart:
    """Speedup vs batch (log2): a line per k (the chosen one bold), the best k's envelope
    (dashed), 1× (no gain), the break-even batch of the chosen k, measured runs as points."""
    lo, hi = lines["batch"].min(), lines["batch"].max()
    ticks = [2**i for i in range(21) if lo <= 2**i <= hi]
    x = alt.X(
        "batch:Q",
        title="batch (sequences)",
        scale=alt.Scale(type="log", base=2, nice=False),
        axis=alt.Axis(values=ticks, format="d"),
    )
    y = alt.Y("speedup:Q", title="speedup over plain decoding (×)")
    colour = alt.Color(
        "k:O",
        scale=alt.Scale(domain=list(KS), scheme="viridis"),  # a k keeps its colour
        legend=alt.Legend(values=sorted(set(lines["k"]))),  # the legend names the drawn ones
        title="k",
    )
    curves = (
        alt.Chart(lines.assign(chosen=lines["k"] == chosen_k))
        .mark_line()
        .encode(
            x=x,
            y=y,
            color=colour,
            detail="k:O",
            strokeWidth=alt.condition("datum.chosen", alt.value(3.5), alt.value(1.2)),
            tooltip=["k", "batch", alt.Tooltip("speedup:Q", format=".2f")],
        )
    )
    envelope = (
        alt.Chart(best)
        .mark_line(strokeDash=[5, 4], color="black", point=True)
        .encode(x=x, y=y, tooltip=["batch", "best k", alt.Tooltip("speedup:Q", format=".2f")])
    )
    one = alt.Chart(pd.DataFrame({"speedup": [1.0]})).mark_rule(color="#888").encode(y="speedup:Q")
    layers = [curves, envelope, one]
    if even is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"batch": [even], "what": [f"break-even, k={chosen_k}"]}))
            .mark_rule(color="#e45756", strokeDash=[2, 2], strokeWidth=2)
            .encode(x="batch:Q", tooltip=["what", "batch"])
        )
    if points is not None and not points.empty:
        layers.append(
            alt.Chart(points)
            .mark_point(size=110, filled=True, stroke="black", strokeWidth=1)
            .encode(
                x=x,
                y=y,
                color=colour,
                shape=alt.Shape("mode:N", title="measured"),
                tooltip=[
                    "k",
                    "batch",
                    "mode",
                    alt.Tooltip("speedup:Q", format=".2f"),
                    alt.Tooltip("acceptance_rate:Q", format=".2f", title="α"),
                ],
            )
        )
    return alt.layer(*layers).properties(height=380)


# --------------------------------------------------------------------------- the story told


def measured_summary(points: pd.DataFrame, k: int) -> dict[str, Any] | None:
    """What the measured runs of k guesses say, for one workload (full-batch decode steps when
    there are some): the speedup at the smallest batch, where it fell below 1, the per-guess α."""
    mine = points[points["k"] == k]
    if mine.empty:
        return None
    mode = min(set(mine["mode"]), key=lambda m: (not m.endswith("decode"), m))
    rows = mine[mine["mode"] == mode].sort_values("batch")
    slower = rows[rows["speedup"] < 1]
    first, last = rows.iloc[0], rows.iloc[-1]
    return {
        "mode": mode,
        "first_batch": int(first["batch"]),
        "first_speedup": float(first["speedup"]),
        "last_batch": int(last["batch"]),
        "last_speedup": float(last["speedup"]),
        "break_even": None if slower.empty else int(slower["batch"].iloc[0]),
        "break_even_speedup": None if slower.empty else float(slower["speedup"].iloc[0]),
        "alpha": alpha_per_guess(rows),
    }


def measured_break_even_text(seen: dict[str, Any]) -> str:
    if seen["break_even"] is None:
        return f"still {seen['last_speedup']:.2f}× at batch {seen['last_batch']}"
    return f"slower than none from batch {seen['break_even']} ({seen['break_even_speedup']:.2f}×)"


def why_it_pays(
    alpha: float,
    k: int,
    target: CostCurve,
    draft: CostCurve,
    lo: int,
    hi: int,
    even: int | None,
    host: HostMs = 0.0,
) -> str:
    """The chapter's point, with this chart's numbers: a verify costs about one decode while
    a forward is memory-bound, up to k + 1 once it is compute-bound."""
    text = (
        "**Why it pays at small batch and stops at large batch.** While a forward is "
        "**memory-bound** (small batch) it reads every weight once whatever the tokens: a verify "
        f"of k + 1 = {k + 1} tokens costs about one decode ({verify_cost(target, lo, k):.2f}× "
        f"at batch {lo} on these curves), so the {expected_tokens(alpha, k):.2f} tokens a step "
        "emits on average come almost free. Once it is **compute-bound** (large batch) a verify "
        f"costs the FLOPs of up to {k + 1} decodes ({verify_cost(target, hi, k):.2f}× at batch "
        f"{hi}) and every rejected guess is work thrown away. "
    )
    if callable(host):
        rows = hi * (k + 1)
        text += (
            f"Every forward also costs host time ({host(lo):.2f} ms for {lo} row"
            f"{'s' * (lo > 1)}, {host(rows):.2f} ms for a verify's {rows:,} rows): the k draft "
            "forwards pay it k times. "
        )
    if even is not None:
        text += f"In the model k = {k} stops paying from batch {even} (red line)."
    else:
        at_hi = speedup(alpha, k, hi, target, draft, host)
        text += (
            f"In the model k = {k} still pays at batch {hi} ({at_hi:.2f}×): there the verify "
            "has not yet grown costly enough to cancel the extra tokens."
        )
    return text + " Dashed: the best k at each batch (k = 0, no speculation, is 1×)."


def measured_text(seen: dict[str, Any], k: int, alpha: float, host_fitted: bool) -> str:
    """The measured points against the model's lines, and where the two part."""
    at = f" at α ≈ {seen['alpha']:.2f} per guess (tooltip)" if seen["alpha"] is not None else ""
    text = (
        f"Points: the engine measured end to end ({seen['mode']}; tokens/s with k guesses over "
        f"k = 0 at the same batch). k = {k} made {seen['first_speedup']:.2f}× at batch "
        f"{seen['first_batch']} and was {measured_break_even_text(seen)}; it ran{at}, the "
        f"lines are at the slider's α = {alpha:.2f}. "
    )
    if host_fitted:
        return text + (
            "Where model and measurement part: the model charges each draft forward the host "
            "time of a plain step (too much at small batch) and leaves out each sequence's "
            "accept and rollback work on the host (too little at large batch)."
        )
    return text + "The lines count GPU time only: the engine's host time is not in them."


# --- at a realistic α: the measured sweep over sampling temperatures -------------------------
@dataclass
class AlphaSweep:
    """A run's batch-1 sweep (`alpha_sweep` rows): the measured points and the cost model's
    speedup over α for each k it ran, on the run's own curves as the engine runs them (CUDA
    graphs, the verify as one-token rows) plus the host's time of a plain decode step."""

    result: SpecResult
    points: pd.DataFrame  # k, temperature, α, speedup, predicted
    lines: pd.DataFrame  # k, α, speedup (the model)


def alpha_sweep(sets: list[SpecResult]) -> AlphaSweep | None:
    """The newest run (of `sets`, newest first) with an α sweep; None without one."""
    for result in sets:
        try:
            loaded = load_spec(result)
        except SpecError:
            continue
        rows = loaded.record.get("results", [])
        sweep = [r for r in rows if isinstance(r, dict) and r.get("experiment") == "alpha_sweep"]
        if not sweep:
            continue
        pair = sweep[0]["pair"]
        context = next(r["context_len"] for r in loaded.cost_rows if r["model"] == f"{pair}-target")
        curves = {role: loaded.curve(f"{pair}-{role}", context, ENGINE_TIME)
                  for role in ("target", "draft")}  # fmt: skip
        greedy = min(sweep, key=lambda r: r["temperature"])
        host = host_overhead(curves["target"], {1: 1e3 / greedy["plain_tokens_per_s"]})
        points = pd.DataFrame(
            [{"k": r["k"], "temperature": r["temperature"], "α": r["alpha"],
              "speedup": r["speedup"], "predicted": r["predicted_speedup"]} for r in sweep]
        )  # fmt: skip
        alphas = [0.5 + 0.01 * i for i in range(46)]
        lines = pd.DataFrame(
            [{"k": k, "α": a, "speedup": speedup(a, k, 1, curves["target"], curves["draft"],
                                                 host_ms=host)}
             for k in sorted(points["k"].unique()) for a in alphas]
        )  # fmt: skip
        return AlphaSweep(result, points, lines)
    return None


def alpha_sweep_chart(sweep: AlphaSweep) -> alt.LayerChart:
    """Speedup at batch 1 against α: the model's line per k, the measured points on them."""
    color = alt.Color("k:N", title="k")
    line = alt.Chart(sweep.lines).mark_line().encode(
        x=alt.X("α:Q", scale=alt.Scale(zero=False), title="α per guess"),
        y=alt.Y("speedup:Q", title="speedup at batch 1"), color=color,
    )  # fmt: skip
    dots = alt.Chart(sweep.points).mark_point(size=80, filled=True).encode(
        x="α:Q", y="speedup:Q", color=color,
        shape=alt.Shape("temperature:N", title="temperature"),
        tooltip=["k", "temperature", alt.Tooltip("α:Q", format=".3f"),
                 alt.Tooltip("speedup:Q", format=".2f"), alt.Tooltip("predicted:Q", format=".2f")],
    )  # fmt: skip
    return line + dots
