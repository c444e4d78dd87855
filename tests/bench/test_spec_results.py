"""The committed GPU runs of `python -m minirt.bench spec` against issue 7's targets, and the cost
model (minirt.tools.spec) against them: it is given the measured GPU curves, the host's time per
forward (from the runs without speculation) and the per-guess α behind each run's acceptance
rate, never the speedups it predicts. Where it does not hold yet, the gap is a test.

A run may hold only some experiments (`--decode-only` writes no cost curves: they depend on the
model shapes and the GPU alone), so each test reads the newest run that has what it needs."""

from pathlib import Path

import pytest

from minirt.engine.cuda_graph import default_graph_sizes
from minirt.results import load_results
from minirt.tools.spec import (
    CostCurve,
    alpha_from_acceptance_rate,
    break_even_batch,
    host_overhead,
    speedup,
)

ROOT = Path(__file__).resolve().parents[2] / "bench" / "results"
MODELS = {"gpu": ("gpu-target", "gpu-draft"), "embedded": ("embedded-target", "embedded-draft")}


def newest(pair: str, workload: str | None = None, device: str = "*") -> dict:
    """The newest committed spec run with the cost curves of `pair` ("gpu" or "embedded"), or,
    given a `workload`, with its end-to-end rows of that workload (CUDA graphs)."""
    for path in sorted(ROOT.glob(f"{device}/spec-*.json"), key=lambda p: p.name, reverse=True):
        rows = load_results(path)["results"]
        if any(
            r.get("model") == MODELS[pair][0]
            if workload is None
            else r.get("pair") == pair
            and r.get("cuda_graphs")
            and r.get("workload", "closed") == workload
            for r in rows
        ):
            return load_results(path)
    what = "cost curves" if workload is None else f"{workload} end-to-end rows"
    pytest.skip(f"no committed spec run has the {pair} pair's {what} (python -m minirt.bench spec)")


def curves(pair: str, device: str = "*") -> tuple[CostCurve, CostCurve]:
    """The GPU time of a forward as the engine runs it: k + 1 tokens as one-token rows, replayed
    from a CUDA graph (`gpu_ms_expanded`), for the pair's target and draft."""
    rows = newest(pair, device=device)["results"]
    return tuple(
        CostCurve.from_rows(
            {"batch": r["batch"], "tokens": r["tokens"], "ms": r["gpu_ms_expanded"]}
            for r in rows
            if r["experiment"] == "cost_curve" and r["model"] == name
        )
        for name in MODELS[pair]
    )


def model(pair: str, workload: str = "closed", device: str = "*", host: str = "by rows"):
    """Measured speedups and the model's predictions, per (k, batch), with CUDA graphs.
    workload "closed": `batch` requests at once (runs before 2026-11-27 11:00 had only these);
    "steady": 4 x batch requests through batch slots; "decode": only the steps in which the
    whole batch decodes (`full_batch_decode`), the step the model describes.
    The model sees the k = 0 rows (the host's time per forward, `host_overhead`) and each
    speculating row's acceptance rate, never a speculating row's time. host: "by rows" (a forward
    costs the host what a plain step of as many rows does), "per forward" (what a plain step of
    the same batch does: the model before the decode-only run) or "none" (GPU time alone)."""
    record = newest(pair, workload, device)
    target, draft = curves(pair, record["device"])  # the same GPU's curves
    e2e = [r for r in record["results"] if r["experiment"] == "end_to_end" and r["pair"] == pair
           and r["cuda_graphs"] and r.get("workload", "closed") == workload]  # fmt: skip
    plain = {r["batch"]: 1e3 * r["batch"] / r["tokens_per_s"] for r in e2e if r["k"] == 0}
    host_ms = host_overhead(target, plain) if host != "none" else 0.0
    max_num_seqs = max(plain)  # end_to_end runs every batch on one engine of max(batches) slots
    measured, predicted = {}, {}
    for r in (r for r in e2e if r["k"]):
        k, b = r["k"], r["batch"]
        measured[k, b] = r["tokens_per_s"] * plain[b] / (1e3 * b)
        alpha = alpha_from_acceptance_rate(r["acceptance_rate"], k)
        sizes = default_graph_sizes(max_num_seqs * (1 + k))  # what the engine captured
        if host == "per forward":
            predicted[k, b] = speedup(alpha, k, b, target, draft, host_ms(b))
        else:
            predicted[k, b] = speedup(alpha, k, b, target, draft, host_ms, sizes)
    return measured, predicted


def break_even(speedups: dict, k: int) -> int | None:
    return next((b for (kk, b) in sorted(speedups) if kk == k and speedups[kk, b] < 1), None)


def within_one_power_of_two(predicted: int | None, measured: int) -> bool:
    return predicted is not None and measured / 2 <= predicted <= measured * 2


def test_speculation_pays_at_least_1_8x_at_batch_1_with_the_gpu_scale_pair():
    """A 0.44B target (Qwen3-0.6B's body) and a 3.2M draft, trained by minirt.model.train: a
    decode step reads weights for longer than the host takes, so guesses are nearly free. Both
    the whole run (closed: prefill and tail included) and its full-batch decode steps."""
    for workload in ("closed", "decode"):
        measured, _ = model("gpu", workload)
        assert max(s for (k, b), s in measured.items() if b == 1) >= 1.8, workload


def test_the_model_holds_at_small_batch_for_the_gpu_scale_pair():
    """Where the verify is memory-bound and the host's share small, GPU curves + host time per
    forward + α predict the measured speedup within 30 % on the full-batch decode steps (H100:
    19 % at k = 2, 26 % at k = 4) and 35 % on the closed run, whose k = 0 host time per step is
    larger (prefill and tail steps; 12 % and 30 %). The model errs low: it charges every draft
    forward the host time of a whole plain step (schedule, inputs, launch, sampling, update),
    while a draft forward is only inputs and a graph replay of a small model."""
    for workload, rel in (("decode", 0.3), ("closed", 0.35)):
        measured, predicted = model("gpu", workload)
        for k in (2, 4):
            assert predicted[k, 1] == pytest.approx(measured[k, 1], rel=rel), (workload, k)
            assert predicted[k, 1] <= measured[k, 1] * 1.05, (workload, k)


def test_the_model_predicts_where_speculation_stops_paying_within_one_power_of_two():
    """Issue 7's second target, on the full-batch decode steps (`bench spec --pair
    --decode-only`, H100): measured, speculation stops paying at batch 128 with k = 4 and 256
    with k = 2. The model (GPU curves of a graph replay, padded to the captured graph size; the
    host's time per forward as a function of its rows, from the k = 0 steps only; α from each
    run's acceptance rate) predicts 256 and 512: one power of two late. It errs high because it
    leaves out each sequence's accept and roll-back work (20-41 µs per sequence per step at
    batch 512), and the margin is thin: 0.98x at the predicted batch for k = 2.
    The check can fail: flat curves (the paper's closed form) never stop paying, nor does the
    host time of a plain step of the same batch on every forward; on the GPU time alone k = 2
    pays through 512 (k = 4 stops at 256 only because a verify of 1,280 rows
    replays the 2,560-row graph: the captured sizes jump from 1,024 to max_num_seqs x 5)."""
    measured, predicted = model("gpu", "decode")
    _, gpu_only = model("gpu", "decode", host="none")
    _, per_forward = model("gpu", "decode", host="per forward")
    target, draft = curves("gpu")
    grid = dict(batches=target.batches, tokens=target.tokens)
    flat = CostCurve.flat(target.ms(1, 1), **grid), CostCurve.flat(draft.ms(1, 1), **grid)
    for k in (2, 4):
        stop = break_even(measured, k)
        assert stop is not None and stop <= 256
        assert within_one_power_of_two(break_even(predicted, k), stop), k
        assert break_even_batch(0.8, k, *flat, batches=[b for kk, b in measured if kk == k]) is None
        assert break_even(per_forward, k) is None
    assert break_even(gpu_only, 2) is None


def test_known_gap_the_closed_batch_stops_paying_earlier_than_its_full_batch_steps():
    """With `batch` requests at once the run includes the prefill and the tail of the batch: on
    the H100 k = 4 stops paying at 32-64 (H200: 128), while its full-batch decode steps pay up to
    64. Tokens per step fall from 4.9 at batch 1 to 1.8 at 512 with k = 4 at the same acceptance
    rate: the lookahead slots are reserved before admissions, so 512 decodes x 5 slots take the
    whole 2,048-token budget and the last prompts start many steps after the first ones (found on
    CPU after the runs). The model, which prices full-batch steps, misses this."""
    closed, _ = model("gpu")
    decode, _ = model("gpu", "decode")
    assert break_even(closed, 4) is not None and break_even(closed, 4) < break_even(decode, 4)


def test_with_a_queue_of_requests_speculation_pays_only_at_small_batch():
    """Steady load (4 x batch requests through batch slots): a finished sequence's slot is
    refilled at once, so nearly every step carries a new prompt's chunk, and a step with a prompt
    chunk runs eagerly (no CUDA graph) for both models. Measured on the H100: the gain at batch 1
    stays, from batch 16 on speculation loses; the plain engine, whose sequences all finish
    together, admits in bursts and keeps its graphs."""
    measured, _ = model("gpu", "steady")
    for k in (2, 4):
        assert measured[k, 1] > 1.5
        assert all(s < 1 for (kk, b), s in measured.items() if kk == k and b >= 16)


def test_known_gap_the_embedded_pair_loses_on_the_gpu_but_the_model_says_it_wins():
    """A 6.4M target with CUDA graphs is host-bound: measured 0.7-0.8x at batch 1. The model
    (host time per forward from plain runs) predicts > 1: a speculative step carries host
    time of its own that no forward of a plain run shows."""
    measured, predicted = model("embedded")
    for k in (2, 4, 6):
        assert measured[k, 1] < 1 < predicted[k, 1]
