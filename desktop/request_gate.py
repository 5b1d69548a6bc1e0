"""Watches the client-to-engine byte stream of one host-socket connection for container creates.

The host socket pipes bytes unchanged; this scanner follows the HTTP/1.1
request framing in that stream (request heads, Content-Length and chunked
bodies) so that only `POST /containers/create` bodies are held back and
checked (desktop.mounts_policy). Every other body is counted and passed on as
it arrives, so uploads (build contexts, image loads, `docker cp`) are neither
buffered nor slowed. Once a request upgrades the connection (attach, exec
start: the hijacked stream), the rest is raw bytes and passes through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

MAX_HEAD = 64 * 1024          # bigger heads are not Docker clients: pass them through unchecked
MAX_CREATE_BODY = 4 * 1024 * 1024
_CREATE_PATH = re.compile(rb"^(/v[0-9.]+)?/containers/create(\?|$)")

Check = Callable[[bytes], str | None]   # a create body -> None (pass) or the refusal message


class Refusal(Exception):
    """A create request the check refused: answer `message` to the client instead of forwarding it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Chunked:
    """Follows a chunked body's framing; optionally keeps the decoded payload."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.payload = bytearray()
        self._line = bytearray()
        self._left = 0          # data bytes left in the current chunk (+2 for its CRLF)
        self._trailers = False
        self.done = False

    def feed(self, data: bytes) -> int:
        """Consume from `data`; returns how many bytes belong to the body (all, until it ends)."""
        i = 0
        while i < len(data) and not self.done:
            if self._left:
                take = min(self._left, len(data) - i)
                if self.keep:
                    # The last two bytes of each chunk are its CRLF, not payload.
                    data_part = max(0, min(take, self._left - 2))
                    self.payload += data[i:i + data_part]
                self._left -= take
                i += take
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                return len(data)
            line = bytes(self._line + data[i:end]).strip()
            self._line.clear()
            i = end + 1
            if self._trailers:
                if not line:
                    self.done = True
                continue
            size = int(line.split(b";", 1)[0] or b"0", 16)
            if size == 0:
                self._trailers = True   # then trailer lines until an empty one
            else:
                self._left = size + 2
        return i


class RequestGate:
    """Feed it what the client sends; it returns what may go on to the engine.

    `feed` raises Refusal when a create request fails the check; the
    connection must then be answered and closed (nothing of it was forwarded).
    """

    def __init__(self, check: Check) -> None:
        self.check = check
        self._head = bytearray()
        self._raw = False                  # upgraded or unparseable: no more framing
        self._body_left = 0                # Content-Length bytes still to pass on
        self._chunked: _Chunked | None = None
        self._held: bytearray | None = None   # a create request being held back: head + body so far
        self._held_head = 0
        self._held_length = 0                 # its Content-Length; -1: chunked

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._raw:
                out += view
                break
            if self._held is not None:
                view = self._feed_held(view, out)
            elif self._body_left:
                take = min(self._body_left, len(view))
                out += view[:take]
                self._body_left -= take
                view = view[take:]
            elif self._chunked is not None:
                used = self._chunked.feed(bytes(view))
                out += view[:used]
                view = view[used:]
                if self._chunked.done:
                    self._chunked = None
            else:
                view = self._feed_head(view, out)
        return bytes(out)

    def _feed_head(self, view: memoryview, out: bytearray) -> memoryview:
        start = len(self._head)
        self._head += view
        end = self._head.find(b"\r\n\r\n", max(0, start - 3))
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._raw = True
                out += self._head
                self._head.clear()
            return view[len(view):]
        head = bytes(self._head[:end + 4])
        rest = memoryview(bytes(self._head[end + 4:]))
        self._head.clear()
        method, path, headers = _parse_head(head)
        length = headers.get(b"content-length", b"0")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        upgrade = b"upgrade" in headers or b"upgrade" in headers.get(b"connection", b"").lower()
        if method is None or upgrade or not (length.strip().isdigit() or chunked):
            # After an upgrade the hijacked stream follows (attach, exec start); an
            # unknown framing cannot be followed: either way, raw bytes from here on.
            self._raw = True
            out += head
            return rest
        if method == b"POST" and _CREATE_PATH.match(path):
            self._held = bytearray(head)
            self._held_head = len(head)
            self._held_length = -1 if chunked else int(length)
            self._chunked = _Chunked(keep=True) if chunked else None
            if self._held_length == 0:
                out += self._held
                self._held = None
            return rest
        out += head
        if chunked:
            self._chunked = _Chunked(keep=False)
        else:
            self._body_left = int(length)
        return rest

    def _feed_held(self, view: memoryview, out: bytearray) -> memoryview:
        """Add to the held create request; once whole, check it and pass it on (or refuse it)."""
        held = self._held
        assert held is not None
        if self._chunked is not None:
            used = self._chunked.feed(bytes(view))
            held += view[:used]
            if not self._chunked.done:
                return view[used:]
            body = bytes(self._chunked.payload)
            self._chunked = None
            rest = view[used:]
        else:
            take = min(self._held_head + self._held_length - len(held), len(view))
            held += view[:take]
            if len(held) < self._held_head + self._held_length:
                return view[take:]
            body = bytes(held[self._held_head:])
            rest = view[take:]
        self._held = None
        if len(body) <= MAX_CREATE_BODY:
            message = self.check(body)
            if message is not None:
                raise Refusal(message)
        out += held
        return rest


def _parse_head(head: bytes) -> tuple[bytes | None, bytes, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None, b"", {}
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1], headers


def error_response(status: int, reason: str, message: str) -> bytes:
    """A complete Docker-style JSON error answer that closes the connection."""
    body = json.dumps({"message": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
