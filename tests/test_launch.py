"""README command 1 runs `python -m minirt launch`: both servers come up, Ctrl-C stops both."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request


def test_launch_serves_dashboard_and_jupyterlab_and_ctrl_c_stops_both():
    proc = subprocess.Popen(
        [sys.executable, "-m", "minirt", "launch"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    urls, lines = [], []
    try:
        deadline = time.monotonic() + 150
        while len(urls) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            urls += re.findall(r"http://127\.0\.0\.1:\d+/\S*", line)
        assert len(urls) == 2, "".join(lines[-30:])
        for url in urls:
            with urllib.request.urlopen(url, timeout=30) as r:
                assert r.status == 200
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # the children are gone too: their ports no longer answer
    for url in urls:
        try:
            urllib.request.urlopen(url, timeout=2)
            raise AssertionError(f"{url} still answers after Ctrl-C")
        except OSError:
            pass
