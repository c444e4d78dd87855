"""free_port: a TCP port on this machine that the OS says nobody listens on (for servers the
workbench starts: the dashboard, JupyterLab, torch.distributed's rendezvous, the API server)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
