"""Scheduler: what continuous batching decided at every step of a real engine run.

Data: a live run of the embedded model with the knobs in the sidebar (each change re-runs the
engine), or an uploaded trace. The defaults make chunked prefill and preemption visible on a few
short prompts: a 32-token budget and a pool of 16 blocks of 8. Notebook 02 (scheduling).
"""

import streamlit as st

from vizlib import schedule
from vizlib.registry import FAVICON, page_for
from vizlib.runs import (
    SCHEDULER_PROMPTS,
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
    "Every step the scheduler fills a **token budget**: running sequences first (a decode is one "
    "token, an unfinished prefill its next chunk), then waiting ones in arrival order. When the "
    "KV pool has no block left, the newest running sequence is **preempted**: its blocks are "
    "freed, and its KV is either recomputed later or copied to host memory and back (swap)."
)


def live_settings() -> RunSettings:
    sb = st.sidebar
    text = sb.text_area(
        "Prompts (one per line, `\\n` = newline)",
        "\n".join(SCHEDULER_PROMPTS),
        height=140,
        key="sch_prompts",
    )
    prompts = parse_prompts(text)
    max_tokens = sb.slider("New tokens per prompt", 1, 64, 24, key="sch_max_tokens")
    sb.markdown("**Engine knobs**")
    block_size = sb.select_slider("Block size (tokens)", [4, 8, 16, 32], 8, key="sch_block_size")
    # from the smallest budget the engine accepts: the longest prompt's blocks, in 256 KiB steps
    need = min_pool_blocks(prompts, block_size) * block_bytes(block_size)
    fewest = 256 * -(-need // (256 * 1024))
    kv_kib = slider_from(
        sb,
        "KV budget (KiB)",
        fewest,
        8192,
        1024,
        step=256,
        key="sch_kv_kib",
        help=f"from {fewest:,} KiB: the longest prompt and its first new token must fit the pool",
    )
    budget = sb.slider("Token budget per step", 8, 512, 32, step=8, key="sch_budget")
    chunked = sb.toggle("Chunked prefill", True, key="sch_chunked")
    max_len = sb.slider("Max model len (tokens per sequence)", 64, 1024, 128, 64, key="sch_len")
    mode = sb.radio(
        "Preemption",
        ["recompute", "swap"],
        horizontal=True,
        key="sch_preemption",
        help="recompute: a victim's KV is dropped and rebuilt later; swap: it is copied to "
        "(pinned) host memory and back into fresh blocks (chapter 06).",
    )
    if not chunked and budget < max_len:
        sb.caption("Without chunking a whole prompt must fit one step: budget ≥ max model len.")
    return RunSettings(
        prompts=prompts,
        max_tokens=max_tokens,
        block_size=block_size,
        kv_cache_bytes=kv_kib * 1024,
        max_num_batched_tokens=budget,
        enable_chunked_prefill=chunked,
        max_model_len=max_len,
        extra={"preemption_mode": mode} if mode == "swap" else {},
    )


trace, run = choose_trace("sch", live_settings)
steps, requests = trace.steps(), trace.requests()
if not steps:
    st.warning("This trace has no step events: nothing to draw.")
    st.stop()

frame = schedule.step_frame(steps)
total = schedule.totals(steps, requests)
budget = engine_setting(trace, "max_num_batched_tokens")
chunked = engine_setting(trace, "enable_chunked_prefill")
swap = engine_setting(trace, "preemption_mode") == "swap"
st.markdown(
    f"Pool: **{trace.meta.get('num_blocks', '?')} blocks** of "
    f"{trace.meta.get('block_size', '?')} tokens · token budget **{budget}** · chunked prefill "
    f"**{'on' if chunked else 'off'}**"
)
c = st.columns(7)
c[0].metric("Steps", total["steps"])
c[1].metric("Prefill tokens", total["prefill_tokens"], help="prompt tokens + recomputed ones")
c[2].metric("Decode tokens", total["decode_tokens"])
c[3].metric("Preemptions", total["preemptions"])
c[4].metric(
    "Swapped out",
    total["swap_outs"],
    help=f"preemptions by swap (their KV went to host memory): {total['swap_blocks']} blocks "
    "copied either way",
)
c[5].metric("Requests", total["requests"])
c[6].metric("Generated tokens", total["generated_tokens"])

st.subheader("Tokens per step")
st.altair_chart(schedule.token_chart(frame, budget), width="stretch")
st.caption(
    "Dashed line: the token budget. A prefill that doesn't fit is split into chunks across steps "
    "(chunked prefill); decodes of running sequences go first."
)

st.subheader("Queues")
st.altair_chart(schedule.queue_chart(frame), width="stretch")
st.caption(
    "Running and waiting sequences after each step"
    + ("; swapped: preempted ones whose KV waits in host memory" if swap else "")
    + "; red bars: sequences preempted in it."
)

st.subheader("Each sequence, step by step")
st.altair_chart(schedule.lane_chart(schedule.lane_frame(steps)), width="stretch")
st.caption(
    "Orange: prefill (the number is the chunk's tokens); blue: a decode. "
    + (
        "A preempted sequence leaves a gap while its KV is in host memory, then decodes on "
        "where it stopped: swapped back in, nothing recomputed."
        if swap
        else "A preempted sequence leaves a gap, then prefills again: its KV is recomputed."
    )
)

with st.expander("Per request"):
    st.dataframe(schedule.request_frame(steps, requests), hide_index=True, key="sch_requests")
with st.expander("Per step"):
    st.dataframe(frame, hide_index=True, key="sch_steps")
if run is not None:
    s = run["stats"]
    st.caption(
        f"The engine's own count (LLM.last_stats): {s['num_steps']} steps, "
        f"{s['num_preemptions']} preemptions, {s['num_generated_tokens']} tokens generated in "
        f"{s['elapsed_s']:.2f} s; prefix-cache hit rate {s['prefix_cache_hit_rate']:.0%}."
    )
