"""A live server on the embedded model (a real socket on a free port), shared by the tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def serve_llm():
    """An engine of its own: the server's thread owns it while the server runs."""
    from minirt import LLM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the embedded model is tiny: one thread, the other core for HTTP
    yield LLM(device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def server(serve_llm):
    """(url, ServerThread) of a server that stays up for the whole session."""
    from minirt.serve.server import ServerThread

    thread = ServerThread(serve_llm)
    with thread as url:
        yield url, thread


def greedy_offline(llm, prompts, max_tokens: int, **kw):
    """What `LLM.generate` answers to the same greedy requests (the reference)."""
    from minirt import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)
    return llm.generate(prompts, params, use_tqdm=False)


@pytest.fixture(scope="session")
def small_server():
    """A server that holds at most 3 requests: a batch of 2 and a waiting queue of 1."""
    from minirt import LLM
    from minirt.serve.server import ServerThread

    thread = ServerThread(LLM(device="cpu", max_num_seqs=2), max_waiting=1)
    with thread as url:
        yield url, thread


def wait_until_idle(url: str, timeout_s: float = 20.0) -> dict:
    """Poll /health until no request runs or waits and no KV block is held; return it."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(url + "/health").json()
        idle = health["num_running"] == health["num_waiting"] == health["num_blocks_used"] == 0
        if idle or time.monotonic() > deadline:
            return health
        time.sleep(0.05)
