"""Asks the Docker-compatible engine behind a host unix socket whether it answers `_ping`."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (the engine's API socket)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def ping(socket_path: Path, timeout: float = 10.0) -> str | None:
    """None when GET /_ping answers 200 "OK", else a short reason."""
    conn = UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", "/_ping", headers={"Host": "api.moby.localhost"})
        resp = conn.getresponse()
        body = resp.read(200)
        if resp.status == 200:
            return None
        return f"/_ping answered {resp.status}: {body.decode(errors='replace').strip()}"
    except OSError as err:
        return f"{socket_path}: {err.strerror or err}"
    except http.client.HTTPException as err:
        return f"{socket_path}: bad HTTP reply ({err})"
    finally:
        conn.close()
