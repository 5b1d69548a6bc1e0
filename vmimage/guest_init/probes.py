"""Does the agent answer? One quick attempt; the init calls it until the agent is up."""

from __future__ import annotations

import socket


def agent_answers(path: str, timeout: float = 2.0) -> bool:
    """True when the Docker API on the unix socket answers GET /_ping with HTTP."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: dockyard\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False
