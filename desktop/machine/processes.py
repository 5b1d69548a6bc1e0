"""Host processes the machine code watches (supervisor, QEMU): liveness and bounded waits."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether `pid` runs: not gone, not a zombie, and (with `marker`, where /proc exists)
    with `marker` in its command line, so a recycled pid is not mistaken for ours."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if marker is not None:
            return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        pass
    return True


def wait_until(condition: Callable[[], object], deadline_s: float, interval: float = 0.05) -> bool:
    """Poll `condition` until true or the deadline passes; returns whether it came true."""
    end = time.monotonic() + deadline_s
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


class PipeLines:
    """Lines from a pipe with one deadline for all of them; keeps what it read past a newline."""

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.end = time.monotonic() + timeout
        self._buf = b""

    def next(self) -> str:
        """The next line (no newline), or "" at EOF or once the deadline has passed."""
        import select

        while b"\n" not in self._buf:
            remaining = self.end - time.monotonic()
            if remaining <= 0:
                return ""
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                return ""
            chunk = os.read(self.fd, 4096)
            if not chunk:
                line, self._buf = self._buf, b""
                return line.decode(errors="replace")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")
