"""MoE: tokens flowing to their experts, the load each expert and each rank gets, and the
dispatch / experts / combine timeline of one layer with and without two-micro-batch overlap.

Data: a live routing decision of `minirt.moe` (the seeded block of `minirt.moe.demo`), the cost
model `minirt.tools.moe` (DeepSeek-V3- and Qwen3-30B-A3B-sized deployments on H100s), and the
newest committed `bench/results/cpu/moe-*.json` (phases of the 4-process CPU block). Notebook 12.
"""

from pathlib import Path

import pandas as pd
import streamlit as st

from minirt.moe.demo import Recipe
from minirt.tools.moe import DEPLOYMENTS, Fixes
from vizlib import moe_page as mp
from vizlib.registry import FAVICON, page_for

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "A router sends each token to **k** of **E** experts. Under expert parallelism the experts "
    "live on different GPUs, so every MoE layer **dispatches** each token to the GPUs of its "
    "experts and **combines** the results back: two all-to-alls per layer. The busiest GPU sets "
    "the pace, and a GPU waiting for a transfer is idle unless something overlaps it."
)

sb = st.sidebar
sb.header("Router (live, minirt.moe)")
num_experts = sb.select_slider("Experts (E)", [4, 8, 16, 32], 16, key="moe_experts")
top_k = sb.slider("Experts per token (k)", 1, 4, 2, key="moe_top_k")
num_tokens = sb.slider("Tokens", 4, 128, 32, key="moe_tokens")
num_ranks = sb.select_slider(
    "Expert-parallel ranks", [r for r in (1, 2, 4, 8) if num_experts % r == 0], 4, key="moe_ranks"
)
skew = sb.slider("Router skew", 0.0, 2.0, 0.0, 0.05, key="moe_skew",
                 help="logits + skew × (1 … 0) across the experts: low-numbered experts get "
                 "more tokens")  # fmt: skip
use_capacity = sb.toggle("Capacity factor (drop overflow)", False, key="moe_use_capacity")
factor = sb.slider("Capacity factor", 0.5, 4.0, 1.25, 0.05, key="moe_capacity",
                   disabled=not use_capacity)  # fmt: skip
seed = sb.number_input("Seed", 0, 10_000, 0, key="moe_seed")

recipe = Recipe(hidden=64, intermediate=32, num_experts=num_experts, top_k=top_k,
                num_tokens=num_tokens, skew=skew, seed=int(seed))  # fmt: skip
routed = mp.route_live(recipe, num_ranks, factor if use_capacity else None)
stats = routed["stats"]

st.subheader("Tokens → experts")
c = st.columns(4)
c[0].metric("Expert imbalance", f"{stats.imbalance:.2f}", help="busiest expert / mean")
c[1].metric("Rank imbalance", f"{stats.rank_imbalance:.2f}",
            help=f"busiest rank / mean; rows per rank {stats.tokens_per_rank}")  # fmt: skip
rows = stats.num_tokens * stats.top_k
uniform = 1 - 1 / num_ranks  # a uniform router keeps 1 / ranks of the rows at home
c[2].metric("Rows leaving their rank", f"{routed['remote_fraction']:.0%}",
            help="tokens split evenly over the ranks; a row stays home only if its expert is "
            f"local (a uniform router: {uniform:.0%} leave)")  # fmt: skip
c[3].metric("Dropped rows", f"{stats.dropped}" if stats.capacity is not None else "—",
            help=f"of {rows}; capacity {stats.capacity} rows per expert"
            if stats.capacity is not None else "no capacity: nothing is dropped")  # fmt: skip
left, right = st.columns([3, 2])
flow = mp.flow_frame(routed, num_experts, num_ranks)
left.altair_chart(mp.flow_chart(flow, num_tokens, num_experts), width="stretch")
left.caption(
    f"The first {min(num_tokens, mp.SHOWN_TOKENS)} tokens (left) and their {top_k} experts "
    "(right); colour: the rank holding the expert, width: the router weight, dashed: dropped "
    "by the capacity."
)
fair = rows / num_experts
right.altair_chart(mp.load_chart(mp.load_frame(stats, num_ranks), fair, stats.capacity),
                   width="stretch")  # fmt: skip
right.caption("Rows per expert. Every rank waits for the busiest one before the combine ends.")

st.subheader("One layer on two streams: dispatch / experts / combine")
cols = st.columns(5)
deployment = cols[0].selectbox("Deployment", list(DEPLOYMENTS), key="moe_deployment",
                               format_func=lambda k: DEPLOYMENTS[k].name)  # fmt: skip
tokens_per_rank = cols[1].select_slider("Tokens per GPU", [16, 32, 64, 128, 256, 512, 1024, 4096],
                                        128, key="moe_tokens_per_rank")  # fmt: skip
fp8 = cols[2].toggle("FP8 dispatch", True, key="moe_fp8")
hier = cols[3].toggle("Hierarchical", True, key="moe_hier", help="once per node, then NVLink")
balanced = cols[4].toggle("Expert replication", False, key="moe_balanced",
                          help="EPLB: imbalance brought to 1.05")  # fmt: skip
imbalance = st.slider("Rank imbalance", 1.0, 4.0, round(min(stats.rank_imbalance, 4.0), 2), 0.01,
                      key="moe_imbalance", help="defaults to the live router's")  # fmt: skip
fixes = Fixes(fp8_dispatch=fp8, hierarchical=hier, balanced=balanced)
runs = mp.model_timelines(deployment, tokens_per_rank, fixes, imbalance, context_len=4096)
one, two = runs[1]["total"], runs[2]["total"]
m = st.columns(4)
m[0].metric("Layer, 1 micro-batch", f"{one * 1e6:,.0f} µs")
m[1].metric("Layer, 2 micro-batches", f"{two * 1e6:,.0f} µs")
m[2].metric("Overlap speedup", f"{one / two:.2f}×")
comm = runs[1]["dispatch"] + runs[1]["combine"]
m[3].metric("Communication share", f"{comm / one:.0%}", help="of the layer, without overlap")
frame = pd.concat([mp.timeline_frame(runs[1]["intervals"], "1 micro-batch"),
                   mp.timeline_frame(runs[2]["intervals"], "2 micro-batches")])  # fmt: skip
st.altair_chart(mp.timeline_chart(frame), width="stretch")
st.caption(
    "The cost model (`minirt.tools.moe.layer_time`, H100 roofline compute at 60 % efficiency, "
    "NVLink 450 GB/s and 400 Gb/s InfiniBand): attention, then the dispatch on the comm stream, "
    "the experts, the combine. With two micro-batches one half's transfers run while the other "
    "half computes; the shared expert (DeepSeek-V3) fills the wait for the dispatch."
)

path, record = mp.newest_cpu_run()
st.subheader("Measured on a CPU: the 4-process block, phase by phase")
if record is None:
    st.info("No bench/results/cpu/moe-*.json is committed: run `python -m minirt.bench moe`.")
    st.stop()
mb = st.radio("Micro-batches", [1, 2], horizontal=True, key="moe_measured_mb")
measured = mp.measured_frame(record, 4, mb)
if measured.empty:
    st.info(f"{path} has no 4-process ep_block row with {mb} micro-batch(es).")
    st.stop()
st.altair_chart(mp.timeline_chart(measured, "ms"), width="stretch")
where = "/".join(Path(path).parts[-2:])
st.caption(
    f"From `{where}` ({record['machine'].get('cpu', '?')}): gloo over 127.0.0.1, one thread per "
    "process. Ranks with few rows finish their experts early and wait in the combine for the "
    "busiest rank. On a CPU the copies use the same cores as the experts, so two micro-batches "
    "have nothing to overlap with (notebook 12, §3)."
)
