"""Speculative decoding, drawn: what each step guessed, kept and rolled back, and when it pays.

Two sources of data, both minirt's own:

- a trace of a run with a draft (`LLM(..., speculative_model="draft", num_speculative_tokens=k,
  trace=True)`, live or uploaded): each step event's `spec` list holds, per speculating
  sequence, the draft's guesses, how many the target accepted, the tokens emitted, the block
  table with the lookahead slots (`table_before`) and the blocks the rollback freed; the step's
  `block_tables` is the table after the rollback (traces from before speculation have no `spec`);
- `minirt.tools.spec`'s cost model over cost curves: measured ones from a committed
  `python -m minirt.bench spec` run (`bench/results/<device>/spec-<date>.json`), else the
  roofline model of two `minirt.config.PRESETS` shapes.

Notebook 07 (speculative decoding).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from minirt import SamplingParams
from minirt.config import PRESETS
from minirt.results import load_results
from minirt.tools.results import ResultFile, find_results, results_root
from minirt.tools.spec import CostCurve, break_even_batch, predict, speedup
from vizlib.runs import RunSettings

# --------------------------------------------------------------------------- live runs

DRAFT = "draft"  # the embedded draft (speculative_model="draft")
# Code prompts like the embedded pair was trained on (the draft guesses code well).
SPEC_PROMPTS = (
    "def fib(n):\n    ",
    "import os\nimport sys\n\ndef main():\n",
    "class Config:\n    def __init__(self):",
    "for i in range(10):\n    print(",
    "# utilities for files\nimport os\n\ndef read(path):",
    "def add(a, b):\n    return",
    "if __name__ == '__main__':\n",
    "with open(path) as f:\n    ",
)
# Small blocks, so a step's k lookahead slots often open a block of their own and a rejection
# frees it: the rollback shows. A pool of this many blocks never preempts the page's runs.
BLOCK_SIZE = 4
NUM_BLOCKS = 512


@dataclass(frozen=True)
class SpecSettings(RunSettings):
    """A live run (`vizlib.runs.run_engine`) that may sample: temperature 0 is greedy."""

    temperature: float = 0.0

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, max_tokens=self.max_tokens, ignore_eos=True
        )


def live_settings(k: int, num_prompts: int, max_tokens: int, temperature: float) -> SpecSettings:
    """The page's run: the embedded target with the embedded draft guessing k tokens a step
    (k = 0: no draft, the plain engine on the same prompts and the same pool)."""
    return SpecSettings(
        prompts=SPEC_PROMPTS[:num_prompts],
        max_tokens=max_tokens,
        block_size=BLOCK_SIZE,
        num_kv_blocks=NUM_BLOCKS,  # with a draft too: both pools get NUM_BLOCKS
        max_num_batched_tokens=256,
        max_model_len=256,
        extra={"speculative_model": DRAFT, "num_speculative_tokens": k} if k else {},
        temperature=temperature,
    )


# --------------------------------------------------------------------------- traces


def has_spec(steps: list[dict[str, Any]]) -> bool:
    return any(e.get("spec") for e in steps)


def totals(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole-run counts from the trace (they match `LLM.last_stats` of the run that wrote it)."""
    entries = [s for e in steps for s in e.get("spec", [])]
    proposed = sum(len(s["proposed"]) for s in entries)
    accepted = sum(s["num_accepted"] for s in entries)
    emitted = sum(len(s["emitted"]) for s in entries)
    return {
        "steps": len(steps),
        "spec_steps": sum(bool(e.get("spec")) for e in steps),
        "draft_tokens": proposed,
        "accepted_tokens": accepted,
        "acceptance_rate": accepted / proposed if proposed else 0.0,
        # E in the cost model: tokens one speculating sequence gets from one step
        "tokens_per_step": emitted / len(entries) if entries else 0.0,
        "k": max((len(s["proposed"]) for s in entries), default=0),
        "freed_blocks": sum(len(s["freed_blocks"]) for s in entries),
    }


def step_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (step, verdict): draft tokens accepted and rejected in that step."""
    rows = []
    for e in steps:
        spec = e.get("spec", [])
        if not spec:
            continue
        accepted = sum(s["num_accepted"] for s in spec)
        rejected = sum(len(s["proposed"]) - s["num_accepted"] for s in spec)
        for verdict, n in (("accepted", accepted), ("rejected", rejected)):
            rows.append(
                {"step": e["step"], "verdict": verdict, "tokens": n, "sequences": len(spec)}
            )
    return pd.DataFrame(rows, columns=["step", "verdict", "tokens", "sequences"])


VERDICT_SCALE = alt.Scale(domain=["accepted", "rejected"], range=["#54a24b", "#e45756"])


def accept_chart(frame: pd.DataFrame) -> alt.Chart:
    """Draft tokens per step, stacked: accepted (green, bottom) and rejected (red)."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("step:O", title="step", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("tokens:Q", title="draft tokens", stack="zero"),
            color=alt.Color("verdict:N", scale=VERDICT_SCALE, title=None),
            order=alt.Order("verdict:N"),
            tooltip=["step", "verdict", "tokens", "sequences"],
        )
        .properties(height=240)
    )


@dataclass
class Rollback:
    """One sequence's speculation in one step, with the table before and after the rollback."""

    step: int
    seq_id: int
    proposed: list[int]
    num_accepted: int
    emitted: list[int]
    table_before: list[int]
    table_after: list[int]  # [] when the sequence finished this step (its blocks released)
    freed_blocks: list[int]
    finished: bool
    x0: int | None = None  # position of the token before the guesses, when the trace tells
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        freed = len(self.freed_blocks)
        return (
            f"step {self.step} · seq {self.seq_id} · {self.num_accepted}/{len(self.proposed)} "
            f"accepted" + (f" · {freed} block{'s' * (freed > 1)} freed" if freed else "")
        )


def x0_position(entry: dict[str, Any], scheduled: dict[str, Any] | None, block_size: int):
    """Position of x_0 (the last token, whose KV the verify writes first), or None.

    The step event records `num_computed_tokens` before the step: for a decode, x_0's position.
    Kept only when it agrees with the table: the scheduler gave the step x_0 + 1 + k slots.
    """
    if scheduled is None:
        return None
    x0 = scheduled["num_computed_tokens"]
    slots = x0 + 1 + len(entry["proposed"])
    if x0 < 0 or -(-slots // block_size) != len(entry["table_before"]):
        return None
    return x0


def rollbacks(steps: list[dict[str, Any]], block_size: int | None = None) -> list[Rollback]:
    """Every speculation of the trace, in step order."""
    found = []
    for e in steps:
        scheduled = {s["seq_id"]: s for s in e["scheduled"]}
        for s in e.get("spec", []):
            seq = s["seq_id"]
            x0 = (
                x0_position(s, scheduled.get(seq), block_size)
                if isinstance(block_size, int)
                else None
            )
            found.append(
                Rollback(
                    step=e["step"],
                    seq_id=seq,
                    proposed=list(s["proposed"]),
                    num_accepted=s["num_accepted"],
                    emitted=list(s["emitted"]),
                    table_before=list(s["table_before"]),
                    table_after=list(e["block_tables"].get(seq, [])),
                    freed_blocks=list(s["freed_blocks"]),
                    finished=seq in e["finished"],
                    x0=x0,
                )
            )
    return found


def default_rollback(found: list[Rollback]) -> int:
    """The first rollback that freed a block, else the first with a rejection, else 0."""
    for good in (lambda r: r.freed_blocks, lambda r: r.num_accepted < len(r.proposed)):
        for i, r in enumerate(found):
            if good(r):
                return i
    return 0


BLOCK_STATES = ["kept", "lookahead, kept", "freed by the rollback", "released (finished)"]
BLOCK_COLOURS = ["#4c78a8", "#72b7b2", "#e45756", "#bab0ac"]


def table_frame(rb: Rollback, block_size: int | None = None) -> pd.DataFrame:
    """Rows (table, logical, physical, state) for the table before and after the rollback.

    A lookahead block is one the step added for the guesses' slots only (past x_0's block).
    """
    first_lookahead = (
        rb.x0 // block_size + 1 if rb.x0 is not None and block_size else len(rb.table_before)
    )
    rows = []
    for i, b in enumerate(rb.table_before):
        if b in rb.freed_blocks:
            state = "freed by the rollback"
        elif rb.finished:
            state = "released (finished)"
        else:
            state = "lookahead, kept" if i >= first_lookahead else "kept"
        rows.append({"table": "before", "logical": i, "physical": b, "state": state})
    for i, b in enumerate(rb.table_after):
        state = "lookahead, kept" if i >= first_lookahead else "kept"
        rows.append({"table": "after", "logical": i, "physical": b, "state": state})
    return pd.DataFrame(rows, columns=["table", "logical", "physical", "state"])


def table_chart(
    frame: pd.DataFrame, table: str, width: int | None = None, legend: bool = True
) -> alt.LayerChart:
    """One block table as a row of cells (blocks.logical_chart's style): logical block i across,
    the physical id written in the cell, coloured by what the rollback did to it."""
    rows = frame[frame["table"] == table]
    width = width if width is not None else max(1, len(rows))
    scale = alt.Scale(domain=BLOCK_STATES, range=BLOCK_COLOURS)
    base = alt.Chart(rows).encode(
        x=alt.X("logical:O", title="logical block", scale=alt.Scale(domain=list(range(width)))),
        y=alt.Y("table:N", title=None),
        tooltip=["logical", "physical", "state"],
    )
    shown = alt.Legend(title=None, orient="bottom", labelLimit=300) if legend else None
    cells = base.mark_rect(cornerRadius=3, stroke="white").encode(
        color=alt.Color("state:N", scale=scale, legend=shown)
    )
    text = base.mark_text(color="white", fontSize=13).encode(text="physical:N")
    return (cells + text).properties(height=alt.Step(34))


SLOT_STATES = [
    "earlier KV",
    "x₀ (last token)",
    "accepted guess",
    "rejected guess",
    "dead slot (overwritten next)",
    "free slot",
    "freed block",
]
SLOT_COLOURS = ["#9ecae9", "#4c78a8", "#54a24b", "#e45756", "#f4b6b6", "#eeeeee", "#ffffff"]
SLOT_COLUMNS = ["row", "block", "slot", "position", "state", "label"]


def slot_frame(rb: Rollback, block_size: int, text: list[str] | None = None) -> pd.DataFrame:
    """Every slot of the blocks this step wrote into (x_0's block to the table's end), before
    and after the rollback. `text[i]` is the i-th guess as text (default: its id)."""
    if rb.x0 is None:
        return pd.DataFrame(columns=SLOT_COLUMNS)
    x0, k, a = rb.x0, len(rb.proposed), rb.num_accepted
    text = text or [str(t) for t in rb.proposed]
    rows = []
    for i in range(x0 // block_size, len(rb.table_before)):
        freed = rb.table_before[i] in rb.freed_blocks or rb.finished
        block = f"L{i} · #{rb.table_before[i]}"
        for slot in range(block_size):
            p = i * block_size + slot
            guess = p - x0  # d_guess sits at x_0 + guess
            if p < x0:
                before, label = "earlier KV", ""
            elif p == x0:
                before, label = "x₀ (last token)", "x₀"
            elif guess <= k:
                before = "accepted guess" if guess <= a else "rejected guess"
                label = text[guess - 1]
            else:
                before, label = "free slot", ""
            after = before
            if freed:
                after = "freed block"
            elif before == "rejected guess":
                after = "dead slot (overwritten next)"
            for row, state in (("before", before), ("after", after)):
                shown = "" if state == "freed block" else label
                rows.append((row, block, slot, p, state, shown))
    return pd.DataFrame(rows, columns=SLOT_COLUMNS)


def slot_chart(frame: pd.DataFrame) -> alt.FacetChart:
    """The touched blocks slot by slot, one column per block, before (top) and after."""
    scale = alt.Scale(domain=SLOT_STATES, range=SLOT_COLOURS)
    blocks = list(dict.fromkeys(frame["block"]))  # in logical order, not alphabetical
    base = alt.Chart().encode(
        x=alt.X("slot:O", title=None, axis=None),
        y=alt.Y("row:N", title=None, sort=["before", "after"]),
        tooltip=["block", "position", "state", "label"],
    )
    cells = base.mark_rect(stroke="#999", strokeWidth=0.5).encode(
        color=alt.Color(
            "state:N", scale=scale, legend=alt.Legend(title=None, orient="bottom", labelLimit=300)
        )
    )
    text = base.mark_text(fontSize=12).encode(text="label:N")
    return (
        alt.layer(cells, text, data=frame)
        .properties(width=alt.Step(30), height=alt.Step(30))
        .facet(column=alt.Column("block:N", title=None, sort=blocks), spacing=8)
    )


def visible(text: str) -> str:
    """A token's text with whitespace made visible (a guess is often a space or a newline)."""
    return text.replace(" ", "·").replace("\n", "⏎").replace("\t", "⇥")


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each id decoded on its own (visible whitespace); ⟨id⟩ for specials or without tokenizer."""
    out = []
    for t in ids:
        s = tokenizer.decode([t]) if tokenizer is not None else ""
        out.append(visible(s) if s else f"⟨{t}⟩")
    return out


def verdict_frame(rb: Rollback, tokenizer: Any = None) -> pd.DataFrame:
    """Guess by guess: the draft's token, the target's token at that position, the verdict.

    The target's token is what it emitted there: the guess itself while accepted, its own
    (corrected) token at the first rejection, a bonus token after k accepted guesses.
    """
    draft = token_texts(tokenizer, rb.proposed)
    target = token_texts(tokenizer, rb.emitted)
    k, rows = len(rb.proposed), []
    for i in range(k + (rb.num_accepted == k)):  # a bonus row only after k accepted guesses
        if i < rb.num_accepted:
            verdict = "accepted"
        elif i == rb.num_accepted:
            verdict = "rejected: the target's token" if i < k else "bonus: the target's token"
        else:
            verdict = "not examined"
        shown = (draft[i] if i < k else "—", target[i] if i < len(target) else "—")
        rows.append((f"x₀ + {i + 1}", *shown, verdict))
    return pd.DataFrame(rows, columns=["position", "draft", "target", "verdict"])


# --------------------------------------------------------------------------- cost model

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
    newest run of the same device that has them (`bench spec --pair --decode-only` writes none:
    a forward's time depends on the model shapes and the GPU, not on the trained weights)."""
    same = [chosen] + [s for s in sets if s.device == chosen.device and s.path != chosen.path]
    for s in same:
        try:
            if load_spec(s).cost_rows:
                return s
        except SpecError:
            continue
    return None


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
    alpha: float, target: CostCurve, draft: CostCurve, ks: list[int], batches: list[int]
) -> pd.DataFrame:
    """The model's speedup over plain decoding, one row per (k, batch)."""
    rows = [
        {"k": k, "batch": b, "speedup": speedup(alpha, k, b, target, draft)}
        for k in ks
        for b in batches
    ]
    return pd.DataFrame(rows, columns=["k", "batch", "speedup"])


def best_frame(
    alpha: float, target: CostCurve, draft: CostCurve, batches: list[int], ks: list[int]
) -> pd.DataFrame:
    """`predict`: the best k (0 = don't speculate) per batch, its tokens, step time, speedup."""
    rows = [
        (p.batch, p.k, p.expected_tokens, p.step_ms, p.speedup)
        for p in predict(alpha, target, draft, batches, [0, *ks])
    ]
    return pd.DataFrame(rows, columns=["batch", "best k", "tokens / step", "step (ms)", "speedup"])


def break_even(alpha: float, k: int, target: CostCurve, draft: CostCurve) -> int | None:
    """The smallest whole batch (inside both curves) at which k guesses are slower than none."""
    lo = max(target.batches[0], draft.batches[0])
    hi = min(target.batches[-1], draft.batches[-1])
    return break_even_batch(alpha, k, target, draft, range(lo, hi + 1))


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
    colour = alt.Color("k:O", scale=alt.Scale(domain=list(KS), scheme="viridis"), title="k")
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
