"""A full server says 429 with Retry-After; an engine failure is an explicit error, not a hang."""

from __future__ import annotations

import contextlib

import httpx

from tests.serve.conftest import wait_until_idle

LONG = {"model": "target", "prompt": "import os", "max_tokens": 900, "ignore_eos": True}
SHORT = {"model": "target", "prompt": "import os", "max_tokens": 3}


def test_a_request_beyond_the_waiting_queue_gets_429_with_retry_after(small_server):
    url, _ = small_server
    with httpx.Client(timeout=30) as client, contextlib.ExitStack() as held:
        for _ in range(3):  # a batch of 2 and a queue of 1: the server is full
            r = held.enter_context(
                client.stream("POST", url + "/v1/completions", json={**LONG, "stream": True})
            )
            assert r.status_code == 200
        refused = client.post(url + "/v1/completions", json=SHORT)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
    wait_until_idle(url)
    assert httpx.post(url + "/v1/completions", json=SHORT, timeout=30).status_code == 200


def test_an_engine_failure_answers_every_request_in_flight_with_an_error(small_server, monkeypatch):
    url, thread = small_server
    llm = thread.engine.llm
    real_step = llm.step

    def failing_step(*args):
        monkeypatch.setattr(llm, "step", real_step)  # fail once, then work again
        raise RuntimeError("a simulated kernel fault")

    monkeypatch.setattr(llm, "step", failing_step)
    response = httpx.post(url + "/v1/completions", json=SHORT, timeout=30)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error" and "simulated kernel fault" in error["message"]
    assert "Traceback" not in response.text
    assert wait_until_idle(url)["num_blocks_used"] == 0
    assert httpx.post(url + "/v1/completions", json=SHORT, timeout=30).status_code == 200
