"""A deliberately low-level HTTP client for the framework tests: raw bytes over a unix socket."""

from __future__ import annotations

import socket
from pathlib import Path


class RawConnection:
    """Send raw request bytes and parse responses by hand, so framing itself is under test."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before {marker!r}; have {self.buf!r}")
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        data, self.buf = self.buf, b""
        return data

    def read_head(self) -> tuple[int, dict[str, str]]:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        return status, headers

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.read_head()
        if "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                chunk = self.read_chunk()
                if chunk is None:
                    break
                body += chunk
            return status, headers, body
        n = int(headers.get("content-length", "0"))
        return status, headers, self.read_exact(n)

    def read_chunk(self) -> bytes | None:
        """The next chunk of a chunked body; None after the last (zero-size) chunk."""
        size = int(self.read_until(b"\r\n").strip(), 16)
        if size == 0:
            self.read_until(b"\r\n")
            return None
        data = self.read_exact(size)
        self.read_exact(2)
        return data

    def close(self) -> None:
        self.sock.close()


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  chunked: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: api.moby.localhost"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b""
        for i in range(0, len(body), 5):
            part = body[i:i + 5]
            payload += b"%x\r\n%s\r\n" % (len(part), part)
        payload += b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
