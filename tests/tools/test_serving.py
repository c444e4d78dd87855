"""The serving simulator: a fitted cost model, and the scheduler model's timings by hand."""

from __future__ import annotations

import math
import random

import pytest

from minirt.tools.serving import (
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
