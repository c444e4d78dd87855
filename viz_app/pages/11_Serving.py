"""Serving: a committed `bench serve` run, latency against throughput, the knee and goodput.

Data: `bench/results/<device>/serve-<date>.json` (python -m minirt.bench serve); the SLO sliders
ask again which offered rates met it at p99. Notebook 03 (latency vs throughput), section 6.
"""

import streamlit as st

from minirt.bench.serve import plot_rows
from minirt.results import load_results
from minirt.tools.slo import Slo
from vizlib import serve_page as sp
from vizlib.registry import FAVICON, page_for

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "Requests arrive on their own schedule (**open loop**). Below the **knee** the server keeps "
    "up and TTFT stays near one prefill; past it the queue grows and TTFT explodes while "
    "throughput flattens. **Goodput** counts only the requests that met the SLO."
)

runs = sp.discover()
if not runs:
    st.info(
        "No `bench serve` run is committed under `bench/results/` yet: run `python -m "
        "minirt.bench serve --launch embedded --device cpu --threads 1` and commit its JSON."
    )
    st.stop()
sb = st.sidebar
by_path = {str(p): p for p in runs}
chosen = sb.selectbox("Result set", list(by_path), format_func=lambda p: sp.label(by_path[p]))
record = load_results(chosen)
made_with = record["config"]["slo"]
ttft = sb.slider("SLO: p99 TTFT (ms)", 50, 10_000, int(made_with["ttft_ms"]), 50, key="sv_ttft")
tpot = sb.slider("SLO: p99 TPOT (ms)", 5, 1_000, int(made_with["tpot_ms"]), 5, key="sv_tpot")
slo = Slo(ttft, tpot)

numbers = sp.summary(record, slo)
left, middle, right = st.columns(3)
best = numbers["max_rate"]
left.metric("Highest offered rate meeting the SLO at p99", "none" if best is None else f"{best}")
middle.metric("Peak throughput", f"{numbers['peak_throughput']:.2f} req/s")
if numbers["http_efficiency"] is not None:
    right.metric("Server ÷ offline LLM.generate", f"{numbers['http_efficiency']:.0%}")

title = f"{record['device']}: {record['config'].get('model', '')}"
st.pyplot(plot_rows(record["results"], slo, title))
st.subheader("Measured, per offered rate")
st.dataframe(sp.table(record), hide_index=True)
st.caption(
    f"goodput: requests/s that met the SLO the run was made with (TTFT ≤ {made_with['ttft_ms']:g} "
    f"ms, TPOT ≤ {made_with['tpot_ms']:g} ms), per request; `{record['command']}`"
)
simulated = sp.table(record, "simulated")
if simulated:
    st.subheader("Simulated (minirt.tools.serving, fitted to the same engine)")
    st.dataframe(simulated, hide_index=True)
