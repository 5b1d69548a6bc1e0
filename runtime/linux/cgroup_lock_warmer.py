"""Keeps the kernel's cgroup migration lock in its fast-to-take mode while containers start.

Why this exists: moving a process into a cgroup (a write to cgroup.procs) takes the
kernel's global `cgroup_threadgroup_rwsem` for writing, and `percpu_down_write`
first waits for a whole RCU grace period (`rcu_sync_enter`) unless another writer
took it within the last grace period. Measured on this project's machines: 6-15 ms
for a move after an idle moment, 0.05 ms for one that follows another within ~10 ms.
That wait was the largest single part of `docker run --rm busybox true`.

The engine cannot skip the move (cgroup v1 hierarchies need it, and Python's fork
cannot use clone3's CLONE_INTO_CGROUP), but it can start the grace period earlier:
`kick()`, called when a container is created or started or an exec is made, has a
background thread move the engine's own process into the cgroup it is already in (a
no-op move that takes the same lock) and repeat that every few milliseconds for a
short while. The container's real move a few milliseconds later then finds the lock
already in its slow-path mode and does not wait. The kernel's `favordynmods` cgroup
mount option does the same for good; the engine does not remount the host's
hierarchies to get it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from .cgroups import CgroupLayout, host_layout

log = logging.getLogger(__name__)

HOLD_SECONDS = 0.25      # how long after the last kick the lock is kept warm
PERIOD_SECONDS = 0.004   # well inside one grace period (~8-15 ms measured)


def own_procs_file(layout: CgroupLayout, proc_self_cgroup: str) -> Path | None:
    """The cgroup.procs file of the cgroup this process is in, in any mounted hierarchy
    (the lock is global, so one is enough); None when no hierarchy is mounted here."""
    for line in proc_self_cgroup.splitlines():
        hierarchy_id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        mount: Path | None
        if hierarchy_id == "0" and controllers == "":
            mount = layout.unified
        else:
            mount = next((layout.v1[n] for n in controllers.split(",") if n in layout.v1), None)
        if mount is not None:
            return mount / path.lstrip("/") / "cgroup.procs"
    return None


class CgroupLockWarmer:
    """A background thread that keeps moving this process into its own cgroup for
    HOLD_SECONDS after each `kick()`. Disables itself on the first failed write."""

    def __init__(self, procs_file: Path | None, hold: float = HOLD_SECONDS,
                 period: float = PERIOD_SECONDS) -> None:
        self.procs_file = procs_file
        self.hold = hold
        self.period = period
        self.writes = 0
        self._lock = threading.Lock()
        self._until = 0.0
        self._thread: threading.Thread | None = None
        self._disabled = procs_file is None

    @property
    def active(self) -> bool:
        with self._lock:
            return self._thread is not None

    def kick(self) -> None:
        if self._disabled:
            return
        with self._lock:
            self._until = time.monotonic() + self.hold
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cgroup-lock-warmer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        assert self.procs_file is not None
        pid = str(os.getpid()).encode()
        while True:
            with self._lock:
                if time.monotonic() >= self._until:
                    self._thread = None
                    return
            try:
                fd = os.open(self.procs_file, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
                self.writes += 1
            except OSError as err:
                log.debug("cgroup lock warmer disabled: %s: %s", self.procs_file, err)
                with self._lock:
                    self._disabled = True
                    self._thread = None
                return
            time.sleep(self.period)   # pacing the writes, not waiting for anything


_warmer: CgroupLockWarmer | None = None
_warmer_lock = threading.Lock()


def warmer() -> CgroupLockWarmer:
    """The process-wide warmer, made on first use."""
    global _warmer
    with _warmer_lock:
        if _warmer is None:
            try:
                with open("/proc/self/cgroup") as f:
                    procs = own_procs_file(host_layout(), f.read())
            except OSError:
                procs = None
            _warmer = CgroupLockWarmer(procs)
        return _warmer
