"""A threaded HTTP/1.1 server on a unix socket, shaped for the Docker Engine API.

It knows nothing about containers: routes return one of the response types
below (plain, streamed with chunked encoding, or a hijacked raw connection)
and the server writes them. One thread per connection; keep-alive; request
bodies by Content-Length or chunked; an optional `/v1.NN` prefix on every path.

The HTTP/1.1 request parsing is our own, not http.server's: that module pulls in
http.client, email and ssl, about a third of the agent's start-up in a TCG guest,
where the agent's start is the longest step of a boot. Nor are dataclasses
used here (with inspect, ~0.1 s there): the agent imports this module before
it can answer anything.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import socketserver
import struct
import termios
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

from runtime.errors import InvalidArgument

from .api_errors import error_response_for

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads the name as True
if TYPE_CHECKING:  # names for annotations only: importing typing costs ~0.2 s of a TCG guest's boot
    from collections.abc import Callable, Iterable
    from typing import Any, Protocol

log = logging.getLogger(__name__)

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"
MAX_ACCEPTED_API_VERSION = (1, 50)
MIN_ACCEPTED_API_VERSION = (1, 24)
SERVER_HEADER = "Dockyard/0.1.0 (linux)"

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

# No endpoint we serve takes big bodies (builds and image loads are not supported):
# refuse rather than buffer them in memory.
MAX_BODY = 16 * 1024 * 1024

# How long a hijacked stream waits for the client to read the 101 before writing output.
HEADER_READ_WAIT = 2.0

# How long the rest of a request (headers, body) may take once its first line arrived: a
# client that stops half-way would otherwise hold its connection thread forever. Idle
# keep-alive connections between requests have no limit (docker-py pools them).
REQUEST_READ_TIMEOUT = 60.0


# --------------------------------------------------------------------------- requests


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


def parse_json(data: bytes | str, what: str) -> Any:
    """JSON from a client, as strict as Go's decoder: InvalidArgument (400) for malformed,
    non-UTF-8 (json.loads alone would guess UTF-16/32 and skip a BOM), NaN/Infinity,
    out-of-range numbers, or nesting too deep to parse."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidArgument(f"invalid {what}: nested too deeply") from None
    except ValueError as err:   # includes UnicodeDecodeError
        raise InvalidArgument(f"invalid {what}: {err}") from None


class Headers:
    """Request headers: `get` is case-insensitive and gives the first of repeated ones."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._first: dict[str, str] = {}
        for name, value in items:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)


class Request:
    """One parsed request: the path without its version prefix, query, headers, body."""

    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: Headers,
                 body: bytes, api_version: tuple[int, int] | None = None,
                 params: dict[str, str] | None = None) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.api_version = api_version
        self.params = params if params is not None else {}

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of query parameter `name`, or `default`."""
        values = self.query.get(name)
        return values[-1] if values else default

    def bool_arg(self, name: str, default: bool = False) -> bool:
        """Docker's boolean query values: "1"/"true"/"True" are true, "0"/"false"/"" false."""
        value = self.arg(name)
        if value is None:
            return default
        return value.strip().lower() not in ("", "0", "false", "no")

    def int_arg(self, name: str, default: int | None = None, minimum: int = -(1 << 63),
                maximum: int = (1 << 63) - 1) -> int | None:
        """An integer query value (Go's strconv.Atoi: optional sign, decimal digits, int64)."""
        value = self.arg(name)
        if value is None or value == "":
            return default
        text = value[1:] if value[:1] in "+-" else value
        if not (text.isascii() and text.isdigit()):
            raise InvalidArgument(f"invalid value for {name}: {value!r} is not an integer")
        number = int(value)
        if not minimum <= number <= maximum:
            raise InvalidArgument(f"invalid value for {name}: {value} is out of range "
                                  f"[{minimum}, {maximum}]")
        return number

    def float_arg(self, name: str, default: float = 0.0) -> float:
        """A finite number (timestamps such as `since`): NaN and infinities are refused."""
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number != number or number in (float("inf"), float("-inf")):
            raise InvalidArgument(f"invalid value for {name}: {value!r} is not a number")
        return number

    def tty_size(self) -> tuple[int, int]:
        """The `h` and `w` of a resize: terminal sizes are 16-bit (TIOCSWINSZ)."""
        return (self.int_arg("h", 0, 0, 65535) or 0, self.int_arg("w", 0, 0, 65535) or 0)

    def json(self, default: Any = None) -> Any:
        """The body as JSON; `default` when empty; InvalidArgument (400) when malformed."""
        if not self.body.strip():
            return default
        return parse_json(self.body, "JSON in request body")

    def json_object(self) -> dict[str, Any]:
        body = self.json(default={})
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise InvalidArgument("invalid request body: expected a JSON object")
        return body

    def filters(self) -> dict[str, list[str]]:
        """The `filters` query parameter, in either of Docker's shapes, as {key: [values]}."""
        raw = self.arg("filters")
        if not raw:
            return {}
        parsed = parse_json(raw, "filters")
        if not isinstance(parsed, dict):
            raise InvalidArgument("invalid filters: expected a JSON object")
        result: dict[str, list[str]] = {}
        for key, value in parsed.items():
            # Old clients send {"key": ["v"]}, current ones {"key": {"v": true}}.
            if isinstance(value, dict):
                result[key] = [k for k, enabled in value.items() if enabled]
            elif isinstance(value, list):
                result[key] = [str(v) for v in value]
            else:
                result[key] = [str(value)]
        return result


# --------------------------------------------------------------------------- responses


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


if TYPE_CHECKING:  # annotation-only aliases (see the typing import above)
    AnyResponse = Response | StreamResponse | HijackResponse
    Handler = Callable[[Request], AnyResponse]

    class Resolver(Protocol):
        """What the server needs of its router: a Router, or the agent's StartupRouter."""

        def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]: ...


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(obj).encode() + b"\n")


def empty_response(status: int = 204) -> Response:
    return Response(status=status, body=b"", content_type=None)


def json_lines(objects: Iterable[Any]) -> Iterable[bytes]:
    """Encode an iterable of JSON objects as newline-separated JSON (Docker's progress streams)."""
    for obj in objects:
        yield json.dumps(obj).encode() + b"\r\n"


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


class _BodyTooLarge(Exception):
    """The request body exceeds MAX_BODY; it is not read, so the connection must close."""


class _BadRequest(Exception):
    """The request cannot be framed (request line, headers, body length or chunks): answered
    with `status` and the connection closed, since where the next request starts is unknown."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_STATUS_TEXT = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Request Entity Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}
_MAX_LINE = 65536
_MAX_HEADERS = 100


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
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            self.close_connection = True
            return
        if line in (b"\r\n", b"\n"):
            return   # a stray empty line before a request is to be ignored (RFC 9112 2.2)
        self.connection.settimeout(REQUEST_READ_TIMEOUT)   # until the body is read (_route)
        try:
            if len(line) > _MAX_LINE:
                raise _BadRequest("request line too long", 414)
            if not line.endswith(b"\n"):
                raise _BadRequest("request ended inside its request line")
            self._parse_request_line(line.decode("latin-1").rstrip("\r\n"))
            self.headers = self._read_headers()
        except _BadRequest as err:
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

    def _parse_request_line(self, text: str) -> None:
        words = text.split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            raise _BadRequest(f"bad request line {text[:200]!r}")
        self.command, self.path, self.request_version = words
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            raise _BadRequest(f"unsupported HTTP version {self.request_version[:20]!r}")

    def _read_headers(self) -> Headers:
        items: list[tuple[str, str]] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise _BadRequest("header line too long", 431)
            if line in (b"\r\n", b"\n"):
                return Headers(items)
            if not line.endswith(b"\n"):   # EOF before the empty line that ends the head
                raise _BadRequest("request ended inside its headers")
            if len(items) >= _MAX_HEADERS:
                raise _BadRequest("too many headers", 431)
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(f"malformed header line {line[:100]!r}")
            items.append((name, value.strip()))

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

    # -- request --------------------------------------------------------------
    def _read_body(self) -> bytes:
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if encoding:
            if encoding != "chunked":
                raise _BadRequest(f"unsupported transfer encoding: {encoding[:40]!r}", 501)
            return self._read_chunked_body()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        # Digits only: int() would take "-1" (a read to EOF), "+5", " 5" or "1_0".
        length = length.strip()
        if not (length.isascii() and length.isdigit()):
            raise _BadRequest(f"invalid Content-Length: {length[:40]!r}")
        n = int(length)
        if n > MAX_BODY:
            raise _BodyTooLarge()
        data = self.rfile.read(n)
        if len(data) != n:
            # Answered in case the client only shut its sending side; gone otherwise.
            raise _BadRequest(f"request body ended after {len(data)} of {n} bytes")
        return data

    def _read_chunked_body(self) -> bytes:
        parts: list[bytes] = []
        received = 0
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise _BadRequest("invalid chunked request body: chunk size line too long")
            if not line.endswith(b"\n"):
                raise _BadRequest("chunked request body ended before its last chunk")
            text = line.split(b";", 1)[0].strip()
            if not text or len(text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in text):
                raise _BadRequest(f"invalid chunked request body: bad chunk size {text[:20]!r}")
            size = int(text, 16)
            if size == 0:
                # Trailers (usually none) end with an empty line.
                for _ in range(_MAX_HEADERS + 1):
                    line = self.rfile.readline(_MAX_LINE + 1)
                    if line in (b"\r\n", b"\n"):
                        return b"".join(parts)
                    if not line.endswith(b"\n"):
                        raise _BadRequest("chunked request body ended inside its trailers")
                raise _BadRequest("invalid chunked request body: too many trailers", 431)
            received += size
            if received > MAX_BODY:
                raise _BodyTooLarge()   # before reading: the size alone is enough to refuse
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _BadRequest(f"chunked request body ended inside a chunk of {size} bytes")
            parts.append(chunk)
            end = self.rfile.readline(3)
            if end not in (b"\r\n", b"\n"):
                raise _BadRequest("invalid chunked request body: missing CRLF after a chunk")

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
        try:
            try:
                body = self._read_body()
            except TimeoutError:
                raise _BadRequest(f"request body not complete after {REQUEST_READ_TIMEOUT:g}s",
                                  408) from None
            self.connection.settimeout(None)   # handlers may wait or stream for as long as they need
            path, version = split_version(url.path)
            request = Request(method=self.command, path=path,
                              query=parse_qs(url.query, keep_blank_values=True),
                              headers=self.headers, body=body, api_version=version)
            handler, params, path_known = self.server.router.resolve(self.command, path)
            if handler is None and self.command == "HEAD":
                handler, params, path_known = self.server.router.resolve("GET", path)
            if handler is None:
                if path_known:
                    return json_response({"message": f"method {self.command} not allowed for {path}"}, 405)
                return json_response({"message": "page not found"}, 404)
            request.params = params
            return handler(request)
        except _ClientGone:
            raise
        except _BadRequest as err:
            self.close_connection = True
            return Response(status=err.status, body=json.dumps({"message": str(err)}).encode(),
                            headers={"Connection": "close"})
        except _BodyTooLarge:
            self.close_connection = True
            return Response(status=413, body=json.dumps(
                {"message": f"request body larger than {MAX_BODY} bytes"}).encode(),
                headers={"Connection": "close"})
        except Exception as err:  # every failure becomes an answer; the agent keeps serving
            status, message = error_response_for(err, f"{self.command} {url.path}")
            if status == 304:
                return empty_response(304)
            return json_response({"message": message}, status)

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
