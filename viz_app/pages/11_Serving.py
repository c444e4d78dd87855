"""Serving: a committed `bench serve` run, latency against throughput, the knee and goodput.

Data: `bench/results/<device>/serve-<date>.json` (python -m minirt.bench serve); the SLO sliders
ask again which offered rates met it at p99; a rate slider reads one rate; "What if" runs the
run's fitted cost model on other clusters (minirt.tools.serving_whatif); live mode points the
load generator at a local server. Notebook 03 (latency vs throughput), sections 6 and 7.
"""

import streamlit as st

from minirt.bench.serve import plot_rows, simulator_errors
from minirt.results import load_results
from minirt.tools.serving import ROUTERS, ClusterModel
from minirt.tools.serving_whatif import fitted_model, max_rate_attained, plot_what_if
from minirt.tools.slo import Slo, max_rate_meeting
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
    errors = sp.error_table(simulator_errors(record["results"]))
    if errors:
        st.caption("Simulated ÷ measured − 1, at each rate below saturation (90 % of capacity)")
        st.dataframe(errors, hide_index=True)

st.subheader("One offered rate")
rate = st.select_slider("Offered rate (requests/s)", sp.rates(record), key="sv_rate")
row = sp.at_rate(record, rate)
for col, (label, key) in zip(st.columns(len(sp.RATE_METRICS)), sp.RATE_METRICS, strict=True):
    col.metric(label, sp.ms(row[key]))
left, right = st.columns(2)
within = (
    f"Within the run's SLO (TTFT ≤ {made_with['ttft_ms']:g} ms, TPOT ≤ {made_with['tpot_ms']:g} ms)"
)
left.metric(within, f"{row['slo_attainment']:.0%}")
meets = max_rate_meeting([row], slo) is not None
right.metric("p99 TTFT and TPOT meet the sidebar SLO", "yes" if meets else "no")

st.subheader("What if: more GPUs, prefill and decode apart, another token budget")
if sp.has_cost_model(record):
    cost, sched = fitted_model(record)
    a, b, c, d = st.columns(4)
    split = d.toggle("Prefill/decode apart", value=False, key="sv_disagg")
    replicas = a.select_slider(
        "Replicas (GPUs)", [1, 2, 4, 8], 2, key="sv_replicas", disabled=split
    )
    routers = {r.replace("_", "-"): r for r in ROUTERS}
    router = routers[b.radio("Router", list(routers), 1, key="sv_router")]
    budgets = sorted({256, 512, 1024, 2048, 4096, 8192, sched.max_num_batched_tokens})
    own = sched.max_num_batched_tokens
    budget = c.select_slider("Token budget per step", budgets, own, key="sv_budget")
    if split:
        p_col, d_col, g_col = st.columns(3)
        prefill = p_col.number_input("Prefill GPUs", 1, 8, 1, key="sv_prefill")
        decode = d_col.number_input("Decode GPUs", 1, 8, 1, key="sv_decode")
        measured = round(sp.transfer_gbps() or 24.0, 1)
        gbps = g_col.number_input("KV copy GB/s", 0.1, 1000.0, measured, key="sv_gbps")
        kv = sp.kv_bytes_per_token(record)
        cluster = ClusterModel(1, router, prefill, decode, kv, gbps)
    else:
        cluster = ClusterModel(replicas=replicas, router=router)
    rows = sp.compare(chosen, cluster, budget, slo, sp.WHAT_IF_REQUESTS)
    setups = {name: [r for r in rows if r["setup"] == name] for name in sp.setup_names(rows)}
    for col, (name, part) in zip(st.columns(len(setups)), setups.items(), strict=True):
        best = max_rate_attained(part, 0.9)
        shown = "none" if best is None else f"{best:g} req/s"
        col.metric(f"{name}: ≥ 90 % within the SLO up to", shown)
    title = f"simulated with the {record['device']} run's cost model and requests"
    st.pyplot(plot_what_if(setups, slo, title))
    st.dataframe(sp.what_if_table(rows), hide_index=True)
    coefficients = ", ".join(f"{k} {v:.3g}" for k, v in cost.to_dict().items())
    st.caption(
        f"Cost model (ms): {coefficients}. A split prices each prompt's KV copy at bytes / "
        "bandwidth (default: the staged KV swap measured by bench transfers). Notebook 03, "
        "section 7, reads these curves."
    )
else:
    st.info("This run has no fitted cost model: `python -m minirt.bench serve --resimulate FILE`.")

st.subheader("Live: the load generator against a local server")
if not sb.toggle("Live mode", value=False, key="sv_live"):
    st.caption("Turn on **Live mode** in the sidebar to measure a local `python -m minirt serve`.")
    st.stop()
url = st.text_input("Server URL", "http://127.0.0.1:8000", key="sv_url")
a, b = st.columns(2)
live_rate = a.select_slider(
    "Offered rate (requests/s)", [0.5, 1, 2, 4, 8, 16], 2, key="sv_live_rate"
)
count = b.slider("Requests", 4, 64, 16, 4, key="sv_live_n")
if st.button("Send", key="sv_send"):
    problem = sp.server_answers(url)
    if problem:
        st.error(
            f"{problem}. Start one with `python -m minirt serve --port 8000`, then press Send."
        )
    else:
        with st.spinner(f"{count} requests at {live_rate} req/s …"):
            live = sp.live_run(url, float(live_rate), count, slo)
        st.dataframe(sp.table({"results": live}), hide_index=True)
