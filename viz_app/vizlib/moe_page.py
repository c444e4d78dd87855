"""The MoE page's data and drawings: a live routing decision of `minirt.moe`, and the
dispatch / experts / combine timeline of `minirt.tools.moe` with one and two micro-batches.

Routing: the seeded block of `minirt.moe.demo` (the one tests and notebook 12 use) routes random
tokens; `RouterStats` counts the load. Timeline: `layer_time` prices each operation and
`moe_timeline.simulate` places them on a compute and a comm stream. Measured: the newest
committed `bench/results/cpu/moe-*.json` (the phases of the 4-process block). Notebook 12.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import altair as alt
import pandas as pd
import torch

from minirt.moe.demo import Recipe, build, token_slice
from minirt.results import load_results
from minirt.tools.moe import DEPLOYMENTS, Fixes, layer_time
from minirt.tools.results import find_results

OPS = ["attention", "shared", "dispatch", "experts", "combine", "route"]
OP_COLORS = ["#4c78a8", "#72b7b2", "#f58518", "#54a24b", "#e45756", "#bab0ac"]
SHOWN_TOKENS = 24  # the flow chart draws the first tokens only: more lines are a blur


def route_live(recipe: Recipe, num_ranks: int, capacity_factor: float | None) -> dict[str, Any]:
    """Route the recipe's tokens through its block: experts, weights, kept flags and the stats."""
    block, x = build(recipe)
    block.capacity_factor = capacity_factor
    with torch.no_grad():
        r = block.route(x, num_ranks=num_ranks)
    # tokens split over the ranks as ExpertParallelMoE splits them; a row leaves its rank when
    # its expert lives elsewhere
    home = torch.empty(recipe.num_tokens, dtype=torch.long)  # [tokens]: the rank owning each
    for q in range(num_ranks):
        home[token_slice(recipe.num_tokens, q, num_ranks)] = q
    per = recipe.num_experts // num_ranks
    remote = (r.experts // per != home[:, None]).float().mean().item()
    return {"experts": r.experts.tolist(), "weights": r.weights.tolist(),
            "keep": r.keep.tolist(), "stats": r.stats,
            "remote_fraction": remote}  # fmt: skip


def flow_frame(routed: dict[str, Any], num_experts: int, num_ranks: int) -> pd.DataFrame:
    """One row per (token, slot) of the first SHOWN_TOKENS tokens: a line token -> expert."""
    per, rows = num_experts // num_ranks, []
    shown = slice(0, SHOWN_TOKENS)
    triples = zip(routed["experts"][shown], routed["weights"][shown], routed["keep"][shown],
                  strict=True)  # fmt: skip
    for t, (es, ws, ks) in enumerate(triples):
        for slot, (e, w, k) in enumerate(zip(es, ws, ks, strict=True)):
            rows.append({"token": t, "slot": slot, "expert": e, "rank": f"rank {e // per}",
                         "weight": w, "kept": "kept" if k else "dropped"})  # fmt: skip
    return pd.DataFrame(rows)


def flow_chart(frame: pd.DataFrame, num_tokens: int, num_experts: int) -> alt.LayerChart:
    """Tokens on the left, experts on the right, a line per assignment (thicker = heavier)."""
    n = min(num_tokens, SHOWN_TOKENS)
    long = pd.concat([
        frame.assign(side=0.0, y=frame["token"] / max(1, n - 1), pair=frame.index),
        frame.assign(side=1.0, y=frame["expert"] / max(1, num_experts - 1), pair=frame.index),
    ])  # fmt: skip
    lines = alt.Chart(long).mark_line().encode(
        x=alt.X("side:Q", axis=None),
        y=alt.Y("y:Q", axis=None, scale=alt.Scale(reverse=True)),
        detail="pair:N",
        color=alt.Color("rank:N", title="destination"),
        strokeWidth=alt.StrokeWidth("weight:Q", scale=alt.Scale(range=[0.5, 4]), legend=None),
        strokeDash=alt.StrokeDash("kept:N", scale=alt.Scale(domain=["kept", "dropped"],
                                                           range=[[1, 0], [3, 3]])),
        tooltip=["token", "slot", "expert", "rank", alt.Tooltip("weight:Q", format=".2f"), "kept"],
    )  # fmt: skip
    ends = pd.DataFrame(
        [{"side": 0.0, "y": t / max(1, n - 1), "label": f"t{t}"} for t in range(n)]
        + [{"side": 1.0, "y": e / max(1, num_experts - 1), "label": f"e{e}"}
           for e in range(num_experts)]
    )  # fmt: skip
    # tokens labelled left of their end, experts right of theirs: never on top of the lines
    label = alt.Chart(ends).mark_text(fontSize=11).encode(x="side:Q", y="y:Q", text="label:N")
    tokens = label.transform_filter("datum.side == 0").mark_text(fontSize=11, align="right", dx=-4)
    experts = label.transform_filter("datum.side == 1").mark_text(fontSize=11, align="left", dx=4)
    rows = max(n, num_experts)
    return (lines + tokens + experts).properties(height=max(240, 20 * rows))


def load_frame(stats, num_ranks: int) -> pd.DataFrame:
    per = stats.num_experts // num_ranks
    return pd.DataFrame([{"expert": e, "rows": n, "rank": f"rank {e // per}"}
                         for e, n in enumerate(stats.tokens_per_expert)])  # fmt: skip


def load_chart(frame: pd.DataFrame, fair: float, capacity: int | None) -> alt.LayerChart:
    """Per-expert rows, coloured by the rank that holds the expert, with the fair share (and the
    capacity, when one is set) as rules."""
    bars = alt.Chart(frame).mark_bar().encode(
        x=alt.X("expert:O"), y=alt.Y("rows:Q"), color=alt.Color("rank:N", title="held by"),
        tooltip=["expert", "rows", "rank"])  # fmt: skip
    rules = [{"value": fair, "what": "fair share"}]
    if capacity is not None:
        rules.append({"value": capacity, "what": "capacity"})
    rule = alt.Chart(pd.DataFrame(rules)).mark_rule(strokeDash=[4, 3]).encode(
        y=alt.Y("value:Q", title="rows"),
        color=alt.Color("what:N", title="line", scale=alt.Scale(
            domain=["fair share", "capacity"], range=["black", "red"])))  # fmt: skip
    return (bars + rule).resolve_scale(color="independent").properties(height=260)


def model_timelines(deployment: str, tokens_per_rank: int, fixes: Fixes, imbalance: float,
                    context_len: int) -> dict[int, dict[str, Any]]:  # fmt: skip
    """{micro_batches: layer_time(...)} for 1 and 2 micro-batches, the rest of `fixes` kept."""
    d = DEPLOYMENTS[deployment]
    out = {}
    for m in (1, 2):
        f = replace(fixes, micro_batches=m)
        out[m] = layer_time(d, tokens_per_rank, f, imbalance, context_len)
    return out


def timeline_frame(intervals: list[dict], label: str, scale: float = 1e6) -> pd.DataFrame:
    """Intervals (seconds, or ms with scale=1) as chart rows in µs (or ms), tagged `label`."""
    return pd.DataFrame([{"run": label, "lane": iv.get("stream", iv.get("lane")), "op": iv["op"],
                          "micro_batch": iv["micro_batch"], "start": iv["start"] * scale,
                          "end": iv["end"] * scale} for iv in intervals])  # fmt: skip


def timeline_chart(frame: pd.DataFrame, unit: str = "µs") -> alt.Chart:
    return alt.Chart(frame).mark_bar(stroke="white").encode(
        x=alt.X("start:Q", title=unit), x2="end:Q", y=alt.Y("lane:N", title=None),
        row=alt.Row("run:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        color=alt.Color("op:N", scale=alt.Scale(domain=OPS, range=OP_COLORS)),
        tooltip=["run", "lane", "op", "micro_batch", alt.Tooltip("start:Q", format=".1f"),
                 alt.Tooltip("end:Q", format=".1f")],
    ).properties(height=alt.Step(22))  # fmt: skip


def newest_cpu_run() -> tuple[str | None, dict | None]:
    """The newest committed cpu/moe-*.json (path, record), or (None, None)."""
    for found in find_results("moe"):
        if found.device == "cpu":
            return str(found.path), load_results(found.path)
    return None, None


def measured_frame(record: dict, world_size: int, micro_batches: int) -> pd.DataFrame:
    """The ep_block row's per-rank phase intervals (ms) as timeline rows, one lane per rank.

    Only rows timed phase by phase: GPU runs also hold `phase_times` False rows (one "total"
    phase, nothing synchronised before it), and files older than that field are all timed."""
    for row in record["results"]:
        key = ("experiment", "world_size", "micro_batches", "fp8_dispatch")
        if not row.get("phase_times", True):
            continue
        if tuple(row.get(k) for k in key) == ("ep_block", world_size, micro_batches, False):
            # one lane per (rank, micro-batch): a micro-batch's transfer is in flight while
            # the other computes, and bars on one lane would hide each other
            lane = "rank {}" if micro_batches == 1 else "rank {} · mb {}"
            ivs = [{"lane": lane.format(r, p["micro_batch"]), "op": p["phase"],
                    "micro_batch": p["micro_batch"],
                    "start": p["start_ms"], "end": p["end_ms"]}
                   for r, phases in enumerate(row["phases"]) for p in phases]  # fmt: skip
            label = f"{micro_batches} micro-batch(es), rows per rank {row['recv_rows']}"
            return timeline_frame(ivs, label, scale=1.0)
    return pd.DataFrame()
