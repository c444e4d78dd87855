"""What-ifs on the committed H100 serve run: its own cost model, its requests, other clusters."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from minirt.results import load_results
from minirt.tools.serving import ClusterModel
from minirt.tools.serving_whatif import (
    QWEN3_KV_BYTES_PER_TOKEN,
    describe,
    fitted_model,
    max_rate_attained,
    staged_copy_gbps,
    what_if,
)
from minirt.tools.slo import Slo

H100 = Path(__file__).resolve().parents[2] / "bench" / "results" / "h100"


def _newest(pattern: str) -> dict:
    runs = sorted(H100.glob(pattern))
    if not runs:
        pytest.skip(f"no bench/results/h100/{pattern} is committed")
    return load_results(runs[-1])


def test_qwen3_kv_is_two_tensors_of_28_layers_8_heads_128_wide_in_bf16():
    assert QWEN3_KV_BYTES_PER_TOKEN == 2 * 28 * 8 * 128 * 2


def test_the_staged_copy_goes_out_then_in_at_the_measured_swap_bandwidths():
    record = _newest("transfers-2*.json")
    swap = {r["direction"]: r["gbps"] for r in record["results"] if r["experiment"] == "swap"}
    gbps = staged_copy_gbps(record)
    assert 1 / gbps == pytest.approx(1 / swap["out"] + 1 / swap["in"])
    assert gbps < min(swap.values())


def test_one_replica_reproduces_the_runs_committed_simulated_rows():
    record = _newest("serve-*[0-9].json")
    committed = [r for r in record["results"] if r["name"] == "simulated"]
    rates = [float(r) for r in record["config"]["rates"]]
    slo = Slo(**record["config"]["slo"])
    rows = what_if(record, ClusterModel(), rates, slo, load_generator=True)
    for ours, theirs in zip(rows, committed, strict=True):
        assert ours["rate"] == theirs["rate"]
        assert ours["ttft_p99_ms"] == pytest.approx(theirs["ttft_p99_ms"])
        assert ours["goodput"] == pytest.approx(theirs["goodput"])
    assert {r["setup"] for r in rows} == {"1 replica"}
    # a what-if predicts the server alone: no load generator's loop, tokens no later
    server = what_if(record, ClusterModel(), rates, slo)
    assert all(a["ttft_p50_ms"] <= b["ttft_p50_ms"] for a, b in zip(server, rows, strict=True))


def test_more_replicas_never_serve_the_runs_requests_within_the_slo_at_a_lower_rate():
    record = _newest("serve-*[0-9].json")
    slo, rates = Slo(500, 50), [8.0, 16.0, 32.0, 64.0]
    reach = [
        max_rate_attained(what_if(record, ClusterModel(replicas=n), rates, slo)) for n in (1, 2)
    ]
    assert reach[0] is not None and reach[1] >= reach[0]


def test_a_run_without_a_cost_model_says_how_to_get_one():
    with pytest.raises(ValueError, match="--resimulate"):
        fitted_model({"command": "bench serve --url x", "results": [{"name": "rate"}]})


def test_setups_are_named_as_the_chapter_names_them():
    assert describe(ClusterModel()) == "1 replica"
    assert describe(ClusterModel(replicas=4, router="least_outstanding")) == (
        "4 replicas (least-outstanding)"
    )
    assert describe(ClusterModel(prefill=1, decode=1, transfer_gbps=math.inf)) == "1P+1D"
