"""The committed GPU runs of `python -m minirt.bench spec` against issue 7's targets, and the cost
model (minirt.tools.spec) against them: it is given the measured GPU curves, the host's time per
forward (from the runs without speculation) and the per-guess α behind each run's acceptance
rate, never the speedups it predicts. Where it does not hold yet, the gap is a test."""

from pathlib import Path

import pytest

from minirt.bench.results import load_results
from minirt.tools.spec import CostCurve, alpha_from_acceptance_rate, host_overhead, speedup

ROOT = Path(__file__).resolve().parents[2] / "bench" / "results"


def newest(pair: str) -> dict:
    """The newest committed spec run with end-to-end rows of `pair` ("gpu" or "embedded")."""
    for path in sorted(ROOT.glob("*/spec-*.json"), key=lambda p: p.name, reverse=True):
        record = load_results(path)
        if any(r.get("pair") == pair for r in record["results"]):
            return record
    pytest.skip(f"no committed spec run has the {pair} pair (python -m minirt.bench spec)")


def model(record: dict, pair: str, workload: str = "closed"):
    """Measured speedups and the model's predictions, per k and batch, with CUDA graphs.
    workload "closed": `batch` requests at once (runs before 2026-11-27 11:00 had only these);
    "steady": 4 x batch requests through batch slots."""
    rows = record["results"]
    names = {"gpu": ("gpu-target", "gpu-draft"), "embedded": ("embedded-target", "embedded-draft")}

    def curve(name: str) -> CostCurve:  # the GPU time of a verify as the engine runs it
        return CostCurve.from_rows(
            {"batch": r["batch"], "tokens": r["tokens"], "ms": r["gpu_ms_expanded"]}
            for r in rows
            if r["experiment"] == "cost_curve" and r["model"] == name
        )

    target, draft = map(curve, names[pair])
    e2e = [r for r in rows if r["experiment"] == "end_to_end" and r["pair"] == pair
           and r["cuda_graphs"] and r.get("workload", "closed") == workload]  # fmt: skip
    plain = {r["batch"]: 1e3 * r["batch"] / r["tokens_per_s"] for r in e2e if r["k"] == 0}
    host = host_overhead(target, plain)
    measured, predicted = {}, {}
    for r in (r for r in e2e if r["k"]):
        k, b = r["k"], r["batch"]
        measured[k, b] = r["tokens_per_s"] * plain[b] / (1e3 * b)
        alpha = alpha_from_acceptance_rate(r["acceptance_rate"], k)
        predicted[k, b] = speedup(alpha, k, b, target, draft, host)
    return measured, predicted


def break_even(speedups: dict, k: int) -> int | None:
    return next((b for (kk, b) in sorted(speedups) if kk == k and speedups[kk, b] < 1), None)


def test_speculation_pays_at_least_1_8x_at_batch_1_with_the_gpu_scale_pair():
    """A 0.44B target (Qwen3-0.6B's body) and a 3.2M draft, trained by minirt.model.train: a
    decode step reads weights for longer than the host takes, so guesses are nearly free."""
    measured, _ = model(newest("gpu"), "gpu")
    best = max(s for (k, b), s in measured.items() if b == 1)
    assert best >= 1.8


def test_the_model_holds_at_small_batch_for_the_gpu_scale_pair():
    """Where the verify is memory-bound and the host's share small, GPU curves + host time per
    forward + α predict the measured speedup within 30 % (H200 run: within 20 %; H100: 11 % at
    k = 2, 29 % at k = 4). The model errs low: it charges every draft forward the target's host
    time per forward, while the small draft's graph replays cost the host less."""
    measured, predicted = model(newest("gpu"), "gpu")
    for k in (2, 4):
        assert predicted[k, 1] == pytest.approx(measured[k, 1], rel=0.3)
        assert predicted[k, 1] <= measured[k, 1] * 1.05


def test_known_gap_the_model_misses_where_speculation_stops_paying():
    """Issue 7 asks for the break-even batch within one power of two; not met. Measured (closed
    batch): speculation stops paying at batch 128 on the H200, 32-64 on the H100; the model never
    sees it stop by 256. What it lacks: a speculative step's own host work, and the closed
    batch's tail: tokens per step fall from 4.1 at batch 1 to 2.2 at 256 with k = 4 at the same
    acceptance rate. Likely cause (found on CPU after the runs): the lookahead slots are reserved
    before admissions, so 256 decodes x 5 slots leave 768 of the 2,048-token budget for 16,384
    prompt tokens: the last prompts start ~20 steps after the first ones. `bench spec --pair
    --decode-only` measures the full-batch steps the model describes; its GPU run is due."""
    measured, predicted = model(newest("gpu"), "gpu")
    for k in (2, 4):
        b = break_even(measured, k)
        assert b is not None and b <= 128
        assert all(predicted[k, bb] > 1 for (kk, bb) in predicted if kk == k and bb <= 256)


def test_with_a_queue_of_requests_speculation_pays_only_at_small_batch():
    """Steady load (4 x batch requests through batch slots): a finished sequence's slot is
    refilled at once, so nearly every step carries a new prompt's chunk, and a step with a prompt
    chunk runs eagerly (no CUDA graph) for both models. Measured on the H100: the gain at batch 1
    stays, from batch 16 on speculation loses; the plain engine, whose sequences all finish
    together, admits in bursts and keeps its graphs."""
    record = newest("gpu")
    if not any(r.get("workload") == "steady" for r in record["results"]):
        pytest.skip("the newest gpu-pair run predates the steady workload")
    measured, _ = model(record, "gpu", "steady")
    for k in (2, 4):
        assert measured[k, 1] > 1.5
        assert all(s < 1 for (kk, b), s in measured.items() if kk == k and b >= 16)


def test_known_gap_the_embedded_pair_loses_on_the_gpu_but_the_model_says_it_wins():
    """A 6.4M target with CUDA graphs is host-bound: measured 0.7-0.8x at batch 1. The model
    (host time per forward from plain runs) predicts > 1: a speculative step carries host
    time of its own that no forward of a plain run shows."""
    measured, predicted = model(newest("embedded"), "embedded")
    for k in (2, 4, 6):
        assert measured[k, 1] < 1 < predicted[k, 1]
