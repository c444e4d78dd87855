"""A client that leaves mid-answer: its request is aborted and its KV blocks go back at once."""

from __future__ import annotations

import httpx

from tests.serve.conftest import wait_until_idle

LONG = {"model": "target", "prompt": "def main():", "max_tokens": 900, "ignore_eos": True}


def _aborted(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith('minirt_requests_finished_total{finish_reason="abort"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_stream_closed_mid_answer_frees_its_blocks(small_server):
    url, thread = small_server
    before = _aborted(url)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/v1/completions", json={**LONG, "stream": True}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]  # a few tokens, then hang up
    assert any(line.startswith("data: {") for line in got)
    health = wait_until_idle(url)
    assert health["num_blocks_used"] == 0 and health["num_running"] == 0
    assert _aborted(url) == before + 1  # stopped, not run to its 900 tokens
    assert thread.engine.llm.block_manager.tables == {}


def test_a_client_that_gives_up_on_a_whole_answer_frees_its_blocks(small_server):
    url, thread = small_server
    before = _aborted(url)
    try:
        httpx.post(url + "/v1/completions", json=LONG, timeout=0.5)
    except httpx.TimeoutException:
        pass
    health = wait_until_idle(url)
    assert health["num_blocks_used"] == 0 and health["num_running"] == 0
    assert _aborted(url) == before + 1
