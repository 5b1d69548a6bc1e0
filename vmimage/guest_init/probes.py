"""Is a service answering? One quick attempt each; init calls them until a deadline."""

from __future__ import annotations

import socket


def sshd_answers(host: str = "127.0.0.1", port: int = 22, timeout: float = 0.5) -> bool:
    """True when sshd accepts a connection and sends its SSH-2.0 banner."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


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
