"""Roofline & batching: measured decode steps against the roofline model, batch by batch.

Data: a committed result set (`bench/results/<device>/{roofline,gpu,engine}-<date>.json`, from
`python -m minirt.bench`) or an uploaded one; the model is `minirt.tools.roofline` under the
ceilings measured in the same set (else the H100 datasheet's). Notebook 03 (latency vs throughput).
"""

import streamlit as st

from minirt.config import PRESETS
from minirt.tools.roofline import H100_SXM, Hardware
from vizlib import roofline_page as rp
from vizlib.registry import FAVICON, page_for
from vizlib.runs import embedded_model_config

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "A decode step reads every weight once, whatever the batch, so while the batch is small its "
    "time is **bytes / bandwidth** and adding sequences is nearly free; past the **crossover** "
    "the matmuls' **FLOPs / peak** take over. Measured points from a benchmark run, the "
    "roofline model's prediction as a dashed line."
)

COMMITTED, UPLOAD = "Committed results", "Upload a result file"
MEASURED, DATASHEET, CUSTOM = "measured in this set", "H100 SXM datasheet", "custom"
sb = st.sidebar
source = sb.radio("Data", [COMMITTED, UPLOAD], key="rf_source", horizontal=True)
name = "this result set"
try:
    if source == UPLOAD:
        uploaded = sb.file_uploader("A minirt.bench result (.json)", type=["json"], key="rf_upload")
        if uploaded is None:
            st.info("Upload a result file in the sidebar, or switch to **Committed results**.")
            st.stop()
        name = uploaded.name
        record = rp.load_upload(uploaded.getvalue(), name)
    else:
        sets = rp.discover()
        if not sets:
            st.info(
                "No roofline, gpu or engine results are committed under `bench/results/` yet: "
                "run `python -m minirt.bench roofline` (or `gpu`) on a GPU, or `python -m "
                "minirt.bench cpu`, commit the JSON it writes, or upload one in the sidebar."
            )
            st.stop()
        by_path = {str(s.path): s for s in sets}
        chosen = sb.selectbox(
            "Result set", list(by_path), format_func=lambda p: by_path[p].label, key="rf_set"
        )
        name = f"bench/results/{by_path[chosen].device}/{by_path[chosen].path.name}"
        record = rp.load_set(chosen, name)
    measured = rp.normalise(record)
except rp.ResultError as e:
    hint = (
        ""
        if "python -m minirt.bench" in str(e)
        else (
            " Pick another set, or re-run `python -m minirt.bench roofline|gpu|cpu` to write one."
        )
    )
    st.error(f"Can't draw {name}: {e}.{hint}")
    st.stop()

topic, device = record["topic"], record.get("device", "?")
where = (record.get("config") or {}).get("gpu") or (record.get("machine") or {}).get("cpu", "?")
st.markdown(
    f"**{name}** — topic `{topic}` on `{device}` ({where}), {record.get('date', '?')}  \n"
    f"`{record.get('command', '?')}`"
)
failures = rp.failed_rows(record)
if failures:  # the run's own record of what it skipped: worth a line, not an alarm
    st.caption("Not drawn (the benchmark recorded these rows as not run): " + "; ".join(failures))
if measured.empty:
    st.warning(f"{name} has no decode rows: nothing measured to draw.")
    st.stop()

systems = sorted(measured["system"].unique())
if topic == "gpu" or len(systems) > 1:
    # one selector per set: a set's own systems are its default, not the last set's choice
    shown = sb.multiselect("Systems", systems, default=systems, key=f"rf_systems_{name}")
    measured = measured[measured["system"].isin(shown)]
    if measured.empty:
        st.info("Pick at least one system in the sidebar.")
        st.stop()

# The model: the set's model shape, mean context and ceilings.
model = rp.model_name(record)
if model is None:
    model = sb.selectbox(
        "Model shape (the set doesn't say)", [*PRESETS, rp.EMBEDDED], key="rf_model"
    )
config = embedded_model_config() if model == rp.EMBEDDED else PRESETS[model]
recorded = rp.context_len(record)
context = sb.number_input(
    "Context for the model (tokens)",
    0,
    1 << 20,
    recorded or rp.DEFAULT_CONTEXT,
    16,
    key=f"rf_context_{name}",  # one per set: each starts at its own run's context
    help="A step's mean context in the run: prompt + half the new tokens. Shorten it to see "
    "where the step turns compute-bound.",
)
found = rp.measured_hardware(record)
ceilings = sb.radio("Ceilings for the model", [MEASURED, DATASHEET, CUSTOM], key="rf_ceilings")
if ceilings == CUSTOM:
    hw = Hardware(
        "custom",
        sb.number_input("Memory bandwidth (GB/s)", 1.0, 100_000.0, 3350.0, key="rf_bw") * 1e9,
        sb.number_input("Matmul peak (TFLOP/s)", 0.01, 100_000.0, 989.0, key="rf_peak") * 1e12,
    )
elif ceilings == MEASURED and found is not None:
    hw = found
else:
    hw = H100_SXM
    if ceilings == MEASURED:
        st.info(
            "This set measured no ceilings (no `hbm_copy` / `bf16_matmul` rows): the model uses "
            "the H100 datasheet's. Choose **custom** in the sidebar to type your own device's "
            "bandwidth and peak."
        )
cross = rp.crossover(config, context, hw)
kv_batch = rp.kv_outweighs_weights_batch(config, context) if context else None

c = st.columns(5)
c[0].metric("Bandwidth (GB/s)", f"{hw.mem_bandwidth / 1e9:,.0f}", help=hw.name)
c[1].metric("Matmul peak (TFLOP/s)", f"{hw.peak_flops / 1e12:,.0f}", help=hw.name)
c[2].metric("Ridge point (FLOP/byte)", f"{hw.ridge_point:,.0f}")
c[3].metric(
    "Context (tokens)",
    context,
    help="the run's: prompt + half the new tokens"
    if context == recorded
    else f"set in the sidebar (the run's: {recorded or 'not recorded'})",
)
c[4].metric(
    "Crossover batch",
    "none" if cross is None else str(cross),
    help="smallest batch whose modelled step is compute-bound (minirt.tools.roofline)",
)
about = f"Model: `{model}` shape, {context} tokens of context, ceilings {hw.name}. "
if cross is not None:
    about += f"Memory-bound below batch {cross}, compute-bound from it on."
else:
    longest = rp.longest_context_with_crossover(config, hw)
    about += (
        f"**Never compute-bound** at this context: each sequence adds KV bytes as fast as FLOPs "
        f"(attention does about {config.num_attention_heads // config.num_key_value_heads} "
        "FLOPs per byte in bf16, far below the ridge point), so the step stays memory-bound at "
        "any batch"
        + (f"; from batch {kv_batch} it reads more KV than weights" if kv_batch else "")
        + "."
        + (
            f" A crossover needs a context of at most {longest} tokens: try it in the sidebar."
            if longest is not None
            else ""
        )
    )
st.caption(about)

curve = rp.model_frame(config, context, hw, rp.model_batches(measured, cross, kv_batch))
st.subheader("Decode step time vs batch")
st.altair_chart(rp.step_chart(measured, curve, cross, kv_batch), width="stretch")
st.caption(
    "Both axes logarithmic. Dashed: the roofline model, max(bytes / bandwidth, FLOPs / peak); "
    "red: the crossover; grey: the batch from which a step reads more KV than weights. A "
    "measured line above the model's is time the model doesn't count: kernel launches, Python, "
    "attention kernels that don't reach the bandwidth."
)
st.subheader("Latency vs throughput")
st.altair_chart(rp.latency_throughput_chart(measured, curve), width="stretch")
st.caption(
    "One point per batch (the label): every sequence gets one token a step, so the step time is "
    "each token's latency and batch / step is the throughput. Memory-bound batching moves right "
    "at almost no latency; once compute-bound, more throughput costs latency."
)

with st.expander("Measured points"):
    st.dataframe(measured, hide_index=True, key="rf_measured")
with st.expander("The model at each batch"):
    st.dataframe(curve, hide_index=True, key="rf_model_table")
floors = rp.rows_named(
    record, "roofline", ["batch", "step_ms", "floor_ms", "fraction_of_floor", "kv_bytes"]
)
if not floors.empty:
    with st.expander("The benchmark's own roofline table (bytes / measured copy bandwidth)"):
        st.dataframe(floors, hide_index=True, key="rf_floors")
offline = rp.rows_named(
    record, "offline", ["system", "requests", "output_tokens", "seconds", "output_tokens_per_s"]
)
if not offline.empty:
    with st.expander("Offline throughput (whole workload)"):
        st.dataframe(offline, hide_index=True, key="rf_offline")
