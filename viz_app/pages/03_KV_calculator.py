"""KV calculator: how much KV cache a model needs, and how many sequences fit on a GPU.

Data: `minirt.kv` sizing functions on a preset of `minirt.config.PRESETS`, the embedded model or
a custom shape — no engine run. GB are 10^9 bytes (as GPUs are sold). Notebook 01 (KV cache).
"""

import streamlit as st

from minirt.config import PRESETS, ModelConfig
from vizlib import kv_calc
from vizlib.registry import FAVICON, page_for
from vizlib.runs import embedded_model_config

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "Every token keeps a key and a value vector in every layer: **2 × layers × KV heads × "
    "head_dim × bytes**. Multiply by sequence length and batch, add the weights, and compare "
    "with the GPU's memory."
)

EMBEDDED, CUSTOM = "minirt embedded target", "custom"
sb = st.sidebar
name = sb.selectbox(
    "Model", [*PRESETS, EMBEDDED, CUSTOM], index=list(PRESETS).index("qwen3-8b"), key="kv_model"
)
if name == CUSTOM:
    base = PRESETS["llama-3-8b"]
    config = ModelConfig(
        model_type="llama",
        vocab_size=sb.number_input("vocab size", 1, 1_000_000, base.vocab_size, key="kv_vocab"),
        hidden_size=sb.number_input("hidden size", 1, 65536, base.hidden_size, key="kv_hidden"),
        intermediate_size=sb.number_input(
            "intermediate size", 1, 262144, base.intermediate_size, key="kv_inter"
        ),
        num_hidden_layers=sb.number_input("layers", 1, 512, base.num_hidden_layers, key="kv_L"),
        num_attention_heads=sb.number_input(
            "query heads", 1, 512, base.num_attention_heads, key="kv_heads"
        ),
        num_key_value_heads=sb.number_input(
            "KV heads", 1, 512, base.num_key_value_heads, key="kv_kv_heads"
        ),
        head_dim=sb.number_input("head dim", 1, 1024, base.head_dim, key="kv_head_dim"),
        tie_word_embeddings=False,
        qk_norm=False,
    )
else:
    config = embedded_model_config() if name == EMBEDDED else PRESETS[name]

kv_dtype = sb.selectbox("KV dtype", kv_calc.DTYPES, key="kv_dtype")
weight_dtype = sb.selectbox("Weight dtype", kv_calc.DTYPES, key="kv_weight_dtype")
seq_len = sb.number_input("Sequence length (tokens)", 1, 1_048_576, 4096, 256, key="kv_seq_len")
batch = sb.number_input("Batch (sequences)", 1, 100_000, 8, key="kv_batch")
block_size = sb.select_slider("Block size", [8, 16, 32, 64, 128], 16, key="kv_block_size")
gpu = sb.selectbox("GPU", [*kv_calc.GPUS, "custom"], key="kv_gpu")
mem_gb = (
    sb.number_input("GPU memory (GB)", 1.0, 4096.0, 80.0, key="kv_mem_gb")
    if gpu == "custom"
    else kv_calc.GPUS[gpu]
)

n = kv_calc.kv_numbers(config, kv_dtype, seq_len, batch, block_size, mem_gb, weight_dtype)
fmt = kv_calc.fmt_bytes
st.markdown(
    f"**{name}**: {config.num_hidden_layers} layers × {config.num_key_value_heads} KV heads × "
    f"head_dim {config.head_dim}, {n['num_parameters'] / 1e9:,.2f} B parameters · "
    f"{mem_gb:g} GB of device memory"
)
c = st.columns(4)
c[0].metric("KV per token", fmt(n["bytes_per_token"]))
c[1].metric("KV per sequence", fmt(n["bytes_per_sequence"]), help=f"{seq_len:,} tokens")
c[2].metric(
    f"KV of the batch ({batch:,})",
    fmt(n["batch_bytes"]),
    help=f"{n['batch_blocks']:,} blocks of {block_size} tokens (a sequence owns whole blocks)",
)
c[3].metric(
    "Max concurrent sequences", f"{n['max_concurrent_sequences']:,}", help="beside the weights"
)
weights_fit = n["weight_bytes"] < n["gpu_bytes"]
if n["batch_fits"]:
    st.success(f"A batch of {batch:,} × {seq_len:,} tokens fits beside the weights.")
elif not weights_fit:
    st.error(kv_calc.weights_too_big(n, weight_dtype, mem_gb))
elif n["max_concurrent_sequences"] == 0:
    st.warning(
        f"Not one sequence of {seq_len:,} tokens fits: it needs {fmt(n['bytes_per_sequence'])} "
        f"of KV and {fmt(n['gpu_bytes'] - n['weight_bytes'])} are left beside the weights."
    )
else:
    st.warning(
        f"A batch of {batch:,} doesn't fit: at most {n['max_concurrent_sequences']:,} sequences "
        f"of {seq_len:,} tokens; the scheduler would queue or preempt the rest."
    )

st.subheader("Device memory")
st.altair_chart(kv_calc.memory_chart(n), width="stretch")
st.subheader("Longer sequences, fewer of them")
if weights_fit:
    max_len = max(seq_len, config.max_position_embeddings, 1024)
    curve = kv_calc.concurrency_frame(config, kv_dtype, block_size, mem_gb, weight_dtype, max_len)
    st.altair_chart(
        kv_calc.concurrency_chart(curve, seq_len, n["max_concurrent_sequences"]), width="stretch"
    )
    st.caption(kv_calc.concurrency_caption(curve, seq_len, n["max_concurrent_sequences"]))
else:
    st.caption("Nothing to draw: with no room beside the weights, no sequence of any length fits.")

rows = [
    ("KV bytes per token", n["bytes_per_token"]),
    ("KV bytes per block", n["bytes_per_block"]),
    ("KV bytes per sequence", n["bytes_per_sequence"]),
    ("blocks per sequence", n["blocks_per_sequence"]),
    ("blocks for the batch", n["batch_blocks"]),
    ("KV bytes for the batch", n["batch_bytes"]),
    ("parameters", n["num_parameters"]),
    ("weight bytes", n["weight_bytes"]),
    ("device bytes", int(n["gpu_bytes"])),
    ("max concurrent sequences", n["max_concurrent_sequences"]),
]
with st.expander("Exact numbers"):
    st.dataframe(
        {"quantity": [r[0] for r in rows], "value": [int(r[1]) for r in rows]},
        hide_index=True,
        key="kv_numbers",
    )
