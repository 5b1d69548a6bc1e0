"""The HTTP framework on its own: framing, routing, streaming, hijack (no engine involved).

Routes here are test routes registered on a fresh Router; the attach pump is
driven by a small in-test AttachSession double because this file tests the
framework, not the engine (the end-to-end files use the real Engine).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import threading
from collections.abc import Iterator

import pytest

from guest_agent.http_request import Request
from guest_agent.http_response import (
    MULTIPLEXED_STREAM,
    HijackedConnection,
    HijackResponse,
    Response,
    StreamResponse,
    json_response,
)
from guest_agent.http_server import Router
from guest_agent.stdio_stream import frame, pump_session
from runtime.errors import Conflict, InvalidArgument

from .rawhttp import RawConnection, request_bytes


def echo(request: Request) -> Response:
    return json_response({"method": request.method, "path": request.path,
                          "params": request.params, "query": request.query,
                          "body": request.body.decode(), "version": request.api_version})


def _basic_router() -> Router:
    router = Router()
    router.get("/echo", echo)
    router.post("/echo", echo)
    router.get("/images/{name:path}/json", echo)
    router.get("/containers/{id}/json", echo)

    def boom(request: Request) -> Response:
        raise RuntimeError("secret internal detail")

    def conflict(request: Request) -> Response:
        raise Conflict("name already in use")

    def needs_json(request: Request) -> Response:
        return json_response(request.json_object())

    router.get("/boom", boom)
    router.get("/conflict", conflict)
    router.post("/json", needs_json)
    return router


def test_keep_alive_serves_several_requests_on_one_connection(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    for i in range(3):
        conn.send(request_bytes("POST", "/echo", body=f"body{i}".encode()))
        status, headers, body = conn.read_response()
        assert status == 200
        assert headers["api-version"] == "1.45"
        assert headers["ostype"] == "linux"
        assert json.loads(body)["body"] == f"body{i}"
    conn.close()


def test_version_prefix_is_stripped_and_checked(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/v1.45/echo?a=1&a=2"))
    status, _, body = conn.read_response()
    data = json.loads(body)
    assert status == 200 and data["path"] == "/echo" and data["version"] == [1, 45]
    assert data["query"] == {"a": ["1", "2"]}
    conn.send(request_bytes("GET", "/v1.50/echo"))
    assert conn.read_response()[0] == 200
    conn.send(request_bytes("GET", "/v1.51/echo"))
    status, _, body = conn.read_response()
    assert status == 400 and "too new" in json.loads(body)["message"]
    conn.send(request_bytes("GET", "/v1.12/echo"))
    status, _, body = conn.read_response()
    assert status == 400 and "too old" in json.loads(body)["message"]
    conn.close()


def test_path_parameters_single_segment_and_greedy(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/v1.45/images/127.0.0.1:5000/busybox:latest/json"))
    status, _, body = conn.read_response()
    assert status == 200
    assert json.loads(body)["params"] == {"name": "127.0.0.1:5000/busybox:latest"}
    conn.send(request_bytes("GET", "/containers/abc%20def/json"))
    assert json.loads(conn.read_response()[2])["params"] == {"id": "abc def"}
    conn.close()


def test_chunked_request_body_is_decoded(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    payload = b'{"Image": "busybox", "Cmd": ["echo", "hi"]}'
    conn.send(request_bytes("POST", "/echo", body=payload, chunked=True))
    status, _, body = conn.read_response()
    assert status == 200 and json.loads(body)["body"] == payload.decode()
    # The connection is still usable afterwards: the chunked body was consumed exactly.
    conn.send(request_bytes("GET", "/echo"))
    assert conn.read_response()[0] == 200
    conn.close()


def test_unknown_path_404_and_wrong_method_405(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/nothing/here"))
    status, headers, body = conn.read_response()
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"message": "page not found"}
    conn.send(request_bytes("DELETE", "/echo"))
    assert conn.read_response()[0] == 405
    conn.close()


def test_errors_become_json_and_the_server_keeps_serving(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/boom"))
    status, _, body = conn.read_response()
    message = json.loads(body)["message"]
    assert status == 500 and "secret internal detail" not in message and "RuntimeError" in message
    conn.send(request_bytes("GET", "/conflict"))
    status, _, body = conn.read_response()
    assert status == 409 and json.loads(body) == {"message": "name already in use"}
    conn.send(request_bytes("POST", "/json", body=b'{"Image": '))
    status, _, body = conn.read_response()
    assert status == 400 and "invalid JSON" in json.loads(body)["message"]
    conn.send(request_bytes("POST", "/json", body=b'[1, 2]'))
    assert conn.read_response()[0] == 400
    conn.send(request_bytes("GET", "/echo"))
    assert conn.read_response()[0] == 200
    conn.close()


def test_garbage_request_line_does_not_kill_the_server(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(b"\x00\x01garbage\r\n\r\n")
    status, _ = conn.read_head()
    assert status == 400
    conn.close()
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/echo"))
    assert conn.read_response()[0] == 200
    conn.close()


def test_head_answers_headers_only(serve_router):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(request_bytes("HEAD", "/echo"))
    status, headers = conn.read_head()
    assert status == 200 and int(headers["content-length"]) > 0
    # No body followed: the next response starts right away.
    conn.send(request_bytes("GET", "/echo"))
    assert conn.read_response()[0] == 200
    conn.close()


def test_socket_is_private(serve_router):
    path = serve_router(_basic_router())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_stream_sends_headers_and_each_chunk_before_the_end(serve_router):
    release = threading.Event()
    router = Router()

    def stream(request: Request) -> StreamResponse:
        def chunks() -> Iterator[bytes]:
            yield b'{"step": 1}\n'
            release.wait(timeout=30)
            yield b'{"step": 2}\n'
        return StreamResponse(chunks=chunks())

    router.get("/stream", stream)
    path = serve_router(router)
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/stream"))
    status, headers = conn.read_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    # The first chunk arrives while the generator is still blocked.
    assert conn.read_chunk() == b'{"step": 1}\n'
    assert not release.is_set()
    release.set()
    assert conn.read_chunk() == b'{"step": 2}\n'
    assert conn.read_chunk() is None
    conn.close()


def test_stream_client_gone_callback_runs_when_client_leaves(serve_router):
    gone = threading.Event()
    router = Router()

    def stream(request: Request) -> StreamResponse:
        def chunks() -> Iterator[bytes]:
            yield b"first\n"
            gone.wait(timeout=30)
        return StreamResponse(chunks=chunks(), on_client_gone=gone.set)

    router.get("/events", stream)
    path = serve_router(router)
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/events"))
    conn.read_head()
    assert conn.read_chunk() == b"first\n"
    conn.close()
    assert gone.wait(timeout=10)


class FakeAttachSession:
    """Framework test double for runtime.engine.AttachSession: echoes stdin to stdout."""

    def __init__(self) -> None:
        self.out: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self.stdin_closed = threading.Event()
        self.closed = threading.Event()
        self.received = b""

    def output(self) -> Iterator[tuple[int, bytes]]:
        while True:
            item = self.out.get()
            if item is None:
                return
            yield item

    def write_stdin(self, data: bytes) -> None:
        self.received += data
        self.out.put((1, data.upper()))

    def close_stdin(self) -> None:
        self.stdin_closed.set()
        self.out.put((2, b"stdin closed"))
        self.out.put(None)

    def close(self) -> None:
        self.closed.set()


def test_hijack_flushes_101_first_then_runs_full_duplex(serve_router):
    headers_seen = threading.Event()
    session = FakeAttachSession()
    router = Router()

    def attach(request: Request) -> HijackResponse:
        def run(conn: HijackedConnection) -> None:
            # Nothing is written until the client has parsed the complete 101 answer.
            headers_seen.wait(timeout=30)
            session.out.put((1, b"hello\n"))
            pump_session(conn, session, multiplexed=True, forward_stdin=True)
        return HijackResponse(run=run, content_type=MULTIPLEXED_STREAM)

    router.post("/containers/{id}/attach", attach)
    path = serve_router(router)
    conn = RawConnection(path)
    # Stdin bytes in the same packet as the request: they sit in the server's read buffer.
    conn.send(request_bytes("POST", "/v1.45/containers/x/attach?stream=1&stdin=1&stdout=1",
                            headers={"Connection": "Upgrade", "Upgrade": "tcp"}) + b"early ")
    status, headers = conn.read_head()
    assert status == 101
    assert headers["content-type"] == MULTIPLEXED_STREAM
    assert headers["upgrade"] == "tcp" and headers["connection"].lower() == "upgrade"
    assert conn.buf == b""  # no frame was sent together with the 101
    headers_seen.set()
    conn.send(b"late")
    conn.sock.shutdown(__import__("socket").SHUT_WR)
    data = conn.read_to_eof()
    frames = []
    while data:
        stream, size = data[0], int.from_bytes(data[4:8], "big")
        frames.append((stream, data[8:8 + size]))
        data = data[8 + size:]
    stdout = b"".join(d for s, d in frames if s == 1)
    assert stdout.startswith(b"hello\n")
    assert stdout[len(b"hello\n"):] == b"EARLY LATE"
    assert frames[-1] == (2, b"stdin closed")
    assert session.received == b"early late"
    assert session.stdin_closed.is_set()
    conn.close()


def test_hijack_without_upgrade_header_answers_200_raw(serve_router):
    router = Router()

    def attach(request: Request) -> HijackResponse:
        def run(conn: HijackedConnection) -> None:
            conn.write(b"raw output")
        return HijackResponse(run=run)

    router.post("/attach", attach)
    path = serve_router(router)
    conn = RawConnection(path)
    conn.send(request_bytes("POST", "/attach"))
    status, headers = conn.read_head()
    assert status == 200 and headers["content-type"] == "application/vnd.docker.raw-stream"
    assert conn.read_to_eof() == b"raw output"
    conn.close()


def test_hijack_client_leaving_detaches_the_session(serve_router):
    session = FakeAttachSession()
    router = Router()

    def attach(request: Request) -> HijackResponse:
        return HijackResponse(run=lambda conn: pump_session(conn, session, True, False))

    router.post("/attach", attach)
    path = serve_router(router)
    conn = RawConnection(path)
    conn.send(request_bytes("POST", "/attach", headers={"Upgrade": "tcp", "Connection": "Upgrade"}))
    assert conn.read_head()[0] == 101
    conn.close()
    # Output written after the client left fails, and the pump detaches the session.
    for _ in range(200):
        session.out.put((1, b"x" * 65536))
        if session.closed.wait(timeout=0.05):
            break
    assert session.closed.is_set()


def test_frame_header_layout():
    assert frame(2, b"abc") == b"\x02\x00\x00\x00\x00\x00\x00\x03abc"


def test_request_filters_accept_both_shapes():
    def req(filters: str) -> Request:
        return Request("GET", "/x", {"filters": [filters]}, {}, b"")

    assert req('{"status": ["exited"], "label": {"a=b": true, "c": false}}').filters() == \
        {"status": ["exited"], "label": ["a=b"]}
    try:
        req("{not json").filters()
    except InvalidArgument as err:
        assert "invalid filters" in err.message
    else:
        raise AssertionError("bad filters were accepted")


def test_oversized_body_is_refused_without_buffering_it(serve_router):
    from guest_agent.http_request import MAX_BODY

    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
    status, _, body = conn.read_response()
    assert status == 413 and "larger than" in json.loads(body)["message"]
    assert conn.read_to_eof() == b""  # the unread body makes the server close the connection
    conn.close()


# Requests that cannot be framed: each gets its 4xx (or 501) as JSON, and the connection
# closes, since where the next request would start is unknown.
_HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\n"
MALFORMED_FRAMING = [
    (_HEAD + b"Content-Length: -1\r\n\r\n{}", 400, "invalid Content-Length"),
    (_HEAD + b"Content-Length: abc\r\n\r\n{}", 400, "invalid Content-Length"),
    (_HEAD + b"Content-Length: +2\r\n\r\n{}", 400, "invalid Content-Length"),
    (_HEAD + b"Content-Length: 1_0\r\n\r\n{}", 400, "invalid Content-Length"),
    (_HEAD + b"Content-Length: 10\r\n\r\n{}", 400, "ended after 2 of 10 bytes"),
    (_HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 501, "unsupported transfer encoding"),
    (_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "bad chunk size"),
    (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n", 400, "bad chunk size"),
    (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400, "missing CRLF"),
    (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n8\r\n{}", 400, "inside a chunk of 8 bytes"),
    (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", 400, "before its last chunk"),
    (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n", 400, "bad chunk size"),
    (_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n", 400, "inside its trailers"),
    (_HEAD + b"Content-Length: 2\r\n", 400, "inside its headers"),
    (b"GET /echo HTTP/1.1", 400, "inside its request line"),
    (b"GET /echo HTTP/2.0\r\n\r\n", 400, "unsupported HTTP version"),
    (b"GET /echo\r\n\r\n", 400, "bad request line"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "request line too long"),
    (_HEAD + b"X: " + b"a" * 70000 + b"\r\n\r\n", 431, "header line too long"),
    (_HEAD + b"X: y\r\n" * 101 + b"\r\n", 431, "too many headers"),
    (_HEAD + b"no colon here\r\n\r\n", 400, "malformed header line"),
    (_HEAD + b" Folded: y\r\n\r\n", 400, "malformed header line"),
]


@pytest.mark.parametrize("raw, status, words", MALFORMED_FRAMING,
                         ids=[repr(r[:60]) + "..." for r, _, _ in MALFORMED_FRAMING])
def test_malformed_framing_gets_its_4xx_and_the_server_keeps_serving(serve_router, raw, status, words):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(raw)
    conn.sock.shutdown(socket.SHUT_WR)   # the request ends here, as a truncating client's does
    got, headers, body = conn.read_response()
    assert (got, words in json.loads(body)["message"]) == (status, True), body
    assert headers.get("connection") == "close" and conn.read_to_eof() == b""
    conn.close()
    conn = RawConnection(path)
    conn.send(request_bytes("GET", "/echo"))
    assert conn.read_response()[0] == 200
    conn.close()


@pytest.mark.parametrize("body, words", [
    (b"[" * 100000, "nested too deeply"),
    (b'{"a": "\xff"}', "invalid JSON"),
    (b'{"a": 1', "invalid JSON"),
    (b"\xef\xbb\xbf{}", "invalid JSON"),
    (b"{\x00}\x00", "invalid JSON"),
    (b'{"a": NaN}', "invalid JSON"),
    (b'{"a": 1e999}', "invalid JSON"),
    (b'{"a": ' + b"1" * 5000 + b"}", "invalid JSON"),
])
def test_bodies_that_are_not_json_are_400(serve_router, body, words):
    path = serve_router(_basic_router())
    conn = RawConnection(path)
    conn.send(request_bytes("POST", "/json", body))
    status, _, answer = conn.read_response()
    assert status == 400 and words in json.loads(answer)["message"], answer
    conn.close()


def test_a_client_stalling_inside_a_request_is_answered_408_and_let_go(serve_router, monkeypatch):
    """A request that stops arriving half-way frees its connection thread after
    REQUEST_READ_TIMEOUT; an idle connection between requests is kept (clients pool them)."""
    from guest_agent import http_server

    monkeypatch.setattr(http_server, "REQUEST_READ_TIMEOUT", 0.2)
    path = serve_router(_basic_router())
    idle = RawConnection(path)
    for partial in (b"POST /echo HTTP/1.1\r\nHost: x\r\n",
                    b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\n{",
                    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"):
        conn = RawConnection(path)
        conn.send(partial)   # and then nothing: the socket stays open
        status, headers, body = conn.read_response()
        assert status == 408 and "not complete after" in json.loads(body)["message"]
        assert conn.read_to_eof() == b""
        conn.close()
    idle.send(request_bytes("GET", "/echo"))   # the idle connection still serves
    assert idle.read_response()[0] == 200
    idle.close()
