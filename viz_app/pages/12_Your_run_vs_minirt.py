"""Your run vs minirt: the engine with your part beside the engine with its own, step by step.

Data: a pair saved by `minirt.trace.compare.record_pair(..., name=...)` in a runs/ folder, two
uploaded traces, or the demo pair (a policy with a planted bug beside minirt's LPM). Both runs
are compared by what the engine decided (`first_divergence`, `step_summary`). Notebooks 02, 11.
"""

import streamlit as st

from minirt.trace import load_trace
from minirt.trace.compare import first_divergence, hit_rate, step_summary
from vizlib import blocks
from vizlib import compare_page as cp
from vizlib.registry import FAVICON, page_for
from vizlib.source import read_trace

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "The same requests through the engine twice: once with **your part** (a scheduling policy, a "
    "prefix cache, a sampler…), once with **minirt's own**. The engine's decisions are compared "
    "step by step — who was admitted, how many tokens each sequence computed, the block tables, "
    "prefix-cache hits, free blocks, who finished — and the first step that differs is named."
)

DEMO, SAVED, UPLOAD = "Demo pair", "Saved runs", "Upload two traces"
SNIPPET = (
    "from minirt.trace.compare import record_pair\n"
    'record_pair(prompts, params, {"schedule_policy": my_policy}, name="lab", '
    'schedule_policy="lpm")'
)

sb = st.sidebar
source = sb.radio("Runs", [DEMO, SAVED, UPLOAD], key="cmp_source")
if source == DEMO:
    yours, minirt = (load_trace(t) for t in cp.demo_pair())
    sb.caption(
        "Yours: `least_cached_first`, an LPM whose sort key lost its minus sign, so the request "
        "with the *shortest* cached prefix goes first. minirt's: `lpm`."
    )
elif source == SAVED:
    pairs = cp.saved_pairs()
    if not pairs:
        st.info(
            "No saved pair in runs/ (at the top of the workbench, in labs/ or in notebooks/). "
            "Save one from a notebook:"
        )
        st.code(SNIPPET, language="python")
        st.stop()
    label = sb.selectbox("Pair (newest first)", list(pairs), key="cmp_pair")
    paths = pairs[label]
    yours, minirt = (read_trace(p.read_bytes(), p.name) for p in paths)
else:
    files = [
        sb.file_uploader(f"{who} trace (.json)", type=["json"], key=f"cmp_upload_{key}")
        for who, key in (("Your", "yours"), ("minirt's", "minirt"))
    ]
    sb.caption("`record_pair(..., name=NAME)` saves `NAME-yours.json` and `NAME-minirt.json`.")
    if None in files:
        st.info("Upload both traces in the sidebar, or switch to **Demo pair**.")
        st.stop()
    yours, minirt = (read_trace(f.getvalue(), f.name) for f in files)

ya, ma = yours.steps(), minirt.steps()
if not ya or not ma:
    st.error("A trace has no step events: record it with `LLM(..., trace=True)` and generate.")
    st.stop()

divergence = first_divergence(yours, minirt)
st.markdown(
    f"**Yours** ran with {cp.parts_used(yours, minirt)}; "
    f"**minirt** with {cp.parts_used(minirt, yours)}."
)
c = st.columns(6)
c[0].metric("Hit rate (yours)", f"{hit_rate(yours):.0%}")
c[1].metric("Hit rate (minirt)", f"{hit_rate(minirt):.0%}")
c[2].metric("Steps (yours)", len(ya))
c[3].metric("Steps (minirt)", len(ma))
c[4].metric("Preemptions (yours)", cp.num_preemptions(yours))
c[5].metric("Preemptions (minirt)", cp.num_preemptions(minirt))
if divergence is None:
    st.success("No difference: the engine made the same decisions at every step of both runs.")
else:
    st.markdown(f"**First difference** — {divergence.describe()}.")

st.subheader("Step by step")
only = st.toggle("Only steps that differ", False, key="cmp_only_differing")
st.dataframe(cp.summary_frame(step_summary(yours, minirt), only), key="cmp_table")
st.caption(
    "`+n`: tokens a sequence computed in the step (a prefill chunk, or 1 for a decode); "
    "(new): admitted in this step. Hits: prompt tokens found in the prefix cache by the step's "
    "admissions; free: blocks on the free list after the step."
)

st.subheader("Block tables at one step")
last = max(len(ya), len(ma)) - 1
start = divergence.step if divergence is not None and divergence.step <= last else 0
i = st.slider("Scheduler step", 0, last, start, key=f"cmp_step_{last}") if last > 0 else 0
seq_ids = {s for e in ya + ma for s in e["block_tables"]}
seq_ids |= {r["seq_id"] for r in yours.requests() + minirt.requests()}
scale = blocks.colour_scale(sorted(seq_ids))
for column, name, trace, steps in zip(
    st.columns(2), ("Yours", "minirt"), (yours, minirt), (ya, ma), strict=True
):
    with column:
        st.markdown(f"**{name}**")
        if i >= len(steps):
            st.info(f"This run ended after step {len(steps) - 1}.")
            continue
        tables = steps[i]["block_tables"]
        num_blocks = blocks.pool_size(trace.meta, steps)
        st.altair_chart(blocks.pool_chart(blocks.block_rows(tables, num_blocks), scale))
        if tables:
            st.altair_chart(blocks.logical_chart(blocks.logical_rows(tables), scale))
        else:
            st.info("No sequence holds blocks after this step.")
st.caption(
    "Top: the physical pool after the step (colour = the sequence holding a block, ×n = n block "
    "tables share it). Below: each sequence's block table, logical block → physical block."
)
