"""`python -m minirt serve` starts a server a client can use, on 127.0.0.1 by default."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from minirt import SamplingParams
from minirt.ports import free_port


@pytest.mark.parametrize("extra", [[], ["--overlap"]], ids=["plain", "overlap"])
def test_the_serve_command_answers_completions_until_stopped(extra, embedded_llm):
    """Also with --overlap: the engine process steps ahead and the answer is still greedy's."""
    port = free_port()
    flags = ["--port", str(port), "--device", "cpu", "--threads", "1", *extra]
    cmd = [sys.executable, "-m", "minirt", "serve", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up in 120 s"
                time.sleep(0.2)
        body = {"model": "target", "prompt": "def f():", "max_tokens": 5, "temperature": 0}
        out = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
        assert out["usage"]["completion_tokens"] >= 1 and out["object"] == "text_completion"
        (want,) = embedded_llm.generate(["def f():"], SamplingParams(temperature=0, max_tokens=5))
        assert out["choices"][0]["text"] == want.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
