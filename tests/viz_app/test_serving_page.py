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


def _table_cells(at) -> list[str]:
    return [str(v) for df in at.dataframe for v in df.value.to_numpy().ravel()]


def test_the_default_view_is_clean_and_its_tables_hold_no_missing_values(open_page):
    newest()
    at = open_page(PAGE)
    assert not at.exception and not at.warning and not at.error
    cells = _table_cells(at)
    assert cells and not [c for c in cells if c in ("None", "nan", "NaN", "<NA>")]
    assert "Live mode" in [t.label for t in at.toggle]  # offered, and off
    assert not at.text_input  # the live controls appear only when asked for


def test_the_rate_slider_shows_that_rates_percentiles_and_attainment(open_page, metric):
    record = newest()
    at = open_page(PAGE)
    rate = sp.rates(record)[1]
    at.select_slider(key="sv_rate").set_value(rate).run()
    row = sp.at_rate(record, rate)
    assert metric(at, "TTFT p99") == sp.ms(row["ttft_p99_ms"])
    assert metric(at, "TPOT p50") == sp.ms(row["tpot_p50_ms"])
    (within,) = [m.value for m in at.metric if m.label.startswith("Within the run's SLO")]
    assert within == f"{row['slo_attainment']:.0%}"


def test_the_what_if_compares_one_replica_with_the_cluster_chosen(open_page):
    newest()
    at = open_page(PAGE)
    at.select_slider(key="sv_replicas").set_value(4).run()
    assert not at.exception
    assert _what_if_rows(at) == {"1 replica", "4 replicas (least-outstanding)"}
    at.select_slider(key="sv_budget").set_value(512).run()
    assert "4 replicas (least-outstanding), budget 512" in _what_if_rows(at)


def test_prefill_and_decode_apart_are_simulated_with_the_measured_copy(open_page):
    newest()
    at = open_page(PAGE)
    at.toggle(key="sv_disagg").set_value(True).run()
    assert not at.exception
    assert at.number_input(key="sv_gbps").value == pytest.approx(round(sp.transfer_gbps(), 1))
    at.number_input(key="sv_decode").set_value(3).run()
    assert "1P+3D" in _what_if_rows(at)


def test_live_mode_against_a_port_nobody_answers_says_so_once(open_page):
    newest()
    at = open_page(PAGE)
    at.toggle(key="sv_live").set_value(True).run()
    at.text_input(key="sv_url").set_value("http://127.0.0.1:9").run()  # discard port: closed
    at.button(key="sv_send").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "no server answers at http://127.0.0.1:9" in at.error[0].value


def _what_if_rows(at) -> set[str]:
    (df,) = [df.value for df in at.dataframe if "setup" in df.value.columns]
    return set(df["setup"])


def test_live_mode_measures_a_local_server_with_the_load_generator(open_page):
    from minirt import LLM
    from minirt.serve.server import ServerThread

    newest()
    server = ServerThread(LLM(device="cpu"))
    url = server.start()
    try:
        at = open_page(PAGE)
        at.toggle(key="sv_live").set_value(True).run()
        at.text_input(key="sv_url").set_value(url).run()
        at.select_slider(key="sv_live_rate").set_value(8).run()
        at.slider(key="sv_live_n").set_value(4).run()
        at.button(key="sv_send").click().run()
    finally:
        server.stop()
    assert not at.exception and not at.error
    (live,) = [df.value for df in at.dataframe if list(df.value["rate"]) == ["8.0"]]
    assert live["failed"].tolist() == [0] and live["request_throughput"].iloc[0] > 0


def test_the_simulators_error_at_each_rate_below_saturation_is_shown(open_page):
    from minirt.bench.serve import simulator_errors

    record = newest()
    errors = simulator_errors(record["results"])
    if not errors:
        pytest.skip("the newest run has no simulated rows")
    at = open_page(PAGE)
    (table,) = [df.value for df in at.dataframe if "ttft_p50" in df.value.columns]
    assert list(table["rate"]) == [str(e["rate"]) for e in errors]
    first = errors[0]["errors"]["ttft_p50_ms"]
    assert table["ttft_p50"].iloc[0] == f"{first:+.0%}"
