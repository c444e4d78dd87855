"""Two runs of the engine on the same requests, yours and minirt's: where to find them, and a demo.

A pair is saved by `minirt.trace.compare.record_pair(..., name=NAME)` as `NAME-yours.json` and
`NAME-minirt.json` in a `runs/` folder; the page lists the pairs there, newest first. The demo
pair puts a policy with a planted bug (it sorts by cached prefix the wrong way round) beside
minirt's LPM, so the page shows a difference on first open. Notebooks 02 and 11 teach the policies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from minirt.trace import Trace
from minirt.trace.compare import PARTS, record_pair
from vizlib.registry import APP_DIR
from vizlib.runs import RunSettings, torch_threads

ROOT = APP_DIR.parent
# Where record_pair's default folder lands: beside a lab or a chapter, or at the top of the repo.
RUN_FOLDERS = (ROOT / "runs", ROOT / "labs" / "runs", ROOT / "notebooks" / "runs")
YOURS, MINIRT = "-yours.json", "-minirt.json"
SAME = "same"  # the table's word for a step where both runs decided alike

# Two shared headers and two loners, two seats, a pool of 20 blocks of 8: which waiting request
# goes first decides what is still cached when it runs.
HEADER_A = "# utilities for working with files\nimport os\n\n"
HEADER_B = "class Config:\n    def __init__(self):\n        self."
DEMO_PROMPTS = (
    HEADER_A + "def read(p):",
    HEADER_B + "name = ''",
    "def fib(n):",
    HEADER_A + "def main():",
    HEADER_B + "size = 0",
    "for i in range(10):",
    HEADER_A + "def write(p):",
    HEADER_B + "path = None",
)
DEMO = RunSettings(
    prompts=DEMO_PROMPTS,
    max_tokens=8,
    num_kv_blocks=20,
    max_num_batched_tokens=64,
    max_model_len=128,
    extra={"max_num_seqs": 2, "schedule_policy": "lpm"},
)


def least_cached_first(waiting: list, cache) -> list:
    """A learner's LPM with the sign flipped: the shortest cached prefix goes first."""
    return sorted(waiting, key=lambda s: cache.match_len(s.token_ids))


@st.cache_data(show_spinner="Running the embedded engine twice…")
def demo_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo's two traces as dicts (cacheable): `least_cached_first` against minirt's LPM."""
    part = {"schedule_policy": least_cached_first}
    with torch_threads(1):  # tiny matrices: more threads only contend (see vizlib.runs)
        yours, minirt = record_pair(
            list(DEMO.prompts), DEMO.sampling_params(), part, **DEMO.engine_kwargs()
        )
    return yours.to_dict(), minirt.to_dict()


def saved_pairs(folders: tuple[Path, ...] | None = None) -> dict[str, tuple[Path, Path]]:
    """Pairs saved by record_pair, "folder/name" -> (yours, minirt) files, newest first
    (`folders`: RUN_FOLDERS unless given)."""
    found = []
    for folder in RUN_FOLDERS if folders is None else folders:
        for yours in folder.glob(f"*{YOURS}"):
            minirt = yours.with_name(yours.name.removesuffix(YOURS) + MINIRT)
            if minirt.is_file():
                newest = max(yours.stat().st_mtime, minirt.stat().st_mtime)
                label = f"{_shown(folder)}/{yours.name.removesuffix(YOURS)}"
                found.append((newest, label, (yours, minirt)))
    return {label: files for _, label, files in sorted(found, reverse=True)}


def _shown(folder: Path) -> str:
    """A folder as the learner knows it: from the top of the workbench when it is inside."""
    return str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)


def parts_used(trace: Trace, other: Trace) -> str:
    """The named parts where two runs' settings differ, as "schedule_policy=lpm"."""
    mine = trace.meta.get("engine_config", {})
    theirs = other.meta.get("engine_config", {})
    differ = [p for p in PARTS if mine.get(p) != theirs.get(p)]
    return ", ".join(f"{p}={mine.get(p)}" for p in differ) or "the same parts"


def num_preemptions(trace: Trace) -> int:
    return sum(len(e["preempted"]) for e in trace.steps())


def summary_frame(rows: list[dict[str, Any]], only_differing: bool = False) -> pd.DataFrame:
    """step_summary's rows as a table ("same" where nothing differs); counts are nullable ints
    (blank once a run has ended)."""
    frame = pd.DataFrame(rows).set_index("step")
    for col in ("yours hits", "yours free", "minirt hits", "minirt free"):
        frame[col] = frame[col].astype("Int64")
    if only_differing:
        frame = frame[frame["differs"] != ""]
    return frame.assign(differs=frame["differs"].replace("", SAME))
