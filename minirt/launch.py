"""Launch the workbench: the Streamlit dashboard and JupyterLab, side by side, on this machine.

Both bind to 127.0.0.1 on free ports; the URLs are printed; Ctrl-C (or SIGTERM) stops both.
Nothing here needs a GPU or the network: the dashboard runs the embedded model.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from minirt.ports import free_port

ROOT = Path(__file__).resolve().parent.parent  # the repository (an editable install)


def commands(dash_port: int, lab_port: int, token: str, root: Path = ROOT) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "dashboard": [
            py, "-m", "streamlit", "run", str(root / "viz_app" / "Home.py"),
            "--server.address", "127.0.0.1", "--server.port", str(dash_port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--logger.level", "warning",
        ],
        "jupyterlab": [
            py, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
            "--port", str(lab_port), f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}", "--ServerApp.log_level=WARN",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # containers and CI run as root
        ],
    }  # fmt: skip


def wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.3)
    return False


def stop(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.terminate()
    for p in procs.values():
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def launch(dash_port: int | None = None, lab_port: int | None = None, root: Path = ROOT) -> int:
    ports = {"dashboard": dash_port or free_port(), "jupyterlab": lab_port or free_port()}
    token = secrets.token_hex(16)  # JupyterLab runs code: only whoever has the URL gets in
    cmds = commands(ports["dashboard"], ports["jupyterlab"], token, root)
    # Own sessions: a terminal's Ctrl-C reaches only us, and we stop the servers in order
    # (JupyterLab would otherwise stop to ask "Shutdown this server?").
    procs = {name: subprocess.Popen(cmd, cwd=root, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
             for name, cmd in cmds.items()}  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    # A shell starts background jobs with SIGINT ignored, and Python keeps that: restore Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for name, proc in procs.items():
            if not wait_listening(ports[name], proc):
                print(f"error: {name} did not start (exit code {proc.poll()})", file=sys.stderr)
                return 1
        print("\nminirt workbench is running (Ctrl-C stops both):")
        print(f"  dashboard   http://127.0.0.1:{ports['dashboard']}/")
        lab_url = f"http://127.0.0.1:{ports['jupyterlab']}/lab/tree"
        print(f"  notebooks   {lab_url}/notebooks?token={token}")
        print(f"  labs        {lab_url}/labs?token={token}  (your lab notebooks)\n", flush=True)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        print("a server stopped; shutting down the other", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
        return 0
    finally:
        stop(procs)
