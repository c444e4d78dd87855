"""Bad input gets 400 in OpenAI's error schema, never a 500 with a traceback (plain HTTP)."""

from __future__ import annotations

import time

import httpx
import pytest

GOOD = {"model": "target", "prompt": "def f():", "max_tokens": 4}
BAD = {
    "unknown model": ({"model": "gpt-9"}, "model"),
    "prompt longer than the context": ({"prompt": "x" * 2000}, "prompt"),
    "max_tokens past the context": ({"max_tokens": 5000}, "prompt"),
    "negative temperature": ({"temperature": -1.0}, None),
    "top_p of zero": ({"top_p": 0.0}, None),
    "top_k of zero": ({"top_k": 0}, None),
    "max_tokens of zero": ({"max_tokens": 0}, "max_tokens"),
    "a string temperature": ({"temperature": "hot"}, "temperature"),
    "two choices": ({"n": 2}, "n"),
    "an empty prompt": ({"prompt": ""}, "prompt"),
    "a token id outside the vocabulary": ({"prompt": [1, 2, 99999]}, "prompt"),
    "a batch of prompts": ({"prompt": ["a", "b"]}, "prompt"),
}


def _error(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert "Traceback" not in response.text
    return body["error"]


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_completion_requests_are_refused_with_400_and_a_reason(server, case):
    url, _ = server
    change, param = BAD[case]
    error = _error(httpx.post(url + "/v1/completions", json={**GOOD, **change}))
    assert error["message"]
    if param is not None:
        assert error["param"] == param


def test_a_body_that_is_not_json_is_refused_with_400(server):
    url, _ = server
    response = httpx.post(
        url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(response)


def test_a_chat_request_without_messages_is_refused_with_400(server):
    url, _ = server
    error = _error(httpx.post(url + "/v1/chat/completions", json={"model": "target"}))
    assert error["param"] == "messages"


def test_the_server_answers_normally_after_refusing_bad_requests(server):
    url, _ = server
    response = httpx.post(url + "/v1/completions", json=GOOD)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 4
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_the_step_log_counts_the_steps_that_served_a_request(server):
    """GET /steps: the engine's steps as the server saw them, the simulator's calibration."""
    server, _ = server
    before = httpx.get(server + "/steps").json()
    first = before["next"]
    body = {**GOOD, "max_tokens": 5}
    body |= {"temperature": 0.0, "ignore_eos": True}
    sent = time.perf_counter()
    assert httpx.post(server + "/v1/completions", json=body, timeout=60).status_code == 200
    answered = time.perf_counter()
    log = httpx.get(server + "/steps", params={"since": first}).json()
    rows = [dict(zip(log["fields"], s, strict=True)) for s in log["steps"]]
    assert log["next"] == first + len(rows)
    assert sum(r["decodes"] for r in rows) >= 4  # 5 tokens: one from the prefill, 4 decodes
    assert sum(r["prefill_tokens"] for r in rows) >= 1
    assert all(r["ms"] > 0 for r in rows)
    assert [r["end_s"] for r in rows] == sorted(r["end_s"] for r in rows)
    # end_s counts from t0_s on this machine's perf_counter(): the steps start within the request
    # (a step's end is stamped after its tokens went out, so the answer may come back first)
    assert sent < log["t0_s"] + rows[0]["end_s"] - rows[0]["ms"] / 1e3
    assert log["t0_s"] + rows[-1]["end_s"] - rows[-1]["ms"] / 1e3 < answered
    # 5 tokens went out in 1 to 5 pieces (a piece merges the steps a lagging answer missed)
    assert 1 <= log["http_chunks"] - before["http_chunks"] <= 5


def test_bench_serve_refuses_a_workload_longer_than_the_context_before_sending_any(server):
    """The load generator reads the model's max_model_len from /v1/models and says what to do
    instead of running a sweep whose every request would come back as an error."""
    import math

    from minirt.bench.serve import LoadConfig, sweep
    from minirt.workload import WorkloadSpec

    server, _ = server
    first = httpx.get(server + "/steps").json()["next"]
    too_long = WorkloadSpec(distribution="fixed", prompt_len=1000, output_len=100)
    cfg = LoadConfig(server, [math.inf], num_prompts=2, workload=too_long)
    with pytest.raises(ValueError, match="needs 1,100 tokens .* holds 1,024; choose a smaller"):
        sweep(cfg, progress=False)
    assert httpx.get(server + "/steps").json()["next"] == first  # not one step ran
