"""Reading an HTTP/1.1 request and its JSON: framing, limits, and what a route gets.

The request line, headers and body (by Content-Length or chunked) are read here
from the connection's buffered reader, with limits on each, and refused with
`BadRequest` (the server answers and closes the connection, since where the next
request starts is unknown) or `BodyTooLarge`; a route marked `streams_body` gets
its body as a `BodyStream` instead, read as it arrives. JSON bodies are decoded as strictly
as Go's decoder does; query values are typed by `Request`. Standard library only,
and light: the agent imports this before it can answer anything (see `http_server`).
"""

from __future__ import annotations

import json

from runtime.errors import InvalidArgument

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads the name as True
if TYPE_CHECKING:  # names for annotations only: importing typing costs ~0.2 s of a TCG guest's boot
    from io import BufferedIOBase
    from typing import Any

# Bodies are buffered in memory up to this size and refused beyond it; a route that takes
# archives of any size (`docker cp` in) is marked `streams_body` and reads them as they arrive.
MAX_BODY = 16 * 1024 * 1024

MAX_LINE = 65536
_MAX_HEADERS = 100


class BodyTooLarge(Exception):
    """The request body exceeds MAX_BODY; it is not read, so the connection must close."""


class BadRequest(Exception):
    """The request cannot be framed (request line, headers, body length or chunks): answered
    with `status` and the connection closed, since where the next request starts is unknown."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
                 params: dict[str, str] | None = None, stream: BodyStream | None = None) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.api_version = api_version
        self.params = params if params is not None else {}
        self.stream = stream    # the body as it arrives, for a handler marked `streams_body`

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


def parse_request_line(text: str) -> tuple[str, str, str]:
    """"GET /path HTTP/1.1" as (method, target, version); BadRequest for anything else."""
    words = text.split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise BadRequest(f"bad request line {text[:200]!r}")
    method, target, version = words
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(f"unsupported HTTP version {version[:20]!r}")
    return method, target, version

def read_headers(rfile: BufferedIOBase) -> Headers:
    """The header lines up to the empty one that ends the head."""
    items: list[tuple[str, str]] = []
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadRequest("header line too long", 431)
        if line in (b"\r\n", b"\n"):
            return Headers(items)
        if not line.endswith(b"\n"):   # EOF before the empty line that ends the head
            raise BadRequest("request ended inside its headers")
        if len(items) >= _MAX_HEADERS:
            raise BadRequest("too many headers", 431)
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(f"malformed header line {line[:100]!r}")
        items.append((name, value.strip()))


def read_body(rfile: BufferedIOBase, headers: Headers) -> bytes:
    """The body by Content-Length or chunked; BadRequest or BodyTooLarge when it cannot be framed."""
    encoding = (headers.get("Transfer-Encoding") or "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise BadRequest(f"unsupported transfer encoding: {encoding[:40]!r}", 501)
        return _read_chunked_body(rfile)
    length = headers.get("Content-Length")
    if length is None:
        return b""
    # Digits only: int() would take "-1" (a read to EOF), "+5", " 5" or "1_0".
    length = length.strip()
    if not (length.isascii() and length.isdigit()):
        raise BadRequest(f"invalid Content-Length: {length[:40]!r}")
    n = int(length)
    if n > MAX_BODY:
        raise BodyTooLarge()
    data = rfile.read(n)
    if len(data) != n:
        # Answered in case the client only shut its sending side; gone otherwise.
        raise BadRequest(f"request body ended after {len(data)} of {n} bytes")
    return data

def _read_chunked_body(rfile: BufferedIOBase) -> bytes:
    parts: list[bytes] = []
    received = 0
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadRequest("invalid chunked request body: chunk size line too long")
        if not line.endswith(b"\n"):
            raise BadRequest("chunked request body ended before its last chunk")
        text = line.split(b";", 1)[0].strip()
        if not text or len(text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in text):
            raise BadRequest(f"invalid chunked request body: bad chunk size {text[:20]!r}")
        size = int(text, 16)
        if size == 0:
            # Trailers (usually none) end with an empty line.
            for _ in range(_MAX_HEADERS + 1):
                line = rfile.readline(MAX_LINE + 1)
                if line in (b"\r\n", b"\n"):
                    return b"".join(parts)
                if not line.endswith(b"\n"):
                    raise BadRequest("chunked request body ended inside its trailers")
            raise BadRequest("invalid chunked request body: too many trailers", 431)
        received += size
        if received > MAX_BODY:
            raise BodyTooLarge()   # before reading: the size alone is enough to refuse
        chunk = rfile.read(size)
        if len(chunk) != size:
            raise BadRequest(f"chunked request body ended inside a chunk of {size} bytes")
        parts.append(chunk)
        end = rfile.readline(3)
        if end not in (b"\r\n", b"\n"):
            raise BadRequest("invalid chunked request body: missing CRLF after a chunk")


def streams_body(handler: Any) -> Any:
    """Mark a route handler that reads its body from `request.stream` as it arrives (archives:
    `docker cp` into a container), with no MAX_BODY limit, instead of from `request.body`."""
    handler.__dict__["streams_body"] = True
    return handler


class BodyStream:
    """A request body read as it arrives, by Content-Length or chunked: `read(n)` as a file's.

    BadRequest when the framing breaks or the client stalls (408); `drain` reads
    what the handler left, so the connection can serve the next request.
    """

    def __init__(self, rfile: BufferedIOBase, headers: Headers) -> None:
        self._rfile = rfile
        encoding = (headers.get("Transfer-Encoding") or "").strip().lower()
        self._chunked = bool(encoding)
        self._left = 0            # bytes left in the body (Content-Length) or in the current chunk
        self._done = False
        if encoding:
            if encoding != "chunked":
                raise BadRequest(f"unsupported transfer encoding: {encoding[:40]!r}", 501)
            return
        length = (headers.get("Content-Length") or "0").strip()
        if not (length.isascii() and length.isdigit()):
            raise BadRequest(f"invalid Content-Length: {length[:40]!r}")
        self._left = int(length)
        self._done = self._left == 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if self._done or size == 0:
            return b""
        if self._chunked and self._left == 0 and not self._next_chunk():
            return b""
        try:
            data = self._rfile.read1(min(size, self._left))
        except TimeoutError:
            raise BadRequest("request body stalled", 408) from None
        if not data:
            raise BadRequest("request body ended early")
        self._left -= len(data)
        if self._left == 0:
            if self._chunked:
                if self._rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise BadRequest("invalid chunked request body: missing CRLF after a chunk")
            else:
                self._done = True
        return data

    def _next_chunk(self) -> bool:
        """Read the next chunk's size line; False after the last (empty) chunk and trailers."""
        line = self._rfile.readline(MAX_LINE + 1)
        if not line.endswith(b"\n") or len(line) > MAX_LINE:
            raise BadRequest("chunked request body ended before its last chunk")
        text = line.split(b";", 1)[0].strip()
        if not text or len(text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in text):
            raise BadRequest(f"invalid chunked request body: bad chunk size {text[:20]!r}")
        self._left = int(text, 16)
        if self._left:
            return True
        for _ in range(_MAX_HEADERS + 1):   # trailers (usually none) end with an empty line
            line = self._rfile.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                self._done = True
                return False
            if not line.endswith(b"\n"):
                raise BadRequest("chunked request body ended inside its trailers")
        raise BadRequest("invalid chunked request body: too many trailers", 431)

    def drain(self, limit: int = MAX_BODY) -> bool:
        """Read and drop up to `limit` bytes of what is left; whether the body has ended."""
        while limit > 0:
            data = self.read(min(1 << 16, limit))
            if not data:
                return True
            limit -= len(data)
        return self._done
