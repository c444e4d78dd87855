"""The prefix cache per step, as rows to draw: the radix tree's nodes and the hash cache's blocks.

`run_both` runs the same prompts on two engines (prefix_cache="radix" and "hash") with
`LLM.trace_cache` on, so every step event carries the cache's `to_dict()`. A node or block is a
*hit* when a request admitted in that step found it, *new* when it entered the cache in that
step (computed: a miss), else just cached. Drawn by the Prefix cache page; notebook 11.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from minirt import LLM
from vizlib.runs import RunSettings, torch_threads

COLOURS = {"hit": "#2ca02c", "new": "#d62728", "cached": "#9e9e9e", "in use": "#1f77b4",
           "free": "#e6e6e6"}  # fmt: skip


@st.cache_data(max_entries=16, show_spinner="Running the embedded engine twice…")
def run_both(settings: RunSettings, policy: str = "lpm") -> dict[str, Any]:
    """{"radix": run, "hash": run}; a run holds its step events, prompts (token ids), stats."""
    out = {}
    for cache in ("radix", "hash"):
        extra = {"prefix_cache": cache, "schedule_policy": policy if cache == "radix" else "fcfs"}
        with torch_threads(1):
            llm = LLM(**{**settings.engine_kwargs(), **extra})
            llm.trace_cache = True
            prompts = [llm.tokenizer.encode(p) for p in settings.prompts]
            llm.generate(prompts, settings.sampling_params(), use_tqdm=False)
        events = llm.recorder.to_dict()["events"]
        out[cache] = {"steps": [e for e in events if e["type"] == "step"], "prompts": prompts,
                      "stats": llm.last_stats.to_dict(), "num_blocks": llm.num_blocks}  # fmt: skip
    return out


def admitted(step: dict, prompts: list[list[int]]) -> dict[int, list[int]]:
    """seq_id -> the cached prefix it found, for each request admitted (first scheduled) here."""
    return {s["seq_id"]: prompts[s["seq_id"]][: s["num_computed_tokens"]]
            for s in step["scheduled"]
            if s["is_prefill"] and step["prefix_hit_tokens"] and s["num_computed_tokens"]
            and s["num_computed_tokens"] < len(prompts[s["seq_id"]])}  # fmt: skip


def _paths(nodes: dict[int, dict]) -> dict[int, list[int]]:
    """Each node's tokens from the root to its end."""
    paths: dict[int, list[int]] = {0: []}
    todo = list(nodes)
    while todo:
        nid = todo.pop()
        parent = nodes[nid]["parent"]
        if parent in paths:
            paths[nid] = paths[parent] + nodes[nid]["tokens"]
        else:
            todo = [nid, parent, *todo]
    return paths


def _leaf_order(nodes: dict[int, dict]) -> dict[int, float]:
    """x of each node: leaves left to right (by their tokens), a parent over its children."""
    children: dict[int, list[int]] = {}
    for nid, n in nodes.items():
        children.setdefault(n["parent"], []).append(nid)
    x: dict[int, float] = {}
    stack, leaves = [(0, False)], 0
    while stack:
        nid, done = stack.pop()
        kids = sorted(children.get(nid, []), key=lambda c: nodes[c]["tokens"])
        if done or not kids:
            x[nid] = sum(x[c] for c in kids) / len(kids) if kids else float(leaves)
            leaves += not kids
            continue
        stack.append((nid, True))
        stack += [(c, False) for c in reversed(kids)]
    return x


def tree_rows(steps: list[dict], i: int, prompts: list[list[int]]) -> pd.DataFrame:
    """One row per radix node after step i: x (leaf order), depth in tokens, state, parent."""
    nodes = {n["id"]: n for n in steps[i]["cache"]["nodes"]}
    prev = {n["id"]: n for n in steps[i - 1]["cache"]["nodes"]} if i > 0 else {}
    before = list(_paths(prev).values())  # a node split since keeps its tokens: not new
    hits = list(admitted(steps[i], prompts).values())
    paths, x = _paths(nodes), _leaf_order(nodes)
    rows = []
    for nid, n in nodes.items():
        p = paths[nid]
        hit = any(len(h) >= len(p) and h[: len(p)] == p for h in hits)
        old = any(len(b) >= len(p) and b[: len(p)] == p for b in before)
        state = "hit" if hit else "cached" if old else "new"
        rows.append({"id": nid, "parent": n["parent"], "x": x[nid], "depth": len(p),
                     "parent_x": x[n["parent"]], "parent_depth": len(p) - len(n["tokens"]),
                     "tokens": len(n["tokens"]), "locked": n["lock_ref"] > 0,
                     "blocks": ", ".join(map(str, n["blocks"])), "state": state})  # fmt: skip
    return pd.DataFrame(rows)


def block_rows(
    steps: list[dict], i: int, prompts: list[list[int]], num_blocks: int
) -> pd.DataFrame:
    """One row per physical block of the hash cache after step i, with its state."""
    cache = steps[i]["cache"]
    before = steps[i - 1]["cache"]["block_hashes"] if i > 0 else [None] * num_blocks
    bs = cache["block_size"]
    hit = set()
    for seq, prefix in admitted(steps[i], prompts).items():
        hit |= set(steps[i]["block_tables"].get(seq, [])[: len(prefix) // bs])
    used = {b for t in steps[i]["block_tables"].values() for b in t}
    rows = []
    for b, h in enumerate(cache["block_hashes"]):
        state = ("hit" if b in hit else "new" if h is not None and h != before[b]
                 else "cached" if h is not None else "in use" if b in used else "free")  # fmt: skip
        rows.append({"block": b, "row": b // 8, "col": b % 8, "state": state,
                     "ref_count": cache["ref_count"][b], "hash": h or ""})  # fmt: skip
    return pd.DataFrame(rows)


def _colour() -> alt.Color:
    return alt.Color("state:N", scale=alt.Scale(domain=list(COLOURS), range=list(COLOURS.values())))


def tree_chart(rows: pd.DataFrame) -> alt.Chart:
    """Nodes at (leaf order, depth in tokens), an edge to each parent; colour = hit/new/cached."""
    if rows.empty:
        return alt.Chart(pd.DataFrame({"x": [0], "depth": [0]})).mark_text(text="empty tree")
    y = alt.Y("depth:Q", title="tokens from the root", scale=alt.Scale(reverse=True))
    edges = (
        alt.Chart(rows)
        .mark_rule(color="#bbbbbb")
        .encode(
            x=alt.X("parent_x:Q", axis=None),
            x2="x:Q",
            y=alt.Y("parent_depth:Q", scale=alt.Scale(reverse=True)),
            y2="depth:Q",  # fmt: skip
        )
    )
    points = (
        alt.Chart(rows)
        .mark_circle(size=160, opacity=1)
        .encode(
            x="x:Q",
            y=y,
            color=_colour(),
            tooltip=["id", "tokens", "depth", "blocks", "locked", "state"],
        )
    )
    return (edges + points).properties(height=360)


def blocks_chart(rows: pd.DataFrame) -> alt.Chart:
    return alt.Chart(rows).mark_rect(stroke="white").encode(
        x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None), color=_colour(),
        tooltip=["block", "state", "ref_count", "hash"],
    ).properties(height=max(60, 24 * (int(rows["row"].max()) + 1)))  # fmt: skip
