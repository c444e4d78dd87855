"""A trace's scheduler decisions as tables and charts: tokens per step, queues, per-sequence lanes.

Every number is read from step events (what `Scheduler.schedule()` decided and the engine ran);
nothing is simulated. Drawn by the scheduler page; notebook 02 (scheduling) explains it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import altair as alt
import pandas as pd

KIND_SCALE = alt.Scale(domain=["prefill", "decode"], range=["#f58518", "#4c78a8"])


def step_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per step: tokens by kind, queue lengths after the step, preemptions in it."""
    return pd.DataFrame(
        [
            {
                "step": e["step"],
                "prefill": e["num_prefill_tokens"],
                "decode": e["num_decode_tokens"],
                "running": e["num_running"],
                "waiting": e["num_waiting"],
                "preempted": len(e["preempted"]),
                "finished": len(e["finished"]),
                "free_blocks": e["num_free_blocks"],
                # preemption_mode="swap" (absent from older traces)
                "swapped": e.get("num_swapped", 0),
                "swap_blocks": e.get("swap_blocks", 0),
            }
            for e in steps
        ],
        columns=[
            "step", "prefill", "decode", "running", "waiting", "preempted", "finished",
            "free_blocks", "swapped", "swap_blocks",
        ],
    )  # fmt: skip


def totals(steps: list[dict[str, Any]], requests: list[dict[str, Any]]) -> dict[str, int]:
    """Whole-run sums the page shows as metrics (and the tests compare with LLM.last_stats)."""
    return {
        "steps": len(steps),
        "prefill_tokens": sum(e["num_prefill_tokens"] for e in steps),
        "decode_tokens": sum(e["num_decode_tokens"] for e in steps),
        "preemptions": sum(len(e["preempted"]) for e in steps),
        "swap_outs": sum(len(e.get("swapped_out", [])) for e in steps),
        "swap_blocks": sum(e.get("swap_blocks", 0) for e in steps),
        "requests": len(requests),
        "generated_tokens": sum(r["num_output_tokens"] for r in requests),
    }


def lane_frame(steps: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (step, scheduled sequence): a prefill chunk or a decode, and its token count."""
    rows = [
        {
            "step": e["step"],
            "seq": f"seq {s['seq_id']}",
            "kind": "prefill" if s["is_prefill"] else "decode",
            "tokens": s["num_new_tokens"],
            "already_computed": s["num_computed_tokens"],
        }
        for e in steps
        for s in e["scheduled"]
    ]
    return pd.DataFrame(rows, columns=["step", "seq", "kind", "tokens", "already_computed"])


def request_frame(steps: list[dict[str, Any]], requests: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per request: lengths, time to first token, finish reason, times preempted."""
    preempted = Counter(s for e in steps for s in e["preempted"])
    rows = [
        {
            "seq": r["seq_id"],
            "prompt tokens": r["prompt_len"],
            "output tokens": r["num_output_tokens"],
            "TTFT (ms)": None if r["first_token_s"] is None else 1e3 * r["first_token_s"],
            "finish (ms)": None if r["finish_s"] is None else 1e3 * r["finish_s"],
            "finish reason": r["finish_reason"],
            "preempted": preempted[r["seq_id"]],
        }
        for r in requests
    ]
    return pd.DataFrame(rows)


def token_chart(frame: pd.DataFrame, token_budget: int | None) -> alt.LayerChart | alt.Chart:
    """Stacked prefill + decode tokens per step, with the token budget as a dashed rule."""
    long = frame.melt(id_vars="step", value_vars=["prefill", "decode"], var_name="kind")
    bars = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("step:O", title="step", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("value:Q", title="tokens computed", stack="zero"),
            color=alt.Color("kind:N", scale=KIND_SCALE, title=None),
            order=alt.Order("kind:N", sort="descending"),  # prefill at the bottom
            tooltip=["step", "kind", "value"],
        )
    )
    if token_budget is None:
        return bars.properties(height=260)
    rule = (
        alt.Chart(pd.DataFrame({"budget": [token_budget]}))
        .mark_rule(strokeDash=[6, 4], color="black")
        .encode(y="budget:Q", tooltip=[alt.Tooltip("budget:Q", title="token budget")])
    )
    return (bars + rule).properties(height=260)


def queue_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Running, waiting (and, with swap, swapped-out) sequences after each step (lines),
    preemptions in it (red bars)."""
    queues = ["running", "waiting"] + (["swapped"] if frame["swapped"].any() else [])
    long = frame.melt(id_vars="step", value_vars=queues, var_name="queue")
    lines = (
        alt.Chart(long)
        .mark_line(interpolate="step-after", point=True)
        .encode(
            x=alt.X("step:Q", title="step", scale=alt.Scale(domainMin=0, nice=False)),
            y=alt.Y("value:Q", title="sequences", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color(
                "queue:N",
                scale=alt.Scale(
                    domain=["running", "waiting", "swapped", "preempted"],
                    range=["#54a24b", "#bab0ac", "#b279a2", "#e45756"],
                ),
                title=None,
            ),
            tooltip=["step", "queue", "value"],
        )
    )
    bars = (
        alt.Chart(frame[frame["preempted"] > 0].assign(queue="preempted"))
        .mark_bar(width=6)
        .encode(
            x="step:Q",
            y="preempted:Q",
            color=alt.Color("queue:N"),
            tooltip=["step", "preempted"],
        )
    )
    return (lines + bars).properties(height=220)


def lane_chart(lanes: pd.DataFrame) -> alt.LayerChart:
    """A lane per sequence: which steps ran it, prefill or decode, and how many tokens."""
    base = alt.Chart(lanes).encode(
        x=alt.X("step:O", title="step", axis=alt.Axis(labelOverlap=True)),
        y=alt.Y("seq:N", title=None),
        tooltip=["step", "seq", "kind", "tokens", "already_computed"],
    )
    cells = base.mark_rect().encode(color=alt.Color("kind:N", scale=KIND_SCALE, title=None))
    text = (
        base.transform_filter("datum.kind == 'prefill'")
        .mark_text(color="white", fontSize=10)
        .encode(text="tokens:Q")
    )
    return (cells + text).properties(height=alt.Step(26))  # per lane (see blocks.pool_chart)
