"""The serving simulator: a fitted cost model, and the scheduler model's timings by hand."""

from __future__ import annotations

import math
import random

import pytest

from minirt.tools.serving import (
    ClusterModel,
    CostModel,
    SchedulerModel,
    SimRequest,
    fit_cost_model,
    measured_steps,
    predict_curve,
    simulate,
)
from minirt.tools.slo import Slo

COST = CostModel(base_ms=10.0, prefill_ms=0.5, decode_ms=1.0, context_ms=0.0)


def test_the_fit_recovers_the_coefficients_of_noiseless_steps():
    rng = random.Random(0)
    truth = CostModel(base_ms=2.0, prefill_ms=0.05, decode_ms=0.3, context_ms=0.001, eager_ms=3.0)
    steps = []
    for _ in range(40):
        p = rng.choice([0, rng.randrange(1, 500)])  # decode-only steps and eager ones
        d, c = rng.randrange(0, 64), rng.randrange(0, 20000)
        row = {"prefill_tokens": p, "decodes": d, "context_tokens": c}
        steps.append(row | {"step_ms": truth.step_ms(p, d, c)})
    fit = fit_cost_model(steps)
    for name, value in truth.to_dict().items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-6)


def test_a_lone_request_waits_one_prefill_step_then_one_decode_step_per_token():
    (t,) = simulate([SimRequest(1.0, prompt_len=20, output_len=5)], COST, SchedulerModel())
    assert t.ttft_s == pytest.approx((10 + 0.5 * 20) / 1e3)
    assert t.tpot_s == pytest.approx((10 + 1.0) / 1e3)
    assert t.itl_s == pytest.approx([0.011] * 4)


def test_a_prompt_over_the_token_budget_takes_several_chunks():
    sched = SchedulerModel(max_num_batched_tokens=8)
    (t,) = simulate([SimRequest(0.0, prompt_len=20, output_len=1)], COST, sched)
    assert t.ttft_s == pytest.approx((3 * 10 + 0.5 * 20) / 1e3)  # chunks of 8, 8, 4


def test_a_request_that_does_not_fit_the_pool_waits_for_one_that_finishes():
    sched = SchedulerModel(kv_capacity_tokens=30)
    a, b = simulate([SimRequest(0.0, 20, 5), SimRequest(0.0, 20, 5)], COST, sched)
    assert b.ttft_s > a.e2e_s  # admitted only after a freed its 25 tokens


def test_latency_grows_with_the_offered_rate_and_goodput_never_beats_throughput():
    lengths = [(32, 16)] * 60
    arrivals = {}
    for rate in (5.0, 20.0, 80.0, math.inf):
        gap = 0.0 if math.isinf(rate) else 1 / rate
        arrivals[rate] = [i * gap for i in range(60)]
    rows = predict_curve(lengths, arrivals, COST, SchedulerModel(), Slo(ttft_ms=100, tpot_ms=30))
    p99 = [r["ttft_p99_ms"] for r in rows]
    assert p99 == sorted(p99)
    assert all(r["goodput"] <= r["request_throughput"] + 1e-12 for r in rows)
    assert rows[-1]["rate"] == "inf" and rows[-1]["completed"] == 60


def test_the_cost_model_can_be_fitted_to_the_embedded_engine_on_cpu():
    from minirt import LLM

    llm = LLM(device="cpu", trace=True)
    steps = measured_steps(llm, [(24, 4)] * 4, batch_sizes=(1, 4))
    assert len(steps) >= 4 and any(s["prefill_tokens"] for s in steps)
    fit = fit_cost_model(steps)
    assert all(v >= 0 for v in fit.to_dict().values())


def test_a_cost_that_fits_negative_is_dropped_and_the_rest_refitted():
    steps = [
        {"prefill_tokens": 0, "decodes": d, "context_tokens": 100 * d, "step_ms": 5.0 + 0.5 * d}
        for d in range(1, 9)
    ]
    steps[0]["step_ms"] += 3.0  # noise: makes the fitted per-decode cost negative on its own
    fit = fit_cost_model(steps + [dict(steps[0], prefill_tokens=10, step_ms=13.0)])
    assert min(fit.to_dict().values()) >= 0.0


# What-ifs: replicas behind a router, the token budget, prefill/decode disaggregation.

ONE_AT_A_TIME = SchedulerModel(max_num_seqs=1)


def _burst(n: int, prompt_len: int = 20, output_len: int = 1) -> list[SimRequest]:
    return [SimRequest(0.0, prompt_len, output_len) for _ in range(n)]


def test_two_replicas_halve_the_queue_of_a_burst():
    # each request is one 20 ms prefill step; one at a time per engine
    one = simulate(_burst(4), COST, ONE_AT_A_TIME)
    two = simulate(_burst(4), COST, ONE_AT_A_TIME, ClusterModel(replicas=2))
    assert sorted(t.ttft_s for t in one) == pytest.approx([0.02, 0.04, 0.06, 0.08])
    assert sorted(t.ttft_s for t in two) == pytest.approx([0.02, 0.02, 0.04, 0.04])


def test_least_outstanding_sends_a_request_to_the_idle_replica_where_round_robin_does_not():
    # replica 0 decodes a long request (20 + 49 x 11 = 559 ms); replica 1 is idle by t = 0.1
    reqs = [SimRequest(0.0, 20, 50), SimRequest(0.0, 20, 1), SimRequest(0.1, 20, 1)]
    rr = simulate(reqs, COST, ONE_AT_A_TIME, ClusterModel(replicas=2))
    lor = simulate(reqs, COST, ONE_AT_A_TIME, ClusterModel(replicas=2, router="least_outstanding"))
    assert lor[2].ttft_s == pytest.approx(0.020)
    assert rr[2].ttft_s == pytest.approx(0.559 + 0.020 - 0.1)  # waits behind the long one


def test_one_replica_through_the_cluster_is_the_single_engine():
    reqs = [SimRequest(0.01 * i, 10 + 7 * i, 3 + i % 5) for i in range(20)]
    plain = simulate(reqs, COST, SchedulerModel(max_num_batched_tokens=32))
    routed = simulate(
        reqs,
        COST,
        SchedulerModel(max_num_batched_tokens=32),
        ClusterModel(router="least_outstanding"),
    )
    assert [(t.ttft_s, t.e2e_s) for t in plain] == [(t.ttft_s, t.e2e_s) for t in routed]


def test_a_smaller_token_budget_shortens_the_stall_a_long_prompt_puts_on_decodes():
    # A decodes; B's 40-token prompt arrives: in one step (10 + 20 + 1 ms) or in chunks of 8
    reqs = [SimRequest(0.0, 4, 10), SimRequest(0.03, 40, 1)]
    whole = simulate(reqs, COST, SchedulerModel(max_num_batched_tokens=2048))
    chunked = simulate(reqs, COST, SchedulerModel(max_num_batched_tokens=9))
    assert max(whole[0].itl_s) == pytest.approx(0.031)
    assert max(chunked[0].itl_s) == pytest.approx(0.015)  # 10 + 0.5 x 8 + 1
    assert chunked[1].ttft_s > whole[1].ttft_s  # what B pays for it


def test_disaggregated_ttft_is_prefill_plus_exactly_bytes_over_bandwidth():
    req = [SimRequest(0.0, prompt_len=20, output_len=5)]
    free = ClusterModel(prefill=1, decode=1)
    priced = ClusterModel(prefill=1, decode=1, kv_bytes_per_token=1000, transfer_gbps=0.5)
    (a,), (b,) = (
        simulate(req, COST, SchedulerModel(), free),
        simulate(req, COST, SchedulerModel(), priced),
    )
    assert a.ttft_s == pytest.approx((10 + 0.5 * 20) / 1e3)
    assert b.ttft_s - a.ttft_s == pytest.approx(20 * 1000 / 0.5e9)
    assert b.itl_s == pytest.approx([0.011] * 4)  # decode steps on the decode engine


def test_disaggregation_removes_the_tpot_spike_a_prefill_causes():
    # A decodes while B's 200-token prompt arrives: colocated, A waits one 10 + 100 + 1 ms step
    reqs = [SimRequest(0.0, 4, 20), SimRequest(0.05, 200, 2)]
    colocated = simulate(reqs, COST, SchedulerModel())
    split = simulate(reqs, COST, SchedulerModel(), ClusterModel(prefill=1, decode=1))
    assert max(colocated[0].itl_s) == pytest.approx(0.111)
    assert max(split[0].itl_s) <= 0.012 + 1e-12  # at most A and B decoding together


def test_a_request_larger_than_the_pool_is_refused_with_the_numbers():
    with pytest.raises(ValueError, match="needs 25 KV tokens"):
        simulate([SimRequest(0.0, 20, 5)], COST, SchedulerModel(kv_capacity_tokens=24))


def test_a_disaggregated_cluster_needs_both_kinds_of_engine():
    with pytest.raises(ValueError, match="both prefill"):
        ClusterModel(prefill=1)
    with pytest.raises(ValueError, match="unknown router"):
        ClusterModel(router="random")
