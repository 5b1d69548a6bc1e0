"""The far end of the link in tests: a plain HTTP server on a unix socket.

It stands in for the guest agent (which the real-VM tests exercise) with a
few endpoints that make the link's behaviour observable: echo, a hijacked
upgrade stream with half-close, a controllable /events stream and a
container list for the port forwarder.
"""

from __future__ import annotations

import json
import queue
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path


class FarEndState:
    """What the test controls: the event queue and the container list."""

    def __init__(self) -> None:
        self.containers: list[dict] = []
        self.requests: list[str] = []
        self._subscribers: list[queue.Queue[dict | None]] = []
        # Events published while nobody listens go to the next subscriber.
        self._backlog: list[dict | None] = []
        self._lock = threading.Lock()

    def subscribe(self) -> queue.Queue[dict | None]:
        q: queue.Queue[dict | None] = queue.Queue()
        with self._lock:
            self._subscribers.append(q)
            for ev in self._backlog:
                q.put(ev)
            self._backlog.clear()
        return q

    def unsubscribe(self, q: queue.Queue[dict | None]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def publish(self, event: dict | None) -> None:
        """Send `event` to every /events stream open now (None ends them)."""
        with self._lock:
            if not self._subscribers and event is not None:
                self._backlog.append(event)
            for q in self._subscribers:
                q.put(event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, fmt: str, *args: object) -> None:  # unix peers have no address
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Api-Version", "1.45")
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_HEAD(self) -> None:
        self.server.state.requests.append(f"HEAD {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append(f"GET {self.path}")
        if self.path.endswith("/_ping"):
            self._send(200, b"OK", "text/plain")
        elif self.path.startswith("/containers/json"):
            self._send(200, json.dumps(state.containers).encode())
        elif self.path.startswith("/events"):
            # Subscribe before answering: an event sent after the client has
            # seen the headers must reach it.
            q = state.subscribe()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            try:
                while True:
                    ev = q.get()
                    if ev is None:
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    line = json.dumps(ev).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
            except OSError:
                self.close_connection = True  # the subscriber went away
            finally:
                state.unsubscribe(q)
        elif self.path.endswith("/version"):
            self._send(200, json.dumps({"Version": "far-end-1.0", "ApiVersion": "1.45", "MinAPIVersion": "1.24",
                                        "Os": "linux", "Arch": "amd64", "Components": []}).encode())
        elif self.path.startswith("/big/"):
            n = int(self.path.rsplit("/", 1)[1])
            self._send(200, bytes(range(256)) * (n // 256), "application/octet-stream")
        else:
            self._send(404, b'{"message":"not found"}')

    def do_POST(self) -> None:
        self.server.state.requests.append(f"POST {self.path}")
        body = self._body()
        if self.path == "/echo":
            self._send(200, body, "application/octet-stream")
        elif self.path == "/hijack":
            # Like attach/exec: 101, then raw bytes both ways. Read until the
            # client half-closes, then answer and close our side.
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "tcp")
            self.end_headers()
            self.wfile.flush()
            received = bytearray()
            while True:
                chunk = self.rfile.read1(65536)
                if not chunk:
                    break
                received += chunk
                # Echo each chunk as it arrives (interactive use).
                self.connection.sendall(chunk)
            self.connection.sendall(b"EOF-SEEN:%d" % len(received))
            self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True
        else:
            self._send(404, b'{"message":"not found"}')


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # server_close() would otherwise join every handler thread, and one
    # still waiting on a connection nobody closes would hang the teardown.
    block_on_close = False
    # sshd connects non-blocking: a full backlog fails the channel at once.
    request_queue_size = 128
    state: FarEndState

    def handle_error(self, request, client_address) -> None:
        # Clients that leave mid-answer (killed links, closed streams) are
        # part of the tests; socketserver would print a traceback for each.
        pass


class FarEnd:
    """A running far-end server; `.stop()` shuts it down."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = FarEndState()
        self._server = _Server(str(path), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.state.publish(None)
        self._server.shutdown()
        self._server.server_close()
