"""The Serving page shows a committed `bench serve` run; its knee follows the SLO sliders."""

from __future__ import annotations

import pytest

from minirt.results import load_results
from minirt.tools.slo import Slo, max_rate_meeting
from vizlib import serve_page as sp

PAGE = "pages/11_Serving.py"


def newest() -> dict:
    runs = sp.discover()
    if not runs:
        pytest.skip("no bench/results/*/serve-*.json is committed")
    return load_results(runs[0])


def _metric(at, label: str) -> str:
    (m,) = [m for m in at.metric if m.label == label]
    return m.value


def test_the_page_shows_the_newest_run_and_its_knee_under_the_run_slo(open_page):
    record = newest()
    at = open_page(PAGE)
    measured = [r for r in record["results"] if r["name"] == "rate"]
    knee = max_rate_meeting(measured, Slo(**record["config"]["slo"]))
    shown = _metric(at, "Highest offered rate meeting the SLO at p99")
    assert shown == ("none" if knee is None else str(knee))
    assert len(at.dataframe[0].value) == len(measured)


def test_a_looser_slo_moves_the_knee_to_the_highest_rate_measured(open_page):
    record = newest()
    at = open_page(PAGE)
    at.slider(key="sv_ttft").set_value(10_000)
    at.slider(key="sv_tpot").set_value(1_000).run()
    assert not at.exception
    measured = [r for r in record["results"] if r["name"] == "rate"]
    expected = max_rate_meeting(measured, Slo(10_000, 1_000))
    shown = _metric(at, "Highest offered rate meeting the SLO at p99")
    assert shown == ("none" if expected is None else str(expected))
