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
