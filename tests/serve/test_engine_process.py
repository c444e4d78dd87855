"""The server with its engine in a process of its own: same answers as offline, tokens streamed,
blocks freed on disconnect, the step log and state read across the pipe, the child gone at close."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serve.conftest import greedy_offline, wait_until_idle

PROMPTS = ["def fib(n):", "class Stack:\n", "import os\n", "for i in range(", "x = [1, 2", "# a"]


@pytest.fixture(scope="module")
def process_server():
    from minirt.serve.engine_proc import EngineProcess
    from minirt.serve.server import ServerThread

    engine = EngineProcess(None, max_waiting=8, threads=1, device="cpu", max_num_seqs=4)
    thread = ServerThread(engine=engine)
    with thread as url:
        yield url, engine
    assert engine._proc is None


def _complete(url: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": "target", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(url + "/v1/completions", json=body, timeout=60).json()


def test_concurrent_answers_equal_the_offline_engines(process_server, embedded_llm):
    url, engine = process_server
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(pool.map(lambda p: _complete(url, p, 24), PROMPTS))
    want = greedy_offline(embedded_llm, PROMPTS, 24)  # not serve_llm: a thread server owns it
    assert [a["choices"][0]["text"] for a in answers] == [w.text for w in want]
    tokens = [a["usage"]["completion_tokens"] for a in answers]
    assert tokens == [len(w.token_ids) for w in want]
    health = wait_until_idle(url)
    assert health["num_blocks_used"] == 0 and health["num_steps"] > 0
    steps = httpx.get(url + "/steps").json()
    assert len(steps["steps"]) == health["num_steps"]  # every step logged, across the pipe
    assert steps["t0_s"] is not None  # the engine process's clock zero crossed the pipe too


def test_a_stream_closed_mid_answer_frees_its_blocks_in_the_engine_process(process_server):
    url, engine = process_server
    body = {"model": "target", "prompt": "def main():", "max_tokens": 900, "ignore_eos": True,
            "stream": True}  # fmt: skip
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: {") for line in got)
    health = wait_until_idle(url)
    assert health["num_blocks_used"] == 0 and health["num_running"] == 0
    assert engine._requests == {}  # the abort came back as the request's last delta


def test_an_engine_that_cannot_start_says_why(tmp_path):
    from minirt.serve.engine_proc import EngineProcess

    engine = EngineProcess(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(RuntimeError, match="could not start.*no-such-model"):
        engine.start()
