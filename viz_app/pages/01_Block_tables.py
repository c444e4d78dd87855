"""Block tables: step through a real engine run and watch the paged KV pool fill, share and free.

Data: a live run of the embedded model on the prompts typed in the sidebar (or an uploaded
trace); every step event holds each sequence's block table. Notebook 01 (KV cache).
"""

import streamlit as st

from vizlib import blocks
from vizlib.registry import FAVICON, page_for
from vizlib.runs import (
    BLOCK_TABLE_PROMPTS,
    DTYPE,
    RunSettings,
    block_bytes,
    min_pool_blocks,
    parse_prompts,
    slider_from,
)
from vizlib.source import choose_trace, engine_setting

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "A sequence's KV lives in fixed-size **blocks** anywhere in one preallocated pool; its "
    "**block table** maps logical block *i* to a physical block. Prompts that start alike share "
    "full prefix blocks (reference count > 1) instead of storing them twice."
)


def live_settings() -> RunSettings:
    sb = st.sidebar
    text = sb.text_area(
        "Prompts (one per line, `\\n` = newline)",
        "\n".join(BLOCK_TABLE_PROMPTS),
        height=140,
        key="bt_prompts",
    )
    prompts = parse_prompts(text)
    max_tokens = sb.slider("New tokens per prompt", 1, 64, 16, key="bt_max_tokens")
    block_size = sb.select_slider("Block size (tokens)", [4, 8, 16, 32], 8, key="bt_block_size")
    fewest = min_pool_blocks(prompts, block_size)  # the engine refuses a smaller pool
    num_blocks = slider_from(
        sb,
        "Pool size (blocks)",
        fewest,
        128,
        32,
        key="bt_num_blocks",
        help=f"from {fewest}: the longest prompt and its first new token must fit the pool",
    )
    budget = sb.slider("Token budget per step", 8, 256, 32, step=8, key="bt_budget")
    caching = sb.toggle("Prefix caching", True, key="bt_prefix_caching")
    sb.caption(
        f"One block of the embedded model = {block_bytes(block_size) / 1024:,.0f} KiB ({DTYPE})."
    )
    return RunSettings(
        prompts=prompts,
        max_tokens=max_tokens,
        block_size=block_size,
        num_kv_blocks=num_blocks,
        max_num_batched_tokens=budget,
        prefix_cache="hash" if caching else None,
        max_model_len=256,
    )


trace, run = choose_trace("bt", live_settings)
steps = trace.steps()
if not steps:
    st.warning("This trace has no step events: nothing to step through.")
    st.stop()
num_blocks = blocks.pool_size(trace.meta, steps)
block_size = trace.meta.get("block_size", engine_setting(trace, "block_size", "?"))
seq_ids = sorted(
    {s for e in steps for s in e["block_tables"]} | {r["seq_id"] for r in trace.requests()}
)
scale = blocks.colour_scale(seq_ids)

last = len(steps) - 1
# Start where prefix sharing shows. The key carries the run's length: the position survives
# reruns of the same run, and a run of another length starts afresh (never out of range).
start = blocks.busiest_step(steps)
i = st.slider("Scheduler step", 0, last, start, key=f"bt_step_{last}") if last > 0 else 0
event = steps[i]
tables = event["block_tables"]

done = ", ".join(
    f"seq {s['seq_id']} {'prefill' if s['is_prefill'] else 'decode'} {s['num_new_tokens']}"
    for s in event["scheduled"]
)
notes = [f"**Step {event['step']}** ran: {done or 'nothing'}"]
if event["preempted"]:
    notes.append("preempted (blocks freed): " + ", ".join(f"seq {s}" for s in event["preempted"]))
if event["finished"]:
    notes.append("finished (blocks freed): " + ", ".join(f"seq {s}" for s in event["finished"]))
if event["prefix_hit_tokens"]:
    notes.append(f"prefix-cache hits: {event['prefix_hit_tokens']} tokens")
st.markdown(" · ".join(notes))

# Work here grows with the blocks in use, not the pool: the grid holds the first MAX_DRAWN blocks.
grid = blocks.block_rows(tables, num_blocks)
refs = blocks.ref_counts(tables)
free = blocks.free_runs(tables, num_blocks)
c = st.columns(5)
c[0].metric("Blocks in pool", num_blocks, help=f"{block_size} tokens each")
c[1].metric("Used", len(refs))
c[2].metric("Shared (ref > 1)", sum(r > 1 for r in refs.values()))
c[3].metric("Free", num_blocks - len(refs))
c[4].metric(
    "Cached (hash kept)",
    event["num_cached_blocks"],
    help="Full blocks whose content is findable by hash, in use or free until reused.",
)

st.subheader("Physical pool (state after the step)")
st.altair_chart(blocks.pool_chart(grid, scale), width="stretch")
note = "Cell label: physical block id, ×n when n tables hold it (its reference count)."
if num_blocks > blocks.MAX_DRAWN:
    note += f" Showing blocks 0–{blocks.MAX_DRAWN - 1} of {num_blocks:,}."
st.caption(note)
st.markdown(
    f"**Free list** ({num_blocks - len(refs)}): "
    + (blocks.runs_text(free) or "empty — the next sequence that needs a block preempts someone")
)

st.subheader("Block tables: logical → physical")
if tables:
    logical = blocks.logical_rows(tables)
    st.altair_chart(blocks.logical_chart(logical, scale), width="stretch")
    entries = sum(len(t) for t in tables.values())
    if len(logical) < entries:
        st.caption(f"Showing {len(logical):,} of {entries:,} table entries, sequence by sequence.")
    with st.expander("As a table"):
        st.dataframe(blocks.table_matrix(tables), key="bt_table")
else:
    st.info("No sequence holds blocks after this step.")

if run is not None:
    with st.expander("What the model wrote"):
        for o in run["outputs"]:
            st.markdown(
                f"**seq {o['request_id']}** ({o['num_cached_tokens']} prompt tokens cached)"
            )
            st.code(o["prompt"] + o["text"], language="python")
