"""TTFT, TPOT and throughput from RequestEvents, by hand and from a real run."""

import math

import pytest

from minirt import LLM
from minirt.tools.latency import request_metrics, summarize, sweep_batch_sizes


def _req(seq_id, first, finish, n, arrival=0.0):
    return {
        "type": "request",
        "seq_id": seq_id,
        "arrival_s": arrival,
        "first_token_s": first,
        "finish_s": finish,
        "num_output_tokens": n,
        "prompt_len": 4,
        "finish_reason": "length",
    }


def test_metrics_of_hand_made_requests():
    events = [
        {"type": "step"},
        _req(0, 0.5, 2.5, 5),
        _req(1, 1.0, 1.0, 1, arrival=0.25),
        _req(2, None, None, 0),  # never finished: left out
    ]
    a, b = request_metrics(events)
    assert (a.ttft_s, a.tpot_s, a.e2e_s) == (0.5, 0.5, 2.5)
    assert (b.ttft_s, b.tpot_s, b.e2e_s) == (0.75, None, 0.75)
    s = summarize([a, b])
    assert s["mean_ttft_s"] == pytest.approx(0.625)
    assert s["mean_tpot_s"] == 0.5
    assert s["tokens_per_s"] == pytest.approx(6 / 2.5)


def test_summarize_needs_requests():
    with pytest.raises(ValueError, match="no finished requests"):
        summarize([])


def test_sweep_serves_b_requests_per_batch_size(qwen3_checkpoint):
    folder, _ = qwen3_checkpoint
    llm = LLM(folder, device="cpu", trace=True)
    rows = sweep_batch_sizes(llm, [[65] * 5, [66] * 7], [1, 3], max_tokens=4)
    assert [r["batch_size"] for r in rows] == [1, 3]
    assert [r["num_requests"] for r in rows] == [1, 3]
    assert all(r["mean_ttft_s"] > 0 and not math.isnan(r["mean_tpot_s"]) for r in rows)
