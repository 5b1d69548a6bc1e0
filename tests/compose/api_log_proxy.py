"""A logging proxy between a Docker client and an engine's unix socket.

Every request a client sends is forwarded untouched and written to a JSON-lines
log: method, path with query, the headers that matter and the body (decoded JSON
when it is JSON). After a request that upgrades the connection (attach, exec
start) the rest of that connection is passed through unread. It answers "which
calls does Compose make, with which bodies" for an engine that does not yet take
them all: put it in front of a reference dockerd and read the log.

    python -m tests.compose.api_log_proxy LISTEN_SOCKET TARGET_SOCKET LOG_FILE [CLAIMED:REAL]

With CLAIMED:REAL (e.g. 1.45:1.41) the proxy makes an older engine look newer to the
client, so the log shows what the client sends at the API version our agent
advertises: `Api-Version` and `"ApiVersion"` in answers say CLAIMED, request paths
/vCLAIMED/ go upstream as /vREAL/ (same length, so no framing changes). Fields newer
than REAL reach the engine and are ignored there; only the log matters.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_LOGGED_HEADERS = ("content-type", "upgrade", "connection", "x-registry-auth", "user-agent")


class _RequestReader:
    """Splits the client's byte stream into HTTP requests (Content-Length or chunked bodies)."""

    def __init__(self, record) -> None:
        self.buf = b""
        self.record = record
        self.passthrough = False

    def feed(self, data: bytes) -> None:
        if self.passthrough:
            return
        self.buf += data
        while not self.passthrough:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            lines = self.buf[:head_end].decode("latin-1").split("\r\n")
            method, _, rest = lines[0].partition(" ")
            target = rest.rsplit(" ", 1)[0]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body_start = head_end + 4
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body, consumed = self._dechunk(self.buf[body_start:])
                if body is None:
                    return
            else:
                length = int(headers.get("content-length", "0") or 0)
                if len(self.buf) - body_start < length:
                    return
                body, consumed = self.buf[body_start:body_start + length], length
            self.buf = self.buf[body_start + consumed:]
            self.record(method, target, headers, body)
            if "upgrade" in headers or "upgrade" in headers.get("connection", "").lower():
                self.passthrough = True

    @staticmethod
    def _dechunk(data: bytes) -> tuple[bytes | None, int]:
        body, pos = b"", 0
        while True:
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                return None, 0
            size = int(data[pos:line_end].split(b";")[0] or b"0", 16)
            start = line_end + 2
            if size == 0:
                trailer_end = data.find(b"\r\n", start)
                return (body, trailer_end + 2) if trailer_end >= 0 else (None, 0)
            if len(data) < start + size + 2:
                return None, 0
            body += data[start:start + size]
            pos = start + size + 2


class ApiLogProxy:
    """Listens on `listen`, forwards to `target`, logs each request to `log_file`."""

    def __init__(self, listen: Path, target: Path, log_file: Path,
                 claim_version: tuple[str, str] | None = None) -> None:
        self.listen, self.target, self.log_file = Path(listen), Path(target), Path(log_file)
        self._requests: list[tuple[bytes, bytes]] = []
        self._answers: list[tuple[bytes, bytes]] = []
        if claim_version is not None:
            claimed, real = (v.encode() for v in claim_version)
            if len(claimed) != len(real):
                raise ValueError("the claimed and real API versions must have the same length")
            self._requests = [(b" /v" + claimed + b"/", b" /v" + real + b"/")]
            self._answers = [(b"Api-Version: " + real, b"Api-Version: " + claimed),
                             (b'"ApiVersion":"' + real + b'"', b'"ApiVersion":"' + claimed + b'"')]
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._logging = True

    @property
    def docker_host(self) -> str:
        return f"unix://{self.listen}"

    def start(self) -> ApiLogProxy:
        if self.listen.exists():
            self.listen.unlink()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.listen))
        self._server.listen(64)
        threading.Thread(target=self._accept_loop, name="api-log-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            self._logging = False

    def _record(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        entry: dict[str, object] = {"method": method, "path": target}
        entry["headers"] = {k: v for k, v in headers.items() if k in _LOGGED_HEADERS}
        if body:
            try:
                entry["body"] = json.loads(body)
            except ValueError:
                entry["body_bytes"] = len(body)
        with self._lock:
            if self._logging:   # one append per request: the log is whole at any moment
                with open(self.log_file, "a") as out:
                    out.write(json.dumps(entry, sort_keys=True) + "\n")

    def _accept_loop(self) -> None:
        server = self._server
        while server is not None:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(str(self.target))
        except OSError as err:
            log.warning("proxy cannot reach %s: %s", self.target, err)
            client.close()
            return
        reader = _RequestReader(self._record)
        answers = threading.Thread(target=self._pump, args=(upstream, client, None, self._answers),
                                   daemon=True)
        answers.start()
        self._pump(client, upstream, reader, self._requests)
        answers.join()
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, reader: _RequestReader | None,
              rewrites: list[tuple[bytes, bytes]]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if reader is not None:
                    reader.feed(data)   # logged as the client sent it
                for old, new in rewrites:
                    data = data.replace(old, new)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Half-close so the other direction can finish (a client that closed stdin).
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO)
    claim = tuple(argv[3].split(":", 1)) if len(argv) == 4 else None
    proxy = ApiLogProxy(Path(argv[0]), Path(argv[1]), Path(argv[2]), claim).start()  # type: ignore[arg-type]  # "uid:gid" always splits in two here
    log.info("logging %s -> %s into %s (pid %d)", proxy.listen, proxy.target, proxy.log_file, os.getpid())
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
