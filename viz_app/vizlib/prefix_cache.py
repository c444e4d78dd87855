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
        for e in events:  # each radix node's tokens as text, for its label
            for node in (e.get("cache") or {}).get("nodes", []):
                node["text"] = llm.tokenizer.decode(node["tokens"])
        out[cache] = {"steps": [e for e in events if e["type"] == "step"], "prompts": prompts,
                      "stats": llm.last_stats.to_dict(), "num_blocks": llm.num_blocks}  # fmt: skip
    return out


def default_step(steps: list[dict]) -> int:
    """The step to open on: the one whose admissions hit the most cached tokens (the tree shows
    sharing there), else the last (the whole tree)."""
    hits = [e["prefix_hit_tokens"] for e in steps]
    return hits.index(max(hits)) if max(hits, default=0) > 0 else len(steps) - 1


def node_label(text: str, lock_ref: int, width: int = 24) -> str:
    """A node's label: its tokens as text (whitespace made visible, cut to `width` characters)
    and its lock count — the running requests that hold it (they keep it from eviction)."""
    shown = text.replace("\n", "⏎").replace(" ", "·")
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    return f"{shown}  ×{lock_ref}" if lock_ref else shown


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


def _rows(nodes: dict[int, dict]) -> dict[int, int]:
    """Each node's row as a file browser lists a tree: the root (id 0) on row 0, then depth
    first, children in the order of their tokens."""
    children: dict[int, list[int]] = {}
    for nid, n in nodes.items():
        children.setdefault(n["parent"], []).append(nid)
    row, stack = {}, [0]
    while stack:
        nid = stack.pop()
        row[nid] = len(row)
        stack += sorted(children.get(nid, []), key=lambda c: nodes[c]["tokens"], reverse=True)
    return row


def tree_rows(steps: list[dict], i: int, prompts: list[list[int]]) -> pd.DataFrame:
    """One row per radix node after step i: its row in the drawing, depth in tokens, parent, text,
    label, state."""
    nodes = {n["id"]: n for n in steps[i]["cache"]["nodes"]}
    prev = {n["id"]: n for n in steps[i - 1]["cache"]["nodes"]} if i > 0 else {}
    before = list(_paths(prev).values())  # a node split since keeps its tokens: not new
    hits = list(admitted(steps[i], prompts).values())
    paths, row = _paths(nodes), _rows(nodes)
    rows = []
    for nid, n in nodes.items():
        p = paths[nid]
        hit = any(len(h) >= len(p) and h[: len(p)] == p for h in hits)
        old = any(len(b) >= len(p) and b[: len(p)] == p for b in before)
        state = "hit" if hit else "cached" if old else "new"
        text = n.get("text", " ".join(map(str, n["tokens"])))
        rows.append({"id": nid, "parent": n["parent"], "row": row[nid], "depth": len(p),
                     "parent_row": row[n["parent"]], "parent_depth": len(p) - len(n["tokens"]),
                     "tokens": len(n["tokens"]), "text": text, "ref": n["lock_ref"],
                     "label": node_label(text, n["lock_ref"]),
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


def tree_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """The tree as a file browser draws one, one node a row: a node is a segment of its tokens
    from its parent's end (x = tokens from the root) to its own (the dot), labelled with its
    text and lock count, hung from its parent by a grey line; colour = hit / new / cached."""
    if rows.empty:
        return alt.Chart(pd.DataFrame({"depth": [0]})).mark_text(text="empty tree")
    x = alt.X("depth:Q", title="tokens from the root")
    y = alt.Y("row:Q", axis=None, scale=alt.Scale(reverse=True, padding=16))
    tooltip = ["text", "tokens", "depth", "ref", "blocks", "state"]
    base = alt.Chart(rows)
    hangers = base.mark_rule(color="#bbbbbb").encode(x="parent_depth:Q", y=y, y2="parent_row:Q")
    segments = base.mark_rule(strokeWidth=3).encode(
        x="parent_depth:Q", x2="depth:Q", y=y, color=_colour()
    )
    ends = base.mark_circle(size=90, opacity=1).encode(x=x, y=y, color=_colour(), tooltip=tooltip)
    labels = base.mark_text(align="left", dy=-10, fontSize=12, font="monospace").encode(
        x="parent_depth:Q", y=y, text="label:N", tooltip=tooltip
    )
    root = (
        alt.Chart(pd.DataFrame({"depth": [0], "row": [0]}))
        .mark_point(shape="diamond", size=90, filled=True, color="black")
        .encode(x=x, y=y, tooltip=[alt.Tooltip("depth:Q", title="root")])
    )
    height = 32 * (len(rows) + 1) + 40
    return (hangers + segments + ends + labels + root).properties(height=height)


def blocks_chart(rows: pd.DataFrame) -> alt.Chart:
    return alt.Chart(rows).mark_rect(stroke="white").encode(
        x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None), color=_colour(),
        tooltip=["block", "state", "ref_count", "hash"],
    ).properties(height=max(60, 24 * (int(rows["row"].max()) + 1)))  # fmt: skip
