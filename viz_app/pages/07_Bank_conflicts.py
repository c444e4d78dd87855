"""Bank conflicts: which of the 32 shared-memory banks each thread of a warp hits, and the cost.

Data: `minirt.tools.bank.simulate` on the access the sidebar builds (tile, padding, swizzle, or a
named `PATTERNS` entry), beside the Nsight Compute value of the committed
`bench/results/<gpu>/bank-*.json` when the access is a measured pattern; and the SGEMM series of
`smem-gemm-*.json`. The sidebar picks the GPU (the H100, the course's reference, when it has runs;
else the newest) and each section shows that GPU's newest run. Notebook 09 (bank conflicts,
swizzles and the shared-memory GEMM).
"""

import streamlit as st

from minirt.tools import bank
from minirt.tools.results import find_results
from vizlib import bank_page as bp
from vizlib.registry import FAVICON, page_for

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "Shared memory is 32 banks of 4-byte words (bank = byte address / 4 mod 32). In one "
    "*wavefront* a bank serves one distinct word; threads reading the same word share it "
    "(broadcast). Wider accesses are served in 128-byte phases (half-warps for 8 B, quarter-warps "
    "for 16 B). Pad a row or swizzle the offsets and a column walk stops hitting one bank."
)


@st.cache_data(max_entries=4, show_spinner=False)
def load(path: str) -> dict:
    return bp.load(path)


def newest(topic: str) -> tuple[str | None, dict | None, str | None]:
    """(name, record, error) of the chosen GPU's newest committed result of a topic."""
    path = next((f.path for f in runs if f.topic == topic and f.device == gpu), None)
    if path is None:
        return None, None, None
    name = f"bench/results/{path.parent.name}/{path.name}"
    try:
        return name, load(str(path)), None
    except (OSError, ValueError) as e:
        return name, None, str(e)


sb = st.sidebar
runs = find_results(("bank", "smem-gemm"), bp.results_root())  # newest first
gpus = list(dict.fromkeys(f.device for f in runs))
gpu = None  # no run committed: the simulator alone
if gpus:
    gpu = sb.selectbox(
        "Measured on",
        gpus,
        index=gpus.index("h100") if "h100" in gpus else 0,  # the course's GPU, else the newest
        key="bank_gpu",
        help="bench/results/<gpu>/: that GPU's newest bank-*.json and smem-gemm-*.json",
    )
access = sb.selectbox("Access", bp.ACCESSES, index=1, key="bank_access")
if access == "pattern":
    pattern = sb.selectbox(
        "Pattern (minirt.tools.bank.PATTERNS)", list(bank.PATTERNS), key="bank_pattern"
    )
    settings = bp.Settings(access=access, pattern=pattern)
else:
    width = sb.selectbox(
        "Element / access width", bank.WIDTHS, format_func=bp.WIDTH_NAMES.get, key="bank_width"
    )
    op = sb.radio("Instruction", ["ld", "st"], horizontal=True, key="bank_op")
    group, rows, cols, index, pad = 32, 32, 32, 0, 0
    swizzle, B, M, S = False, 5, 0, 5
    if access == "broadcast":
        group = sb.select_slider("Threads per element", [1, 2, 4, 8, 16, 32], 32, key="bank_group")
    else:
        c1, c2 = sb.columns(2)
        rows = c1.number_input("Tile rows", 1, 256, 32, key="bank_rows")
        cols = c2.number_input("Tile cols", 1, 256, 32, key="bank_cols")
        what = {"row": ("Row read", rows), "column": ("Column read", cols),
                "transposed": ("Logical row read", rows)}[access]  # fmt: skip
        index = sb.number_input(what[0], 0, int(what[1]) - 1, min(3, int(what[1]) - 1),
                                key=f"bank_index_{access}")  # fmt: skip
        pad = sb.number_input("Padding (elements per row)", 0, 32, 0, key="bank_pad")
        swizzle = sb.toggle("Swizzle<B, M, S> on element offsets", False, key="bank_swizzle")
        if swizzle:
            c1, c2, c3 = sb.columns(3)
            B = c1.number_input("B", 0, 8, 5, key="bank_B")
            M = c2.number_input("M", 0, 8, 0, key="bank_M")
            S = c3.number_input("S", 0, 10, 5, key="bank_S")
    settings = bp.Settings(
        access_bytes=width, rows=int(rows), cols=int(cols), access=access, index=int(index),
        pad=int(pad), swizzle=swizzle, B=int(B), M=int(M), S=int(S), op=op, group=group,
    )  # fmt: skip

# ---------------------------------------------------------------- the access
try:
    addresses, access_bytes, op = bp.access_of(settings)
    result = bank.simulate(addresses, access_bytes, op)
except ValueError as e:
    st.error(f"Can't simulate this access: {e}")
    st.stop()

bank_name, bank_record, bank_error = newest("bank")
row = bp.measured(bank_record, addresses, access_bytes, op)
values = bp.metric_values(result)
cols_ = st.columns(len(values) + 1)
helps = {
    "Wavefronts": "128-byte passes the instruction needs (minirt.tools.bank.simulate)",
    "Ideal": "one wavefront per phase with an active thread",
    "Conflicts": "wavefronts − ideal (as Nsight Compute counts bank conflicts)",
    "n-way": "the worst phase's serialisation",
}
for col, (label, value) in zip(cols_, values.items(), strict=False):
    col.metric(label, value, help=helps[label])
if row is not None:
    cols_[-1].metric(
        "ncu wavefronts",
        str(row["wavefronts"]),
        delta=f"{row['conflicts']} conflicts",
        delta_color="off",
        delta_arrow="off",
        help=f"Nsight Compute, measured pattern `{row['pattern']}` in {bank_name}",
    )
if row is not None:
    source = (
        f"Measured by Nsight Compute as `{row['pattern']}` ({bank_name}): "
        f"{row['wavefronts']} wavefronts, {row['conflicts']} conflicts."
    )
elif bank_error:
    source = f"Can't read {bank_name}: {bank_error}"
elif bank_record is None:
    source = (
        f"No bank-*.json is committed under bench/results/{gpu or '<gpu>'}/: run `python -m "
        "minirt.bench bank` on a GPU for the Nsight Compute values."
    )
else:
    source = (
        "Not a measured pattern: no Nsight Compute value for this access (pick **pattern** to "
        "see the measured ones)."
    )
st.caption(f"`{op}` of {access_bytes} B per thread. {source}")
frame = bp.heatmap_frame(addresses, access_bytes, op)
st.altair_chart(bp.heatmap_chart(frame), width="stretch")
st.caption(
    "One row per thread, one column per bank; colour = the pass of its phase that serves it "
    "(0 = the first wavefront). A red outline: the bank must serve more than one distinct word "
    "in that phase — a conflict. Empty rows are inactive threads."
)
with st.expander("Addresses per thread"):
    st.dataframe(frame, hide_index=True, key="bank_frame")

# ---------------------------------------------------------------- SGEMM series
st.subheader("The shared-memory SGEMM series")
gemm_name, gemm_record, gemm_error = newest("smem-gemm")
if gemm_record is None:
    st.caption(
        f"Can't read {gemm_name}: {gemm_error}"
        if gemm_error
        else f"No smem-gemm-*.json is committed under bench/results/{gpu or '<gpu>'}/: run "
        "`python -m minirt.bench smem-gemm` on a GPU to fill this section."
    )
else:
    config = gemm_record.get("config") or {}
    st.markdown(
        f"**{gemm_name}** on `{config.get('gpu', gemm_record.get('device', '?'))}`, "
        f"{gemm_record.get('date', '?')}: {config.get('size', '?')}³ {config.get('dtype', '')} "
        f"vs {config.get('cublas', 'cuBLAS')}; conflicts by Nsight Compute at "
        f"{config.get('ncu_size', '?')}³."
    )
    gemm = bp.sgemm_frame(gemm_record)
    st.altair_chart(bp.sgemm_chart(gemm), width="stretch")
    if (gemm["dtype"] == "fp16").any():
        st.caption(
            "Each kernel's fraction is of cuBLAS in its own dtype: fp32 rows of SGEMM "
            "(`cublas`, CUDA cores), fp16 rows of HGEMM (`cublas_h`, tensor cores)."
        )
    st.dataframe(
        bp.with_dashes(gemm),
        hide_index=True,
        key="bank_sgemm",
        column_config={
            "fraction_of_cublas": st.column_config.NumberColumn(format="percent"),
            "gflops": st.column_config.NumberColumn(format="%.0f"),
        },
    )
    for kernel, summary in (config.get("racecheck") or {}).items():
        # A kernel without its barrier races by construction: what the table teaches, not an
        # alarm about the page.
        (st.info if "0 hazards" not in summary else st.caption)(
            f"compute-sanitizer racecheck, `{kernel}`: {summary}"
        )
