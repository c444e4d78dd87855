"""The server on an overlapped engine (`overlap_schedule=True`: each step launches before the
last one's tokens are read). A request's newest token is a placeholder until the next step
resolves it: no placeholder may reach a client, every answer must still be offline `generate`'s,
and a client that leaves must still free its blocks."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.serve.conftest import greedy_offline, wait_until_idle
from tests.serve.test_disconnect import LONG, _aborted
from tests.serve.test_soak import _all, _prompts

MAX_TOKENS = 6  # what test_soak's _ask asks for


@pytest.fixture(scope="module")
def overlap_server():
    from minirt import LLM
    from minirt.serve.server import ServerThread

    thread = ServerThread(LLM(device="cpu", overlap_schedule=True, max_num_seqs=8))
    assert thread.engine.llm.overlap_steps  # the server's steps really run ahead
    with thread as url:
        yield url, thread


def test_concurrent_requests_on_an_overlapped_engine_get_the_offline_answers(
    overlap_server, embedded_llm
):
    url, thread = overlap_server
    prompts = _prompts()[:40]
    expected = [o.text for o in greedy_offline(embedded_llm, prompts, MAX_TOKENS)]
    answers = asyncio.run(_all(url, prompts))  # every third one streamed
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if a != e]
    assert not wrong, f"{len(wrong)} answers differ, e.g. {answers[wrong[0]]!r}"
    assert wait_until_idle(url)["num_blocks_used"] == 0
    assert thread.engine.llm.overlap.inflight is None  # the idle engine drained the last step


def test_stop_strings_and_disconnects_on_an_overlapped_engine(overlap_server, embedded_llm):
    url, thread = overlap_server
    body = {"model": "target", "prompt": "def add(a, b):", "max_tokens": 40, "temperature": 0}
    (want,) = greedy_offline(embedded_llm, [body["prompt"]], 40, stop=["\n"])
    got = httpx.post(url + "/v1/completions", json={**body, "stop": ["\n"]}, timeout=60).json()
    assert got["choices"][0]["text"] == want.text
    before = _aborted(url)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/v1/completions", json={**LONG, "stream": True}) as r:
            lines = r.iter_lines()
            [next(lines) for _ in range(6)]  # a few tokens, then hang up
    health = wait_until_idle(url)
    assert health["num_blocks_used"] == 0 and _aborted(url) == before + 1
    assert thread.engine.llm.block_manager.tables == {}
