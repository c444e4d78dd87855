"""Prefix cache: SGLang's radix tree growing step by step, beside vLLM's hash cache on the same run.

Data: two live runs of the embedded model on the prompts in the sidebar, one with
prefix_cache="radix" (and the chosen admission policy), one with "hash" (FCFS); every step
event carries the cache's state. Hits green, new (computed) red. Notebook 11 (vLLM vs SGLang)
and its appendix 11a (the scheduling benchmark's runs on the CPU and an H100).
"""

import streamlit as st

from minirt.sched.policy import POLICIES
from vizlib import prefix_cache as pc
from vizlib.registry import FAVICON, page_for
from vizlib.runs import RunSettings, min_pool_blocks, parse_prompts, slider_from

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "SGLang keeps every cached token in a **radix tree** (a match can end anywhere, even inside "
    "a block); vLLM hashes **full blocks** only. Same prompts, same pool, both caches: green = "
    "found by a request admitted in this step, red = entered the cache in this step (computed)."
)

HEADER = "You are a careful assistant.\\nAnswer in one line.\\n"
PROMPTS = [HEADER + "Q: capital of France?", HEADER + "Q: capital of Spain?",
           HEADER + "Q: capital of Italy?", "Q: 2 + 2?",
           HEADER + "Q: capital of France? Why?"]  # fmt: skip

sb = st.sidebar
text = sb.text_area("Prompts (one per line, `\\n` = newline)", "\n".join(PROMPTS), height=160,
                    key="pc_prompts")  # fmt: skip
# every registered policy; the first shown is LPM, SGLang's default
names = sorted(POLICIES, key=lambda n: n != "lpm")
policy = sb.selectbox("Radix admission policy", names, key="pc_policy")
block_size = sb.select_slider("Block size (tokens)", [4, 8, 16], 8, key="pc_block_size")
fewest = max(16, min_pool_blocks(parse_prompts(text), block_size))  # what the engine accepts
num_blocks = slider_from(sb, "Pool size (blocks)", fewest, 128, 48, key="pc_num_blocks")
budget = sb.slider("Token budget per step", 16, 256, 32, step=16, key="pc_budget")
max_tokens = sb.slider("New tokens per prompt", 1, 32, 4, key="pc_max_tokens")
settings = RunSettings(
    prompts=parse_prompts(text), max_tokens=max_tokens, block_size=block_size,
    num_kv_blocks=num_blocks, max_num_batched_tokens=budget,
    max_model_len=256,
)  # fmt: skip
if not settings.prompts:
    st.warning("Type at least one prompt in the sidebar.")
    st.stop()
try:
    runs = pc.run_both(settings, policy)
except ValueError as err:  # the engine refuses the settings: say why
    st.error(str(err))
    st.stop()

radix, hashed = runs["radix"], runs["hash"]
cols = st.columns(4)
cols[0].metric("Radix hit rate", f"{radix['stats']['prefix_cache_hit_rate']:.0%}")
cols[1].metric("Hash hit rate", f"{hashed['stats']['prefix_cache_hit_rate']:.0%}")
cols[2].metric("Radix steps", radix["stats"]["num_steps"])
cols[3].metric("Hash steps", hashed["stats"]["num_steps"])

last = max(len(radix["steps"]), len(hashed["steps"])) - 1
# Open where requests found the shared prompt in the cache (the key: a new run starts afresh).
start = min(pc.default_step(radix["steps"]), last)
i = st.slider("Scheduler step", 0, last, start, key=f"pc_step_{last}") if last > 0 else 0
left, right = st.columns(2)
with left:
    st.subheader("Radix tree (SGLang)")
    if i < len(radix["steps"]):
        step = radix["steps"][i]
        rows = pc.tree_rows(radix["steps"], i, radix["prompts"])
        st.altair_chart(pc.tree_chart(rows), width="stretch")
        st.caption(
            f"{len(rows)} nodes, {step['cache']['num_cached_tokens']} cached tokens; "
            f"{step['prefix_hit_tokens']} tokens hit in this step. A node is the run of tokens "
            "on its segment (◆ is the root; · a space, ⏎ a newline); ×n: n running requests "
            "hold it, so it can't be evicted."
        )
    else:
        st.info("The radix run had finished by this step.")
with right:
    st.subheader("Hashed blocks (vLLM)")
    if i < len(hashed["steps"]):
        step = hashed["steps"][i]
        rows = pc.block_rows(hashed["steps"], i, hashed["prompts"], hashed["num_blocks"])
        st.altair_chart(pc.blocks_chart(rows), width="stretch")
        st.caption(f"{step['cache']['num_cached_blocks']} cached blocks; "
                   f"{step['prefix_hit_tokens']} tokens hit in this step.")  # fmt: skip
    else:
        st.info("The hash run had finished by this step.")
st.caption(
    "A radix match ending inside a block shares the full blocks and copies the partly matched "
    "one (minirt/kv/radix_cache.py); the hash cache matches whole blocks only, so the tokens of "
    "a shared prefix past its last full block are computed again."
)
st.caption(
    "The same two caches and their admission orders on whole workloads (few-shot, multi-turn, "
    "branching) are measured in notebook 11; the benchmark's runs on the CPU and an H100, "
    "table by table, are in its appendix, `notebooks/11a_vllm_vs_sglang_appendix.ipynb`."
)
