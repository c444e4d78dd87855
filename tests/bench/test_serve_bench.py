"""bench serve: open-loop arrivals, seeded workloads, SLO summaries, and a launched CPU run."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from minirt.results import load_results
from minirt.tools.slo import RequestTiming, Slo, max_rate_meeting, percentile, summarize
from minirt.workload import WorkloadSpec, arrival_times, make_requests


def _gaps(rate: float, burstiness: float) -> list[float]:
    times = arrival_times(4000, rate, burstiness, seed=1)
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_poisson_arrivals_have_gaps_of_mean_one_over_the_rate():
    gaps = _gaps(rate=8.0, burstiness=1.0)
    assert statistics.mean(gaps) == pytest.approx(1 / 8, rel=0.05)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.1)


def test_lower_burstiness_keeps_the_rate_but_bunches_the_arrivals():
    gaps = _gaps(rate=8.0, burstiness=0.25)
    assert statistics.mean(gaps) == pytest.approx(1 / 8, rel=0.1)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(2.0, rel=0.15)


def test_an_infinite_rate_sends_everything_at_once_and_bad_knobs_are_refused():
    assert arrival_times(3, math.inf) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="burstiness"):
        arrival_times(3, 1.0, burstiness=0)
    with pytest.raises(ValueError, match="rate"):
        arrival_times(3, -1.0)


def test_workloads_are_seeded_and_share_the_prefixes_they_are_told_to(tmp_path):
    spec = WorkloadSpec(distribution="sharegpt", shared_prefix_len=20, num_prefixes=2, seed=3)
    a, b = make_requests(spec, 50), make_requests(spec, 50)
    assert a.prompts == b.prompts
    assert len({tuple(p[:20]) for p in a.prompts}) == 2
    fixed = make_requests(WorkloadSpec(distribution="fixed", prompt_len=7, output_len=5), 4)
    assert set(zip(fixed.prompt_lens, fixed.output_lens, strict=True)) == {(7, 5)}
    path = tmp_path / "w.jsonl"
    path.write_text('{"prompt_len": 3, "output_len": 2}\n{"prompt_len": 9, "output_len": 4}\n')
    from_file = make_requests(WorkloadSpec(file=str(path)), 3)
    assert list(zip(from_file.prompt_lens, from_file.output_lens, strict=True)) == [
        (3, 2),
        (9, 4),
        (3, 2),
    ]
    with pytest.raises(ValueError, match="pick one of"):
        make_requests(WorkloadSpec(distribution="zipf"), 1)


def test_goodput_counts_only_requests_that_meet_both_objectives():
    fast = RequestTiming(0.0, ttft_s=0.1, e2e_s=0.1 + 9 * 0.02, output_tokens=10, itl_s=[0.02] * 9)
    slow_start = RequestTiming(0.0, ttft_s=0.9, e2e_s=1.0, output_tokens=10, itl_s=[])
    slow_decode = RequestTiming(0.0, ttft_s=0.1, e2e_s=0.1 + 9 * 0.1, output_tokens=10, itl_s=[])
    slo = Slo(ttft_ms=500, tpot_ms=50)
    row = summarize([fast, slow_start, slow_decode], num_failed=1, duration_s=2.0, slo=slo)
    assert row["request_throughput"] == 1.5 and row["goodput"] == 0.5
    assert row["slo_attainment"] == 0.25  # a failed request misses the objective too
    assert row["tpot_p50_ms"] == pytest.approx(20.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_the_max_rate_is_the_highest_one_whose_p99_meets_the_slo():
    slo = Slo(ttft_ms=500, tpot_ms=50)
    rows = [
        {"rate": 1.0, "failed": 0, "ttft_p99_ms": 100, "tpot_p99_ms": 20},
        {"rate": 4.0, "failed": 0, "ttft_p99_ms": 400, "tpot_p99_ms": 45},
        {"rate": 8.0, "failed": 0, "ttft_p99_ms": 900, "tpot_p99_ms": 45},
        {"rate": "inf", "failed": 0, "ttft_p99_ms": 3000, "tpot_p99_ms": 60},
    ]
    assert max_rate_meeting(rows, slo) == 4.0


def test_a_launched_cpu_run_writes_every_rate_and_the_offline_comparison(tmp_path, capsys):
    from minirt.bench.__main__ import main

    lengths = ["--distribution", "fixed", "--input-len", "16", "--output-len", "4"]
    launch = ["--launch", "embedded", "--device", "cpu", "--threads", "1"]
    argv = ["serve", *launch, "--rates", "50,inf", "--num-prompts", "4", *lengths]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    (path,) = (tmp_path / "cpu").glob("serve-*.json")
    record = load_results(path)
    rates = [r for r in record["results"] if r["name"] == "rate"]
    assert [r["rate"] for r in rates] == [50.0, "inf"]
    assert all(r["completed"] == 4 and r["failed"] == 0 for r in rates)
    assert all(r["output_throughput"] == pytest.approx(16 / r["duration_s"]) for r in rates)
    (offline,) = [r for r in record["results"] if r["name"] == "offline"]
    assert offline["http_efficiency"] > 0
    assert path.with_suffix(".png").stat().st_size > 0
    assert json.loads(path.read_text())["config"]["slo"] == {"ttft_ms": 500.0, "tpot_ms": 50.0}
    assert "max rate with p99 TTFT <= 500 ms" in capsys.readouterr().out
    # the server's step log sits beside the results, and the simulator was fitted to it
    assert path.with_name(path.stem + "-steps.json.gz").is_file()
    (cost,) = [r for r in record["results"] if r["name"] == "cost_model"]
    assert cost["fitted_on"] == "server steps" and cost["calibration_rates"] == ["50.0", "inf"]
    assert all(rate["server_num_steps"] > 0 for rate in rates)
    # the client's own timings of the intake: headers before the first token, sends on time
    assert all(0 < r["headers_p50_ms"] <= r["ttft_p50_ms"] for r in rates)
    assert all(r["late_p99_ms"] is not None for r in rates)  # how late the client sent
    assert not any("headers_p50_ms" in r for r in record["results"] if r["name"] == "simulated")
    # one clock (the server runs on this machine): every step of a rate starts within its sweep
    # (a step's end is stamped after its tokens went out, so the client may have them first)
    import gzip

    logs = json.loads(gzip.open(path.with_name(path.stem + "-steps.json.gz"), "rt").read())
    for r in rates:
        steps, offset = logs["by_rate"][str(r["rate"])], r["server_clock_offset_s"]
        assert 0 < steps[0][0] - steps[0][1] / 1e3 + offset
        assert steps[-1][0] - steps[-1][1] / 1e3 + offset < r["duration_s"]
        sends = logs["sends_by_rate"][str(r["rate"])]  # when each request really went out
        assert len(sends) == 4 and all(0 <= t < r["duration_s"] for t in sends)
        assert "client_sends_s" not in r  # in the log's file, not the results


def test_a_committed_run_is_resimulated_from_its_step_log(tmp_path):
    """--resimulate: the simulated rows again, from the step log; the measured ones untouched."""
    import shutil
    from pathlib import Path

    from minirt.bench.__main__ import main

    run = Path("bench/results/h100/serve-20261205-142436.json")
    for f in (run, run.with_name(run.stem + "-steps.json.gz")):
        shutil.copy(f, tmp_path / f.name)
    copy = tmp_path / run.name
    before = load_results(copy)
    for r in before["results"]:
        if r["name"] == "simulated":
            r["ttft_p50_ms"] = -1.0  # planted: a resimulation must overwrite it
    copy.write_text(json.dumps(before))
    assert main(["serve", "--resimulate", str(copy)]) == 0
    after = load_results(copy)
    measured = [r for r in after["results"] if r["name"] == "rate"]
    assert measured == [r for r in before["results"] if r["name"] == "rate"]
    sims = [r for r in after["results"] if r["name"] == "simulated"]
    assert [s["rate"] for s in sims] == [m["rate"] for m in measured]
    assert all(s["ttft_p50_ms"] > 0 and s["completed"] == 300 for s in sims)
    assert "resimulated" in after["config"]


def test_the_qwen3_shape_without_a_gpu_is_refused_with_what_to_use_instead(tmp_path):
    import torch

    from minirt.bench.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the shape would be built")
    with pytest.raises(ValueError, match="--launch embedded"):
        main(["serve", "--launch", "qwen3-0.6b-shape", "--out", str(tmp_path)])
