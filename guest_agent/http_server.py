"""A threaded HTTP/1.1 server on a unix socket, shaped for the Docker Engine API.

It knows nothing about containers: routes get a `Request` (read and framed in
`http_request`) and return one of the response types of `http_response` (plain,
streamed with chunked encoding, or a hijacked raw connection); this module routes
them and writes the answer. One thread per connection; keep-alive; request
bodies by Content-Length or chunked; an optional `/v1.NN` prefix on every path.

The HTTP/1.1 request parsing is our own, not http.server's: that module pulls in
http.client, email and ssl, about a third of the agent's start-up in a TCG guest,
where the agent's start is the longest step of a boot. Nor are dataclasses
used here (with inspect, ~0.1 s there): the agent imports this module before
it can answer anything.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import socketserver
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

from runtime.errors import InvalidArgument

from .api_errors import error_response_for
from .http_request import (
    MAX_BODY,
    MAX_LINE,
    BadRequest,
    BodyStream,
    BodyTooLarge,
    Request,
    parse_request_line,
    read_body,
    read_headers,
)
from .http_response import (
    HijackedConnection,
    HijackResponse,
    Response,
    StreamResponse,
    empty_response,
    json_response,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads the name as True
if TYPE_CHECKING:  # names for annotations only: importing typing costs ~0.2 s of a TCG guest's boot
    from collections.abc import Callable
    from typing import Any, Protocol

log = logging.getLogger(__name__)

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"
MAX_ACCEPTED_API_VERSION = (1, 50)
MIN_ACCEPTED_API_VERSION = (1, 24)
SERVER_HEADER = "Dockyard/0.1.0 (linux)"

# How long the rest of a request (headers, body) may take once its first line arrived: a
# client that stops half-way would otherwise hold its connection thread forever. Idle
# keep-alive connections between requests have no limit (docker-py pools them).
REQUEST_READ_TIMEOUT = 60.0


if TYPE_CHECKING:  # annotation-only aliases (see the typing import above)
    AnyResponse = Response | StreamResponse | HijackResponse
    Handler = Callable[[Request], AnyResponse]

    class Resolver(Protocol):
        """What the server needs of its router: a Router, or the agent's StartupRouter."""

        def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]: ...


# --------------------------------------------------------------------------- routing


class _Route:
    """One route; its regex is built on the first path that could match it (start-up cost)."""

    __slots__ = ("method", "pattern", "handler", "prefix", "literal", "_regex")

    def __init__(self, method: str, pattern: str, handler: Handler) -> None:
        self.method = method
        self.pattern = pattern
        self.handler = handler
        brace = pattern.find("{")
        # Every match starts with the text before the first parameter; a pattern without
        # parameters matches itself, with or without a trailing slash.
        self.prefix = pattern if brace < 0 else pattern[:brace]
        self.literal = brace < 0
        self._regex: re.Pattern[str] | None = None

    def match(self, path: str) -> dict[str, str] | None:
        """The raw (still quoted) parameters if `path` matches, else None."""
        if self.literal:
            return {} if path == self.prefix or path == self.prefix + "/" else None
        if not path.startswith(self.prefix):
            return None
        if self._regex is None:
            self._regex = _route_regex(self.pattern)
        m = self._regex.match(path)
        return m.groupdict() if m else None


def _route_regex(pattern: str) -> re.Pattern[str]:
    """`{name}` matches one segment, `{name:path}` one or more; an optional trailing slash."""
    regex = "^"
    pos = 0
    while True:
        start = pattern.find("{", pos)
        if start < 0:
            break
        end = pattern.index("}", start)
        name, _, kind = pattern[start + 1:end].partition(":")
        if not name.isidentifier() or kind not in ("", "path"):
            raise ValueError(f"invalid route parameter {pattern[start:end + 1]!r} in {pattern!r}")
        regex += re.escape(pattern[pos:start])
        regex += f"(?P<{name}>.+)" if kind else f"(?P<{name}>[^/]+)"
        pos = end + 1
    regex += re.escape(pattern[pos:]) + "/?$"
    return re.compile(regex)


class Router:
    """Maps (method, path pattern) to handlers; `{name}` matches one segment, `{name:path}` several."""

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append(_Route(method.upper(), pattern, handler))

    def get(self, pattern: str, handler: Handler) -> None:
        self.add("GET", pattern, handler)

    def post(self, pattern: str, handler: Handler) -> None:
        self.add("POST", pattern, handler)

    def delete(self, pattern: str, handler: Handler) -> None:
        self.add("DELETE", pattern, handler)

    def head(self, pattern: str, handler: Handler) -> None:
        self.add("HEAD", pattern, handler)

    def put(self, pattern: str, handler: Handler) -> None:
        self.add("PUT", pattern, handler)

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """(handler, params, path_known): path_known tells 405 from 404 when no handler matched."""
        path_known = False
        for route in self._routes:
            params = route.match(path)
            if params is None:
                continue
            if route.method == method:
                return route.handler, {k: unquote(v) for k, v in params.items()}, True
            path_known = True
        return None, {}, path_known


def split_version(path: str) -> tuple[str, tuple[int, int] | None]:
    """Strip an optional /v1.NN prefix; InvalidArgument when the version is out of range."""
    # "/v<digits>.<digits>/rest" (parsed by hand: no regex to compile before the first request)
    if not path.startswith("/v"):
        return path, None
    slash = path.find("/", 2)
    if slash < 0:
        return path, None
    major, dot, minor = path[2:slash].partition(".")
    if not (dot and major.isdecimal() and minor.isdecimal()):
        return path, None
    version = (int(major), int(minor))
    rest = path[slash:]
    if version > MAX_ACCEPTED_API_VERSION:
        raise InvalidArgument(
            f"client version {version[0]}.{version[1]} is too new. "
            f"Maximum supported API version is {API_VERSION}")
    if version < MIN_ACCEPTED_API_VERSION:
        raise InvalidArgument(
            f"client version {version[0]}.{version[1]} is too old. "
            f"Minimum supported API version is {MIN_API_VERSION}, please upgrade your client")
    return rest, version


# --------------------------------------------------------------------------- server


def _http_date() -> str:
    """RFC 7231 date of now, as the Date header wants it (not email.utils: a heavy import)."""
    year, month, day, hh, mm, ss, wd, _, _ = time.gmtime()
    weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[wd]
    month_name = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[month - 1]
    return f"{weekday}, {day:02d} {month_name} {year:04d} {hh:02d}:{mm:02d}:{ss:02d} GMT"


class _ClientGone(Exception):
    """The client closed the connection while we were writing."""


_STATUS_TEXT = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Request Entity Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


class _RequestHandler(socketserver.StreamRequestHandler):
    """Parses one request at a time on a keep-alive connection and writes the route's answer."""

    server: UnixHTTPServer

    def handle(self) -> None:
        self.close_connection = False
        self._header_lines: list[bytes] = []
        try:
            while not self.close_connection:
                self._handle_one_request()
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client hung up between requests: nothing to answer

    def _handle_one_request(self) -> None:
        self.command, self.path = "", ""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            self.close_connection = True
            return
        if line in (b"\r\n", b"\n"):
            return   # a stray empty line before a request is to be ignored (RFC 9112 2.2)
        self.connection.settimeout(REQUEST_READ_TIMEOUT)   # until the body is read (_route)
        try:
            if len(line) > MAX_LINE:
                raise BadRequest("request line too long", 414)
            if not line.endswith(b"\n"):
                raise BadRequest("request ended inside its request line")
            self.command, self.path, self.request_version = parse_request_line(
                line.decode("latin-1").rstrip("\r\n"))
            self.headers = read_headers(self.rfile)
        except BadRequest as err:
            self._send_error(err.status, str(err))
            return
        except TimeoutError:
            self._send_error(408, f"request head not complete after {REQUEST_READ_TIMEOUT:g}s")
            return
        connection = (self.headers.get("Connection") or "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in connection
        elif "close" in connection:
            self.close_connection = True
        self._dispatch()

    def _send_error(self, code: int, message: str) -> None:
        """Protocol-level errors (bad request line or headers) as Docker-style JSON."""
        log.info("%d %s", code, message)
        body = json.dumps({"message": message}).encode()
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- response head ------------------------------------------------------------
    def send_response_only(self, code: int, message: str | None = None) -> None:
        text = message or _STATUS_TEXT.get(code, "")
        self._header_lines.append(f"HTTP/1.1 {code} {text}\r\n".encode("latin-1"))

    def send_response(self, code: int, message: str | None = None) -> None:
        self.send_response_only(code, message)
        self.send_header("Server", SERVER_HEADER)
        self.send_header("Date", _http_date())

    def send_header(self, name: str, value: str) -> None:
        self._header_lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if name.lower() == "connection" and value.lower() == "close":
            self.close_connection = True

    def end_headers(self) -> None:
        """Writes the whole head at once (wfile is unbuffered: one sendall)."""
        self._header_lines.append(b"\r\n")
        head, self._header_lines = b"".join(self._header_lines), []
        self.wfile.write(head)

    def _dispatch(self) -> None:
        try:
            response = self._route()
        except _ClientGone:
            self.close_connection = True
            return
        try:
            self._send(response)
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except OSError as err:
            log.debug("connection error while answering %s %s: %s", self.command, self.path, err)
            self.close_connection = True

    def _route(self) -> AnyResponse:
        log.debug("<- %s %s (connection %x)", self.command, self.path, id(self.connection))
        url = urlsplit(self.path)
        request: Request | None = None
        stream: BodyStream | None = None
        try:
            if self._streams_body(url.path):
                stream = BodyStream(self.rfile, self.headers)   # read per recv, with its timeout
                body = b""
            else:
                try:
                    body = read_body(self.rfile, self.headers)
                except TimeoutError:
                    raise BadRequest(f"request body not complete after {REQUEST_READ_TIMEOUT:g}s",
                                      408) from None
                self.connection.settimeout(None)   # handlers may wait or stream for as long as they need
            path, version = split_version(url.path)
            request = Request(method=self.command, path=path,
                              query=parse_qs(url.query, keep_blank_values=True),
                              headers=self.headers, body=body, api_version=version, stream=stream)
            handler, params, path_known = self.server.router.resolve(self.command, path)
            if handler is None and self.command == "HEAD":
                handler, params, path_known = self.server.router.resolve("GET", path)
            if handler is None:
                if path_known:
                    return json_response({"message": f"method {self.command} not allowed for {path}"}, 405)
                return json_response({"message": "page not found"}, 404)
            request.params = params
            try:
                return handler(request)
            finally:
                if stream is not None:
                    # What the handler left (it failed half-way) is read, so the client sees
                    # the answer and the connection can serve on; past a limit it closes.
                    if not stream.drain():
                        self.close_connection = True
                    self.connection.settimeout(None)
        except _ClientGone:
            raise
        except BadRequest as err:
            self.close_connection = True
            return Response(status=err.status, body=json.dumps({"message": str(err)}).encode(),
                            headers={"Connection": "close"})
        except BodyTooLarge:
            self.close_connection = True
            return Response(status=413, body=json.dumps(
                {"message": f"request body larger than {MAX_BODY} bytes"}).encode(),
                headers={"Connection": "close"})
        except Exception as err:  # every failure becomes an answer; the agent keeps serving
            status, message = error_response_for(err, f"{self.command} {url.path}")
            if status == 304:
                return empty_response(304)
            return json_response({"message": message}, status)

    def _streams_body(self, raw_path: str) -> bool:
        """Whether the route for this request reads its body as it arrives (`streams_body`)."""
        try:
            path, _ = split_version(raw_path)
        except InvalidArgument:
            return False
        handler, _, _ = self.server.router.resolve(self.command, path)
        return bool(getattr(handler, "streams_body", False))

    # -- response -------------------------------------------------------------
    def _start(self, status: int, content_type: str | None, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Docker-Experimental", "false")
        self.send_header("Ostype", "linux")
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)

    def _send(self, response: AnyResponse) -> None:
        if isinstance(response, StreamResponse):
            self._send_stream(response)
        elif isinstance(response, HijackResponse):
            self._send_hijack(response)
        else:
            self._send_plain(response)
        log.debug("%s %s -> %s (connection %x)", self.command, self.path,
                  getattr(response, "status", 101), id(self.connection))

    def _send_plain(self, response: Response) -> None:
        no_body = response.status in (204, 304) or response.status < 200
        self._start(response.status, None if no_body else response.content_type, response.headers)
        if not no_body:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(response.body)

    def _send_stream(self, response: StreamResponse) -> None:
        self._start(response.status, response.content_type, response.headers)
        self.send_header("Transfer-Encoding", "chunked")
        if response.on_client_gone is not None:
            # The watcher below consumes the read side: this connection serves no more requests.
            self.send_header("Connection", "close")
        self.end_headers()  # flushed: the client sees the status before the first chunk
        if response.on_client_gone is not None:
            # The client sends nothing more on this connection; EOF means it left.
            self.close_connection = True
            watcher = threading.Thread(target=self._watch_eof, args=(response.on_client_gone,),
                                       name="client-eof", daemon=True)
            watcher.start()
        iterator = iter(response.chunks)
        try:
            for chunk in iterator:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            raise _ClientGone() from None
        except Exception:
            # Too late for an error status: log it and cut the stream so the client sees it end early.
            log.exception("stream for %s %s failed", self.command, self.path)
            self.close_connection = True
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _watch_eof(self, on_gone: Callable[[], None]) -> None:
        try:
            while self.rfile.read1(4096):
                pass
        except (OSError, ValueError):
            pass
        try:
            on_gone()
        except Exception:
            log.exception("client-gone callback failed")

    def _send_hijack(self, response: HijackResponse) -> None:
        upgrade = "upgrade" in (self.headers.get("Connection") or "").lower() or \
            bool(self.headers.get("Upgrade"))
        if upgrade:
            self.send_response_only(101, "UPGRADED")
            self.send_header("Content-Type", response.content_type)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "tcp")
            self.send_header("Api-Version", API_VERSION)
        else:
            self._start(200, response.content_type, {"Connection": "close"})
        # end_headers writes the header block with one sendall (wfile is unbuffered):
        # the 101 leaves before the first frame, which docker-py needs.
        self.end_headers()
        self.close_connection = True
        conn = HijackedConnection(self.connection, self.rfile)
        conn.wait_until_peer_read()
        try:
            response.run(conn)
        finally:
            conn.close()


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Listens on a unix socket (mode 0600) and serves `router` with one thread per connection."""

    daemon_threads = True
    allow_reuse_address = False
    # Go clients connect non-blocking: with socketserver's default backlog of 5, a burst
    # of docker commands gets EAGAIN ("resource temporarily unavailable") instead of waiting.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str, router: Resolver, mode: int = 0o600) -> None:
        self.router = router
        self.socket_path = path
        old_umask = os.umask(0o177)  # never a moment where the socket is group/world accessible
        try:
            super().__init__(path, _RequestHandler)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error on a connection")
