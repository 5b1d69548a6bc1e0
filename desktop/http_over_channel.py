"""Dockyard's own small HTTP/1.1 client, for the few places docker-py cannot serve.

Everywhere else on the host (the tests, the coming desktop app, anything
that lists or runs containers) the Docker API client is docker-py over the
host socket (desktop.engine_client). This module is the exception, kept to
two jobs:

* the SSH link's own calls to the guest agent (`/_ping` before the host
  socket exists, `/events` and `/containers/json` for port forwarding):
  they run over one paramiko channel, which behaves like a socket, where
  docker-py would need a socket-factory hack;
* the boot-critical `_ping` of the host socket by `dockyard machine
  start`/`status`: importing docker-py (requests, urllib3) costs ~0.37 s of
  wall time per CLI run here (median of 11: `python -c "import docker"` 416 ms
  vs 50 ms for this module, 29 ms for an empty interpreter).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runtime.errors import DockyardError


class HttpProtocolError(DockyardError):
    """The far end answered with something that is not valid HTTP/1.1."""


class ByteChannel(Protocol):
    """What we need from a paramiko Channel (or a socket)."""

    def sendall(self, data: bytes) -> None: ...

    def recv(self, n: int) -> bytes: ...


@dataclass
class HttpResponse:
    """Status line and headers (names lower-cased) of a response."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


class _Reader:
    """Buffered reads on top of recv(), which returns arbitrary chunk sizes."""

    def __init__(self, chan: ByteChannel) -> None:
        self._chan = chan
        self._buf = b""
        self.eof = False

    def _fill(self) -> bool:
        data = self._chan.recv(65536)
        if not data:
            self.eof = True
            return False
        self._buf += data
        return True

    def readline(self, limit: int = 65536) -> bytes:
        while b"\n" not in self._buf:
            if len(self._buf) > limit:
                raise HttpProtocolError("HTTP line too long from the guest agent")
            if not self._fill():
                line, self._buf = self._buf, b""
                return line
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise HttpProtocolError(f"connection closed {n - len(self._buf)} bytes short of the body")
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_all(self) -> bytes:
        while self._fill():
            pass
        data, self._buf = self._buf, b""
        return data

    def read_some(self) -> bytes:
        if not self._buf:
            self._fill()
        data, self._buf = self._buf, b""
        return data


def build_request(method: str, path: str, body: bytes | None, headers: dict[str, str] | None = None) -> bytes:
    """Serialise a request; `Connection: close` because each channel carries one exchange."""
    lines = [f"{method} {path} HTTP/1.1", "Host: dockyard", "Connection: close"]
    merged = {"User-Agent": "dockyard-desktop"}
    if body is not None:
        merged["Content-Type"] = "application/json"
        merged["Content-Length"] = str(len(body))
    merged.update(headers or {})
    lines += [f"{k}: {v}" for k, v in merged.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class HttpExchange:
    """One request/response on a channel; the body can be read whole or as a stream."""

    def __init__(self, chan: ByteChannel) -> None:
        self._reader = _Reader(chan)
        self.response: HttpResponse | None = None

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> None:
        self._reader._chan.sendall(build_request(method, path, body, headers))

    def read_head(self) -> HttpResponse:
        """Read the status line and headers (skipping 1xx interim responses except 101)."""
        while True:
            status_line = self._reader.readline().decode("latin-1").strip()
            if not status_line:
                raise HttpProtocolError("the guest agent closed the connection without an HTTP response")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise HttpProtocolError(f"bad HTTP status line from the guest agent: {status_line!r}")
            headers: dict[str, str] = {}
            while True:
                line = self._reader.readline().decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                continue
            self.response = HttpResponse(status, parts[2] if len(parts) > 2 else "", headers)
            return self.response

    def iter_body(self) -> Iterator[bytes]:
        """Yield body chunks as they arrive (chunked, sized or until EOF)."""
        assert self.response is not None, "read_head() first"
        headers = self.response.headers
        if self.response.status in (204, 304):
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = self._reader.readline()
                if not size_line:
                    raise HttpProtocolError("connection closed inside a chunked body")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self._reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self._reader.read_exact(size)
                self._reader.read_exact(2)
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining > 0:
                chunk = self._reader.read_some()
                if not chunk:
                    raise HttpProtocolError(f"connection closed {remaining} bytes short of the body")
                if len(chunk) > remaining:
                    chunk = chunk[:remaining]
                remaining -= len(chunk)
                yield chunk
        else:
            while True:
                chunk = self._reader.read_some()
                if not chunk:
                    return
                yield chunk

    def read_body(self) -> bytes:
        return b"".join(self.iter_body())


def iter_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Re-split a chunk stream into newline-terminated lines (without the newline)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            line = line.rstrip(b"\r")
            if line:
                yield line
    if pending.strip():
        yield pending.strip()


def decode_json(body: bytes) -> object:
    """JSON from a response body, with an error that names the problem."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HttpProtocolError(f"the guest agent sent invalid JSON: {exc}") from None


def unix_request(socket_path: Path, method: str, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """One request to the engine behind a unix socket: (status, body). Raises OSError or HttpProtocolError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        exchange = HttpExchange(sock)
        exchange.send(method, path)
        head = exchange.read_head()
        return head.status, exchange.read_body()


def ping(socket_path: Path, timeout: float = 10.0) -> str | None:
    """None when the engine behind `socket_path` answers GET /_ping with 200, else a short reason."""
    try:
        status, body = unix_request(socket_path, "GET", "/_ping", timeout)
    except OSError as err:
        return f"{socket_path}: {err.strerror or err}"
    except HttpProtocolError as err:
        return f"{socket_path}: bad HTTP reply ({err})"
    if status == 200:
        return None
    return f"/_ping answered {status}: {body[:200].decode(errors='replace').strip()}"
