"""Quantization: a layer's weights on their quantization grid, error against bits and group size,
activation outliers per layer, and where each format beats bf16.

Data: the embedded target's weights (`minirt.quant.grid`), its activations on a stdlib text
(`minirt.quant.outliers.activation_outliers`), and the newest committed
`bench/results/*/quant-*.json` for the speeds. Notebook 08 (quantization), lab 4.
"""

import streamlit as st

from minirt.engine.llm import LLM
from minirt.quant.accuracy import calibration_text
from minirt.quant.grid import fake_quant_groups, relative_error
from minirt.quant.linear import target_linears
from minirt.quant.outliers import activation_outliers
from vizlib import quant_page as qp
from vizlib.registry import FAVICON, page_for
from vizlib.runs import torch_threads

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "Each group of weights shares one scale (and, asymmetric, a zero point): its values round to "
    "2^bits evenly spaced levels. One large value stretches its group's grid; smaller groups "
    "confine it. Activations are harder than weights: one scale per token must span outliers "
    "that weights, quantized per row or group offline, do not have."
)


@st.cache_resource(show_spinner="Loading the embedded model…")
def load_llm() -> LLM:
    return LLM(device="cpu")


@st.cache_data(show_spinner="Running the embedded model over a stdlib file…")
def outliers() -> list[dict]:
    with torch_threads(1):
        return [s.to_dict() for s in activation_outliers(load_llm(), [calibration_text(600)])]


@st.cache_data(max_entries=4, show_spinner=False)
def load(path: str) -> dict:
    from minirt.results import load_results

    return load_results(path)


llm = load_llm()
layers = target_linears(llm.model)
short = {name.split("layers.")[1].replace(".", " "): name for name in layers}

sb = st.sidebar
layer_label = sb.selectbox("Layer", list(short), index=3, key="quant_layer")
w = layers[short[layer_label]].weight.detach().float()  # [out, in]
bits = sb.select_slider("Bits", list(qp.BITS), value=4, key="quant_bits")
choice = sb.selectbox("Group size", [*qp.GROUP_SIZES, qp.ROW], index=2, key="quant_group")
symmetric = sb.toggle("Symmetric (no zero point)", True, key="quant_sym")
group_size = qp.group_size_of(choice, w.shape[1])

# ---------------------------------------------------------------- the grid
st.subheader("One group on its grid")
worst_row, worst_g = qp.worst_group(w, group_size)
c1, c2 = sb.columns(2)
row = c1.number_input("Row", 0, w.shape[0] - 1, worst_row, key="quant_row")
group = c2.number_input("Group", 0, w.shape[1] // group_size - 1, worst_g, key="quant_group_idx")
values, levels = qp.group_frame(w, bits, group_size, symmetric, int(row), int(group))
err = relative_error(w, fake_quant_groups(w, bits, group_size, symmetric))
m1, m2, m3 = st.columns(3)
m1.metric("Layer error", f"{err:.2%}", help="‖Ŵ−W‖/‖W‖ over the whole layer at these settings")
m2.metric("Levels used", f"{int(levels['used'].sum())} / {len(levels)}",
          help="grid levels this group's weights round to")  # fmt: skip
m3.metric("Bits per weight", f"{bits + 16 / group_size:.3f}",
          help="codes plus one 16-bit scale per group")  # fmt: skip
st.altair_chart(qp.grid_chart(values, levels), width="stretch")
st.caption(
    f"{layer_label} [{w.shape[0]} x {w.shape[1]}], row {row}, inputs "
    f"{group * group_size}..{(group + 1) * group_size - 1}. Default: the group holding the "
    "layer's largest |w|. Red rules are levels some weight rounds to, grey ones go unused."
)

# ---------------------------------------------------------------- error vs bits
st.subheader("Error against bits and group size")
st.altair_chart(qp.error_chart(qp.error_frame(w, symmetric)), width="stretch")
st.caption(
    "Each extra bit halves the step. Smaller groups cost 16 bits of scale per group but follow "
    "the weights more closely; FP8 E4M3 per row is the single point at 8 bits."
)

# ---------------------------------------------------------------- outliers
st.subheader("Activation outliers, layer by layer")
metric = st.radio(
    "Measure", list(qp.OUTLIER_METRICS), format_func=qp.OUTLIER_METRICS.get,
    horizontal=True, key="quant_outlier_metric",
)  # fmt: skip
frame = qp.outlier_frame(outliers())
st.altair_chart(qp.outlier_chart(frame, metric), width="stretch")
st.caption(
    "Inputs of every decoder projection (the embedded model on the first 600 bytes of "
    "textwrap.py) beside its weight. The down_proj inputs (after SwiGLU) spread most: a per-token "
    "INT8 scale loses several times more there than any weight row does."
)

# ---------------------------------------------------------------- speed
st.subheader("Where each format beats bf16")
paths = qp.runs()
path = None
if paths:
    path = st.selectbox(
        "Committed run", paths, index=qp.fullest(paths), key="quant_run",
        format_func=lambda p: f"{p.parent.name}/{p.name}",
    )  # fmt: skip
if path is None:
    st.info(
        f"No quant-*.json is committed under bench/results/: run `{qp.BENCH_COMMAND}` on a GPU "
        "and commit its JSON to see the measured speedups here."
    )
else:
    name = f"bench/results/{path.parent.name}/{path.name}"
    try:
        record = load(str(path))
    except (OSError, ValueError) as e:
        st.error(f"Can't read {name}: {e}")
        st.stop()
    gemm = qp.gemm_frame(record)
    if gemm.empty:
        st.info(f"{name} holds no GEMM rows.")
        st.stop()
    shapes = list(dict.fromkeys(gemm["shape"]))
    shape = st.selectbox("GEMM shape", shapes, key="quant_shape")
    nk = gemm[gemm["shape"] == shape].iloc[0]
    st.markdown(
        f"**{name}** on `{(record.get('config') or {}).get('gpu', record.get('device', '?'))}`, "
        f"{record.get('date', '?')}: `{shape}` (N={nk['N']}, K={nk['K']}), M = tokens."
    )
    st.altair_chart(qp.speed_chart(gemm, shape), width="stretch")
    st.caption(qp.method_legend(gemm))
    st.dataframe(qp.crossover(gemm, shape), hide_index=True, key="quant_crossover")
