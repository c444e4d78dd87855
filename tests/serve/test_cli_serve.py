"""`python -m minirt serve` starts a server a client can use, on 127.0.0.1 by default."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from minirt.ports import free_port


def test_the_serve_command_answers_completions_until_stopped():
    port = free_port()
    flags = ["--port", str(port), "--device", "cpu", "--threads", "1"]
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
        body = {"model": "target", "prompt": "def f():", "max_tokens": 5}
        out = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
        assert out["usage"]["completion_tokens"] >= 1 and out["object"] == "text_completion"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
