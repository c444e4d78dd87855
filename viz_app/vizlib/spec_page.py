"""Speculative decoding, drawn: what each step guessed, kept and rolled back.

A trace of a run with a draft (`LLM(..., speculative_model="draft", num_speculative_tokens=k,
trace=True)`, live or uploaded): each step event's `spec` list holds, per speculating sequence,
the draft's guesses, how many the target accepted, the tokens emitted, the block table with the
lookahead slots (`table_before`) and the blocks the rollback freed; the step's `block_tables` is
the table after the rollback (traces from before speculation have no `spec`). When it pays is
`vizlib.spec_cost`'s. Notebook 07 (speculative decoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import altair as alt
import pandas as pd

from minirt import SamplingParams
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
    """One row per (step, verdict): draft tokens accepted and rejected in that step; a step
    that guessed nothing (a prefill) has 0 of each, so the chart's axis holds every step."""
    rows = []
    if not has_spec(steps):
        return pd.DataFrame(rows, columns=["step", "verdict", "tokens", "sequences"])
    for e in steps:
        spec = e.get("spec", [])
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
