"""A minimal QMP (QEMU Machine Protocol) client over a unix socket, standard library only."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeFailure


class QmpClient:
    """One QMP session: greeting, capabilities negotiation, then synchronous commands."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as err:
            self._sock.close()
            raise RuntimeFailure(f"cannot reach the QEMU monitor at {path}: {err.strerror or err}") from err
        self._file = self._sock.makefile("rb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeFailure(f"unexpected QMP greeting from {path}: {greeting}")
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as err:  # e.g. reset: QEMU exited (a saved state that would not load)
            raise RuntimeFailure(f"QEMU dropped the monitor connection {self.path}: {err}") from err
        if not line:
            raise RuntimeFailure(f"QEMU closed the monitor connection {self.path}")
        return json.loads(line)

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one command and return its "return" value; asynchronous events are skipped."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as err:
            raise RuntimeFailure(f"QEMU dropped the monitor connection {self.path}: {err}") from err
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeFailure(f"QEMU refused {command}: {reply['error'].get('desc', reply['error'])}")

    def events(self) -> Iterator[dict[str, Any]]:
        """QEMU's asynchronous events as they come, until it closes the connection (it exits)."""
        self._sock.settimeout(None)
        while line := self._file.readline():
            message = json.loads(line)
            if "event" in message:
                yield message

    def wait_closed(self) -> None:
        """Block until QEMU closes the connection (it exits); no polling."""
        self._sock.settimeout(None)
        while self._file.readline():
            pass

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
