"""The speculative-decoding cost model against simulation, the paper's formula and hand sums."""

import json
import math
import random
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirt.config import PRESETS
from minirt.tools.roofline import H100_SXM, decode_step, matmul_params
from minirt.tools.spec import (
    DEFAULT_BATCHES,
    CostCurve,
    acceptance_rate,
    alpha_from_acceptance_rate,
    best_k,
    break_even_batch,
    end_to_end_speedups,
    expected_tokens,
    host_overhead,
    padded_rows,
    predict,
    speedup,
    speedup_constant_cost,
    step_time_ms,
)

# A real pair: Qwen3-0.6B drafting for Qwen3-8B (same tokenizer), on datasheet H100 numbers.
TARGET = CostCurve.roofline(PRESETS["qwen3-8b"])
DRAFT = CostCurve.roofline(PRESETS["qwen3-0.6b"])

alphas = st.floats(0.0, 1.0)
ks = st.integers(0, 8)
grid_batches = st.sampled_from(DEFAULT_BATCHES)


@given(alphas, st.integers(0, 32))
def test_expected_tokens_lies_between_one_and_k_plus_one(alpha, k):
    assert 1.0 <= expected_tokens(alpha, k) <= k + 1


@given(alphas, alphas, st.integers(0, 32))
def test_expected_tokens_grows_with_alpha_and_with_k(a, b, k):
    lo, hi = min(a, b), max(a, b)
    assert expected_tokens(lo, k) <= expected_tokens(hi, k) + 1e-12
    assert expected_tokens(a, k) <= expected_tokens(a, k + 1)


@given(st.floats(0.0, 0.99), ks)
def test_expected_tokens_is_the_closed_form_below_alpha_1(alpha, k):
    closed = (1 - alpha ** (k + 1)) / (1 - alpha)
    assert expected_tokens(alpha, k) == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize("k", [0, 1, 4, 8])
def test_expected_tokens_is_1_at_alpha_0_and_k_plus_1_at_alpha_1(k):
    assert expected_tokens(0.0, k) == 1.0
    assert expected_tokens(1.0, k) == k + 1
    # just below 1 the closed form cancels catastrophically; the sum approaches k + 1 smoothly
    assert expected_tokens(1 - 1e-12, k) == pytest.approx(k + 1, abs=1e-9)


def simulate_accepted(alpha: float, k: int, steps: int, seed: int) -> np.ndarray:
    """Accepted drafts per step when each guess passes with probability alpha, independently:
    a step keeps the guesses before its first rejection."""
    passes = np.random.default_rng(seed).random((steps, k)) < alpha  # [steps, k]
    return np.cumprod(passes, axis=1).sum(axis=1)  # [steps]


@pytest.mark.parametrize("alpha, k", [(0.3, 1), (0.6, 4), (0.8, 4), (0.9, 8)])
def test_expected_tokens_matches_a_monte_carlo_of_iid_acceptances(alpha, k):
    tokens = simulate_accepted(alpha, k, steps=20_000, seed=0) + 1  # plus the target's token
    standard_error = tokens.std() / math.sqrt(len(tokens))
    assert abs(tokens.mean() - expected_tokens(alpha, k)) < 4 * standard_error


@pytest.mark.parametrize("alpha, k", [(0.3, 1), (0.6, 4), (0.8, 4), (0.9, 8)])
def test_acceptance_rate_recovers_alpha_from_simulated_steps(alpha, k):
    accepted = simulate_accepted(alpha, k, steps=20_000, seed=1)
    examined = accepted.sum() + (accepted < k).sum()  # each accepted guess, and each rejection
    standard_error = math.sqrt(alpha * (1 - alpha) / examined)
    assert abs(acceptance_rate(accepted.tolist(), k) - alpha) < 4 * standard_error


def test_acceptance_rate_is_accepted_over_examined():
    # k=4: all 4 kept (no rejection), 2 then a rejection, a rejection at once -> 6 / (6 + 2)
    assert acceptance_rate([4, 2, 0], k=4) == 0.75
    assert acceptance_rate([3, 3], k=3) == 1.0
    assert acceptance_rate([0, 0], k=2) == 0.0


def test_speedup_constant_cost_is_the_papers_formula_by_hand():
    # alpha 0.8, k 4, c 0.05: (1 - 0.8^5) / 0.2 = 0.67232 / 0.2 = 3.3616 tokens per step,
    # bought for 4 x 0.05 + 1 = 1.2 target-forward times.
    assert speedup_constant_cost(0.8, 4, 0.05) == pytest.approx(3.3616 / 1.2)
    assert speedup_constant_cost(0.5, 0, 0.3) == 1.0  # no drafts, nothing changes
    assert speedup_constant_cost(1.0, 3, 0.0) == 4.0  # free, perfect drafts: k + 1 per step


@given(alphas, ks, st.floats(0.01, 1.0), st.floats(1.0, 256.0))
def test_curve_speedup_is_the_constant_cost_formula_on_flat_curves(alpha, k, c, batch):
    target, draft = CostCurve.flat(10.0), CostCurve.flat(10.0 * c)
    assert speedup(alpha, k, batch, target, draft) == pytest.approx(
        speedup_constant_cost(alpha, k, c), rel=1e-12
    )


def test_step_time_is_k_drafts_plus_one_verify_of_k_plus_1_tokens():
    target = CostCurve((1,), (1, 2, 3, 4), ((10.0, 11.0, 12.0, 13.0),))
    draft = CostCurve.flat(1.0, batches=(1,), tokens=(1,))
    assert step_time_ms(target, draft, 1, 3) == 3 * 1.0 + 13.0
    assert step_time_ms(target, draft, 1, 0) == 10.0


def test_the_host_is_charged_per_forward_by_the_rows_it_builds():
    # A draft forward carries `batch` rows, the verify batch x (k + 1): 2 x 3 guesses + 8 rows.
    target = CostCurve((1, 2, 4, 8), (1, 4), tuple((10.0, 10.0) for _ in range(4)))
    draft = CostCurve.flat(1.0, batches=(1, 2, 4, 8), tokens=(1,))
    assert step_time_ms(target, draft, 2, 3, host_ms=lambda rows: rows / 10) == pytest.approx(
        3 * (1.0 + 0.2) + 10.0 + 0.8
    )


def test_a_forward_pays_for_the_captured_graph_size_it_is_padded_to():
    sizes = [1, 2, 4, 8, 16, 24]
    assert [padded_rows(n, sizes) for n in (1, 3, 9, 17, 24, 25)] == [1, 4, 16, 24, 24, 25]
    assert padded_rows(7) == 7  # no graphs: no padding
    # batch 2, k = 2: 6 verify rows run the 8-row graph, priced as 8 / 3 sequences of 3 tokens
    target = CostCurve((1, 2, 4), (1, 3), ((1.0, 2.0), (2.0, 4.0), (3.0, 6.0)))
    draft = CostCurve.flat(0.5, batches=(1, 2, 4), tokens=(1, 3))
    assert step_time_ms(target, draft, 2, 2, graph_sizes=sizes) == pytest.approx(
        2 * 0.5 + target.ms(8 / 3, 3)
    )


def test_host_overhead_is_plain_step_minus_gpu_time_and_grows_per_row_past_the_last_batch():
    target = CostCurve((1, 2, 4), (1,), ((1.0,), (1.0,), (2.0,)))
    host = host_overhead(target, {1: 1.5, 2: 1.6, 4: 3.0})  # 0.5, 0.6, 1.0 ms of host
    assert host(1) == pytest.approx(0.5) and host(0.5) == pytest.approx(0.5)
    assert host(2) == pytest.approx(0.6) and host(4) == pytest.approx(1.0)
    assert host(12) == pytest.approx(1.0 + 8 * 0.2)  # the last segment's 0.2 ms per row


def test_cost_curve_interpolates_log_linearly_in_batch_and_linearly_in_tokens():
    curve = CostCurve(batches=(1, 4), tokens=(1, 3), ms_grid=((1.0, 3.0), (5.0, 7.0)))
    assert curve.ms(4, 3) == 7.0
    assert curve.ms(2, 1) == pytest.approx(3.0)  # log2 2 is halfway between log2 1 and log2 4
    assert curve.ms(1, 2) == pytest.approx(2.0)
    assert curve.ms(2, 2) == pytest.approx(4.0)


def test_cost_curve_refuses_to_extrapolate_and_names_the_measured_range():
    with pytest.raises(ValueError, match=r"batch=512 is outside .* batch 1\.\.256"):
        TARGET.ms(512, 1)
    with pytest.raises(ValueError, match=r"tokens=10 is outside .* tokens 1\.\.9"):
        best_k(0.8, 1, TARGET, DRAFT, ks=range(0, 10))


def test_cost_curve_round_trips_through_json_rows():
    rows = json.loads(json.dumps(TARGET.to_dict()))["rows"]
    assert rows[0].keys() == {"batch", "tokens", "ms"}
    assert CostCurve.from_rows(rows, name=TARGET.name) == TARGET


def test_from_rows_rejects_a_gap_or_a_repeat_in_the_grid():
    rows = [{"batch": b, "tokens": t, "ms": 1.0} for b in (1, 2) for t in (1, 2)]
    with pytest.raises(ValueError, match=r"missing \(batch, tokens\) \[\(2, 2\)\]"):
        CostCurve.from_rows(rows[:-1])
    with pytest.raises(ValueError, match="keep one"):
        CostCurve.from_rows(rows + rows[:1])


def test_roofline_curve_reads_the_weights_at_batch_1_and_is_compute_bound_at_large_batch():
    config = PRESETS["qwen3-8b"]
    weights_ms = decode_step(config, 1, 0).weight_bytes / H100_SXM.mem_bandwidth * 1e3
    assert TARGET.ms(1, 1) == pytest.approx(weights_ms, rel=1e-3)
    assert TARGET.ms(1, 9) == pytest.approx(weights_ms, rel=1e-3)  # 9 tokens ride on one read
    flops_ms = 2 * matmul_params(config) * 256 * 9 / H100_SXM.peak_flops * 1e3
    assert TARGET.ms(256, 9) == pytest.approx(flops_ms)


def test_speculation_pays_at_batch_1_and_stops_paying_at_large_batch():
    assert speedup(0.8, 4, 1, TARGET, DRAFT) > 2
    assert break_even_batch(0.8, 4, TARGET, DRAFT) is not None
    assert speedup(0.8, 4, 256, TARGET, DRAFT) < 1


@given(alphas, alphas, st.integers(1, 8))
def test_a_worse_draft_stops_paying_at_a_smaller_batch(a, b, k):
    def break_even(alpha):
        found = break_even_batch(alpha, k, TARGET, DRAFT)
        return math.inf if found is None else found

    assert break_even(min(a, b)) <= break_even(max(a, b))


@given(st.floats(0.0, 0.99), grid_batches)
def test_best_k_is_0_when_the_draft_costs_as_much_as_the_target(alpha, batch):
    assert best_k(alpha, batch, TARGET, TARGET) == 0
    assert best_k(alpha, batch, CostCurve.flat(5.0), CostCurve.flat(5.0)) == 0


def test_best_k_shrinks_as_the_batch_grows_and_predict_rows_say_so():
    rows = predict(0.8, TARGET, DRAFT)
    assert [r.batch for r in rows] == list(DEFAULT_BATCHES)
    assert rows[0].k > 0 and rows[-1].k == 0 and rows[-1].speedup == 1.0
    assert all(a.k >= b.k for a, b in pairwise(rows))
    for r in rows:
        assert r.k == best_k(0.8, r.batch, TARGET, DRAFT)
        assert r.speedup == speedup(0.8, r.k, r.batch, TARGET, DRAFT)
    json.dumps([r.to_dict() for r in rows])


def test_host_time_per_forward_favours_fewer_guesses_and_predict_charges_it():
    host = 0.5  # ms the host adds to every forward: k draft forwards pay it k times
    plain, charged = predict(0.8, TARGET, DRAFT), predict(0.8, TARGET, DRAFT, host_ms=host)
    assert all(c.k <= p.k for p, c in zip(plain, charged, strict=True))
    for r in charged:
        assert r.k == best_k(0.8, r.batch, TARGET, DRAFT, host_ms=host)
        assert r.step_ms == step_time_ms(TARGET, DRAFT, r.batch, r.k, host)
        assert r.speedup == speedup(0.8, r.k, r.batch, TARGET, DRAFT, host)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: expected_tokens(1.5, 2), r"0 <= alpha <= 1; got 1.5\. Estimate it"),
        (lambda: expected_tokens(math.nan, 2), r"0 <= alpha <= 1; got nan"),
        (lambda: expected_tokens(0.5, -1), r"an integer >= 0 .* got -1"),
        (lambda: expected_tokens(0.5, 2.0), r"an integer >= 0 .* got 2\.0"),
        (lambda: acceptance_rate([5], k=4), r"accepts 0\.\.4 draft tokens, got 5"),
        (lambda: acceptance_rate([], k=4), r"record steps with k >= 1"),
        (lambda: speedup_constant_cost(0.5, 2, -0.1), r"c >= 0"),
        (lambda: best_k(0.5, 1, TARGET, DRAFT, ks=[]), r"ks is empty; pass"),
        (lambda: step_time_ms(TARGET, DRAFT, 0, 2), r"batch must be >= 1"),
        (lambda: CostCurve((2, 1), (1,), ((1.0,), (1.0,))), r"increasing integers >= 1"),
        (lambda: CostCurve((1,), (1, 2), ((1.0,),)), r"one row per batch"),
        (lambda: CostCurve((1,), (1,), ((0.0,),)), r"finite number > 0"),
        (lambda: CostCurve.from_rows([]), r"no rows"),
    ],
)
def test_bad_inputs_raise_value_errors_that_say_what_to_do(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=50, deadline=None)
@given(alpha=st.floats(0.0, 1.0), k=st.integers(1, 8))
def test_alpha_from_acceptance_rate_inverts_the_mean_accepted_per_step(alpha, k):
    rate = (expected_tokens(alpha, k) - 1) / k  # accepted / proposed, in expectation
    assert rate <= alpha + 1e-12  # counting unexamined guesses as failures understates alpha
    assert alpha_from_acceptance_rate(rate, k) == pytest.approx(alpha, abs=1e-9)


def test_alpha_from_acceptance_rate_matches_the_mle_on_simulated_steps():
    rng = random.Random(1)
    alpha, k, steps = 0.8, 4, []
    for _ in range(20000):
        n = 0
        while n < k and rng.random() < alpha:
            n += 1
        steps.append(n)
    rate = sum(steps) / (k * len(steps))
    assert alpha_from_acceptance_rate(rate, k) == pytest.approx(acceptance_rate(steps, k), abs=0.01)
    with pytest.raises(ValueError, match="accepted / proposed"):
        alpha_from_acceptance_rate(1.5, 4)


def test_end_to_end_speedups_compare_only_runs_of_the_same_workload_and_engine_mode():
    def row(k, tps, graphs=True, **kw):
        return {"experiment": "end_to_end", "pair": "gpu", "batch": 8, "k": k,
                "cuda_graphs": graphs, "tokens_per_s": tps, **kw}  # fmt: skip

    rows = [
        {"experiment": "cost_curve", "model": "gpu-target", "batch": 8, "tokens": 1, "ms": 1.0},
        row(0, 100.0),  # an older run's row: no workload field, a closed batch
        row(4, 150.0, workload="closed"),
        row(0, 40.0, graphs=False),
        row(4, 60.0, graphs=False),
        row(0, 200.0, workload="steady"),
        row(4, 100.0, workload="steady"),
        row(2, 90.0, workload="steady", pair="other"),  # no plain row to compare with
    ]
    closed = {(r["k"], r["cuda_graphs"]): r["speedup"] for r in end_to_end_speedups(rows)}
    assert closed == {(0, True): 1.0, (4, True): 1.5, (0, False): 1.0, (4, False): 1.5}
    steady = end_to_end_speedups(rows, "steady")
    assert [(r["pair"], r["k"], r["speedup"]) for r in steady] == [
        ("gpu", 0, 1.0),
        ("gpu", 4, 0.5),
        ("other", 2, None),
    ]
    assert "speedup" not in rows[1]  # the rows given are left as they were
