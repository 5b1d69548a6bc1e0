"""What a route answers: a complete response, a chunked stream, or a hijacked connection.

`http_server` writes them; routes build them (`json_response`, `empty_response`,
`json_lines` for Docker's progress streams). Standard library only, and light:
the agent imports this before it can answer anything (see `http_server`).
"""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import termios
import threading
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads the name as True
if TYPE_CHECKING:  # names for annotations only: importing typing costs ~0.2 s of a TCG guest's boot
    from collections.abc import Callable, Iterable
    from typing import Any

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

# How long a hijacked stream waits for the client to read the 101 before writing output.
HEADER_READ_WAIT = 2.0


class Response:
    """A complete response; 204/304 are sent without a body."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str | None = "application/json",
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers if headers is not None else {}


class StreamResponse:
    """Headers at once, then each chunk as it is produced (chunked transfer encoding).

    `on_client_gone` is called if the client closes its side while the stream
    is still open, so a generator blocked on a subscription can be released.
    """

    def __init__(self, chunks: Iterable[bytes], status: int = 200, content_type: str = "application/json",
                 headers: dict[str, str] | None = None,
                 on_client_gone: Callable[[], None] | None = None) -> None:
        self.chunks = chunks
        self.status = status
        self.content_type = content_type
        self.headers = headers if headers is not None else {}
        self.on_client_gone = on_client_gone


class HijackedConnection:
    """The raw, full-duplex connection after a `101 UPGRADED` (or 200 raw-stream) answer."""

    def __init__(self, sock: socket.socket, rfile: Any) -> None:
        self._sock = sock
        self._rfile = rfile
        self._write_lock = threading.Lock()
        self._closed = False

    def read(self, size: int = 65536) -> bytes:
        """Client bytes, starting with any already buffered after the request; b"" at EOF."""
        try:
            # read1 hands out buffered bytes first, then does at most one recv.
            data: bytes = self._rfile.read1(size)
            return data
        except (OSError, ValueError):
            return b""

    def wait_until_peer_read(self, timeout: float = HEADER_READ_WAIT) -> bool:
        """Wait until the client has read everything sent so far (the 101 answer).

        docker-py parses the 101 with a buffered reader and then reads frames from the raw
        socket: a frame already queued behind the headers lands in that buffer and is lost.
        SIOCOUTQ on a unix socket counts bytes the peer has not read yet.
        """
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while True:
            try:
                pending = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ,
                                                         b"\0\0\0\0"))[0]
            except OSError:
                return False  # not a unix socket (or gone): nothing to wait for
            if pending == 0:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(pause)  # polling the queue length with a deadline
            pause = min(pause * 2, 0.01)

    def write(self, data: bytes) -> None:
        """Send all of `data`; raises OSError (BrokenPipe, ...) when the client went away."""
        with self._write_lock:
            self._sock.sendall(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # SHUT_RDWR also wakes a reader thread blocked in recv().
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class HijackResponse:
    """Take over the connection: `run` gets it once the upgrade answer was flushed."""

    def __init__(self, run: Callable[[HijackedConnection], None], content_type: str = RAW_STREAM) -> None:
        self.run = run
        self.content_type = content_type


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(obj).encode() + b"\n")


def empty_response(status: int = 204) -> Response:
    return Response(status=status, body=b"", content_type=None)


def json_lines(objects: Iterable[Any]) -> Iterable[bytes]:
    """Encode an iterable of JSON objects as newline-separated JSON (Docker's progress streams)."""
    for obj in objects:
        yield json.dumps(obj).encode() + b"\r\n"
