"""Where a page's trace comes from: a live run with the page's knobs, or an uploaded file.

Both paths end in `minirt.trace.load_trace`, so a page draws one validated `Trace` either way. A
file that is not a valid trace (not JSON, another format, another version, a malformed event)
stops the page with `TraceError`'s own message — never a traceback.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import streamlit as st

from minirt.trace import Trace, TraceError, load_trace
from vizlib.runs import RunSettings, run_engine

LIVE, UPLOAD = "Live run", "Upload a trace"


@st.cache_data(max_entries=8, show_spinner=False)
def parse_trace(data: bytes, name: str) -> Trace:
    """Validate an uploaded file (cached: a slider move must not re-validate it)."""
    f = io.BytesIO(data)
    f.name = name  # load_trace names the file in its messages
    return load_trace(f)


def read_trace(data: bytes, name: str) -> Trace:
    """A trace file's bytes (uploaded or read from disk) as a Trace, or the page stops with
    TraceError's own words, naming the file (never a traceback)."""
    try:
        return parse_trace(data, name)
    except TraceError as e:
        st.error(f"Can't read {name}: {e}")
        st.stop()


def choose_trace(key: str, live_settings: Callable[[], RunSettings]) -> tuple[Trace, dict | None]:
    """Sidebar radio + either the page's live-run knobs or an uploader; returns (trace, run).

    `run` is `run_engine`'s result for a live run (stats, outputs) and None for an upload.
    Stops the page with st.error when the engine refuses the settings or the file is bad.
    """
    source = st.sidebar.radio("Data", [LIVE, UPLOAD], key=f"{key}_source", horizontal=True)
    if source == UPLOAD:
        uploaded = st.sidebar.file_uploader(
            "A minirt trace (.json)", type=["json"], key=f"{key}_upload"
        )
        st.sidebar.caption("Record one with `python -m minirt generate … --trace run.json`.")
        if uploaded is None:
            st.info("Upload a trace in the sidebar, or switch to **Live run**.")
            st.stop()
        return read_trace(uploaded.getvalue(), uploaded.name), None

    settings = live_settings()
    if not settings.prompts:
        st.warning("Type at least one prompt.")
        st.stop()
    try:
        run = run_engine(settings)
    except ValueError as e:  # the engine's own words: what is wrong and what to change
        st.error(f"The engine refused these settings: {e}")
        st.stop()
    st.sidebar.download_button(
        "Download this run's trace",
        data=json.dumps(run["trace"]),
        file_name="minirt-trace.json",
        mime="application/json",
        key=f"{key}_download",
    )
    return load_trace(run["trace"]), run


def engine_setting(trace: Trace, name: str, default: Any = None) -> Any:
    """A knob the traced engine ran with (meta.engine_config), or `default` if not recorded."""
    return trace.meta.get("engine_config", {}).get(name, default)
