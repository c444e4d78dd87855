"""Streams: copies, kernels and the host thread on a timeline — measured on an H100, simulated.

Data: the committed `python -m minirt.bench transfers` runs (`bench/results/<device>/
transfers-*.json` and their `transfers-trace-*.json`) beside `minirt.tools.streams.simulate` of the
same programs under the hardware fitted to that run; or the simulator on a program built from the
sidebar's toggles (`vizlib.streams_page.live_program`); or an uploaded trace with 'interval'
events. Notebook 06 (pinned memory and streams).
"""

import dataclasses
import json

import streamlit as st

from minirt.tools.streams import Hardware, simulate
from minirt.trace import TraceError
from vizlib import streams_page as sp
from vizlib.registry import FAVICON, page_for
from vizlib.source import parse_trace

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "What the host thread issues and when each part of the machine does it: one row per CUDA "
    "stream (`compute` is the default stream) and one for the **cpu**. Copies need a copy "
    "engine, kernels the SMs; work on one stream runs in order, across streams only what an "
    "event orders. **Pageable** memory holds the CPU for the whole copy, whatever "
    "`non_blocking` says; **pinned** + `non_blocking=True` gives the thread back at once."
)

MEASURED, LIVE, UPLOAD = "H100 measured", "Live simulator", "Upload a trace"


@st.cache_data(max_entries=4, show_spinner=False)
def load_set(path: str) -> sp.LoadedSet:
    """A committed run, read and matched once (a toggle must not re-validate its trace)."""
    (found,) = [s for s in sp.discover() if str(s.path) == path]
    return sp.load_set(found)


def show_metrics(summary: sp.Summary, extra: tuple[str, str, str] | None = None) -> None:
    values = sp.metric_values(summary)
    cols = st.columns(len(values) + (extra is not None))
    helps = {
        "Total (ms)": "from the first call to the last sync or the last GPU work",
        "Copy bandwidth (GB/s)": f"{summary.copy_bytes:,} bytes / {summary.copy_ms:,.3f} ms "
        "of copy-engine time",
        "Overlap": f"{summary.overlap_ms:,.3f} ms of copy ∥ kernel / min(copy "
        f"{summary.copy_ms:,.3f} ms, kernels {summary.compute_ms:,.3f} ms)",
        "CPU blocked (ms)": f"the host thread held inside CUDA calls: "
        f"{summary.cpu_held_by_calls_ms:,.3f} ms in copy calls, the rest in synchronize",
    }
    for col, (label, value) in zip(cols, values.items(), strict=False):
        col.metric(label, value, help=helps[label])
    if extra is not None:
        cols[-1].metric(extra[0], extra[1], help=extra[2])


def show_races(timeline, where: str) -> None:
    if timeline.races:
        st.warning(
            f"**Data races** in {where} (a read not ordered after the write it needs):\n"
            + "\n".join(f"- {race}" for race in timeline.races)
        )


def draw(timeline, lanes=None, x_max=None) -> None:
    st.altair_chart(sp.gantt_chart(timeline, lanes, x_max), width="stretch")


sb = st.sidebar
source = sb.radio("Data", [MEASURED, LIVE, UPLOAD], key="streams_source")
sets = sp.discover()

# ---------------------------------------------------------------- H100 measured
if source == MEASURED:
    if not sets:
        st.info(
            "No transfers run is committed under `bench/results/` yet: run `python -m "
            "minirt.bench transfers` on a GPU and commit both JSON files it writes, or switch "
            "to **Live simulator** in the sidebar."
        )
        st.stop()
    by_path = {str(s.path): s for s in sets}
    chosen = sb.selectbox(
        "Run", list(by_path), format_func=lambda p: by_path[p].label, key="streams_set"
    )
    name = f"bench/results/{by_path[chosen].device}/{by_path[chosen].path.name}"
    try:
        loaded = load_set(chosen)
    except sp.StreamsError as e:
        st.error(f"Can't draw {name}: {e}. Pick another run, or re-run the benchmark.")
        st.stop()
    experiments = loaded.experiments()
    experiment = sb.selectbox(
        "Experiment",
        experiments,
        index=experiments.index("overlap") if "overlap" in experiments else 0,
        format_func=lambda e: sp.EXPERIMENTS.get(e, e),
        key=f"streams_experiment_{chosen}",
    )
    programs = loaded.of(experiment)
    labels = [p.label for p in programs]
    default = labels.index(sp.DEFAULT_PROGRAM) if sp.DEFAULT_PROGRAM in labels else 0
    i = sb.selectbox(
        "Program",
        range(len(programs)),
        index=default,
        format_func=lambda k: labels[k],
        key=f"streams_program_{chosen}_{experiment}",
    )
    chosen_program = programs[i]
    record = loaded.measurements.record
    hw = loaded.measurements.hardware
    measured = chosen_program.measured
    predicted = simulate(chosen_program.program, hw)
    m, p = sp.summarize(measured), sp.summarize(predicted)
    error = sp.total_error(measured, predicted)

    st.markdown(
        f"**{name}** on `{(record.get('config') or {}).get('gpu', record.get('device', '?'))}`, "
        f"{record.get('date', '?')} — program **{chosen_program.program.name}**  \n"
        f"`{record.get('command', '?')}`"
    )
    show_metrics(
        m,
        (
            "Simulator error (total)",
            "—" if error is None else f"{error:+.1%}",
            f"simulated {predicted.total_ms:,.3f} ms vs measured {measured.total_ms:,.3f} ms",
        ),
    )
    lanes = sp.lane_order(measured, predicted)
    x_max = max(measured.total_ms, predicted.total_ms)
    st.subheader("Measured on the H100")
    draw(measured, lanes, x_max)
    for stale in chosen_program.row.get("stale") or []:
        st.warning(f"The H100 run read stale data: {stale}")
    st.subheader("Simulated (minirt.tools.streams, fitted to this run)")
    draw(predicted, lanes, x_max)
    show_races(predicted, "this program")
    st.caption(
        "The same `Program` on both charts: the measured one timed with CUDA events on each "
        "stream and the host clock for each call; the simulated one played on the hardware "
        "model fitted to this run's calibration rows (pinned and pageable steady-state "
        "bandwidth, the smallest copy's latency, the 4 MiB ramp, one matmul's rate). The "
        "measured timeline records how long each *copy call* held the CPU; a kernel launch "
        "(microseconds) is not drawn there."
    )
    st.dataframe(
        sp.comparison_frame(m, p),
        hide_index=True,
        key="streams_compare",
    )
    with st.expander("Each GPU operation: measured vs simulated"):
        st.dataframe(sp.op_fit(measured, predicted), hide_index=True, key="streams_fit")
    with st.expander("The program (what the host thread issues)"):
        st.dataframe(sp.program_table(chosen_program.program), hide_index=True, key="streams_ops")
    with st.expander("The fitted hardware model"):
        st.json(hw.to_dict())

# ---------------------------------------------------------------- live simulator
elif source == LIVE:
    base = load_set(str(sets[0].path)) if sets else None
    hw0 = base.measurements.hardware if base is not None else Hardware()
    direction = sb.radio("Direction", ["h2d", "d2h"], key="streams_direction", horizontal=True)
    pinned = sb.toggle("Pinned host memory", True, key="streams_pinned",
                       help="off: pageable (a plain torch.empty on the CPU)")  # fmt: skip
    non_blocking = sb.toggle("non_blocking=True", True, key="streams_non_blocking")
    two_streams = sb.toggle(
        "Copy on its own stream", True, key="streams_two",
        help="off: everything on the default stream (one stream)",
    )  # fmt: skip
    wait_event = sb.toggle(
        "Wait on the copy's event",
        True,
        key="streams_event",
        disabled=not two_streams,
        help="h2d: the kernel that uses the data waits (wait_event) on an event recorded after "
        "the copy; d2h: the copy waits on an event recorded after the kernel that writes it.",
    )
    sizes = [1 / 16, 1 / 4, 1, 4, 16, 64, 256, 1024]
    mib = sb.select_slider(
        "Copy size (MiB)", sizes, 256, key="streams_mib", format_func=lambda v: f"{v:g}"
    )
    matmuls = sb.slider(
        "Compute (4096³ bf16 matmuls)", 0, 100, sp.default_matmuls(base), key="streams_matmuls"
    )
    host_ms = sb.slider("CPU work meanwhile (ms)", 0.0, 20.0, 0.2, 0.1, key="streams_host_ms")
    pcie_field, staging_field = f"{direction}_gbps", f"staging_{direction}_gbps"
    pcie = sb.slider(
        f"PCIe, pinned {direction} (GB/s)", 1.0, 128.0,
        round(getattr(hw0, pcie_field), 1), 0.1, key=f"streams_pcie_{direction}",
    )  # fmt: skip
    staging = sb.slider(
        f"Staging, pageable {direction} (GB/s)", 0.5, 64.0,
        round(getattr(hw0, staging_field), 1), 0.1, key=f"streams_staging_{direction}",
    )  # fmt: skip
    sb.caption(
        "Sliders start at the values fitted to the newest committed H100 run"
        if base is not None
        else "No H100 run is committed: sliders start at the simulator's built-in defaults"
    )
    hw = dataclasses.replace(hw0, **{pcie_field: pcie, staging_field: staging})
    program = sp.live_program(
        direction, int(mib * sp.MiB), matmuls, pinned, non_blocking, two_streams,
        wait_event and two_streams, host_ms,
    )  # fmt: skip
    timeline = simulate(program, hw)
    summary = sp.summarize(timeline)
    st.markdown(f"Simulated: **{program.name}**")
    show_metrics(summary)
    draw(timeline)
    show_races(timeline, "this program")
    st.caption(
        "h2d: prefetch the next layer's weights (`load next`) while `compute` runs, then "
        "`use next` reads them. d2h: `offload` a result that `produce` wrote while `compute` "
        "runs on. Try pageable memory (the copy call holds the CPU, so nothing after it is even "
        "issued), one stream (copy and compute in series), and two streams without the event "
        "(fast, and wrong)."
    )
    with st.expander("The program (what the host thread issues)"):
        st.dataframe(sp.program_table(program), hide_index=True, key="streams_ops")
    with st.expander("The hardware model"):
        st.json(hw.to_dict())
    sb.download_button(
        "Download this timeline as a trace",
        data=json.dumps(sp.trace_document(timeline, {"simulated": program.name,
                                                    "hardware": hw.to_dict()})),
        file_name="streams-trace.json",
        mime="application/json",
        key="streams_download",
    )  # fmt: skip

# ---------------------------------------------------------------- upload
else:
    uploaded = sb.file_uploader("A minirt trace (.json)", type=["json"], key="streams_upload")
    sb.caption(
        "Timelines are traces of 'interval' events: `python -m minirt.bench transfers` writes "
        "`transfers-trace-<date>.json`; the live simulator's download button writes one too."
    )
    if uploaded is None:
        st.info("Upload a trace in the sidebar, or switch to **H100 measured**.")
        st.stop()
    try:
        trace = parse_trace(uploaded.getvalue(), uploaded.name)
    except TraceError as e:
        st.error(f"Can't read {uploaded.name}: {e}")
        st.stop()
    runs = sp.runs_from_events(trace.events)
    if not runs:
        kinds = sorted({e["type"] for e in trace.events}) or ["none"]
        st.warning(
            f"{uploaded.name} is a valid minirt trace but has no 'interval' events (it has: "
            f"{', '.join(kinds)}), so there is no stream timeline to draw. An engine run's "
            "trace belongs on the Block tables or Scheduler page; a timeline comes from "
            "`python -m minirt.bench transfers` or this page's live simulator."
        )
        st.stop()
    k = sb.selectbox(
        "Run", range(len(runs)), format_func=lambda j: runs[j].label, key="streams_run"
    )
    timeline = runs[k].timeline
    st.markdown(f"**{uploaded.name}** — run **{runs[k].label}** ({len(runs)} in the file)")
    show_metrics(sp.summarize(timeline))
    draw(timeline)
    st.caption(
        "A trace holds the timeline, not the program, so races can't be checked here: open the "
        "same program in **H100 measured** or the **Live simulator** for that."
    )
