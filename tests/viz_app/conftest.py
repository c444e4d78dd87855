"""Dashboard tests: `vizlib` importable as the pages import it, and pages opened under AppTest.

Streamlit puts the main script's folder (viz_app/) on sys.path while a page runs; the tests put
it there for good so they can import vizlib themselves to compute what a page should show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[2] / "viz_app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


def _open_page(file: str | None = None, timeout: float = 90) -> AppTest:
    """Run Home, then switch to `file` (e.g. "pages/02_Scheduler.py") the way a click would."""
    at = AppTest.from_file(str(APP_DIR / "Home.py"), default_timeout=timeout)
    at.run()
    if file is not None:
        at.switch_page(file).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    """The value a page shows in its st.metric labelled `label`."""
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}; the page shows {[m.label for m in at.metric]}"
    return found[0]


@pytest.fixture
def open_page():
    """`open_page(file)` -> an AppTest that has run the page (the tests' way in)."""
    return _open_page


@pytest.fixture
def metric():
    """`metric(at, label)` -> the value shown in the st.metric with that label."""
    return _metric
