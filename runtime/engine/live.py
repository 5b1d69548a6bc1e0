"""A container's in-memory companion (locks, process, stdio) and the wait handle on it."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from ..containers import config as cc
from ..containers.log_store import LogFile
from ..containers.restart_policy import Backoff
from ..containers.spec import ContainerSpec
from ..containers.stdio import StreamHub
from ..errors import RuntimeFailure
from ..models import Container


class Live:
    """In-memory companion of a container record.

    Lock discipline: `lock` (an RLock) guards the record `c` (its state, name, network,
    exec ids) and every run-state field below; `changed` is a condition on it, notified at
    every exit, start and removal. No lock is held while waiting for a process.
    """

    def __init__(self, c: Container, stopped_by_user: bool = False) -> None:
        self.c = c
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        max_size, max_files = cc.log_rotation(c.host_config)
        self.log = LogFile(Path(c.log_path), max_size, max_files, keep=cc.keeps_logs(c.host_config))
        cfg = c.config
        self.hub = StreamHub(bool(cfg.get("Tty")), bool(cfg.get("OpenStdin")),
                             bool(cfg.get("StdinOnce")), self.log)
        self.process: Any = None
        self.spec: ContainerSpec | None = None
        self.exit_seq = 0
        self.removed = False
        self.removing = False
        self.starting = False
        self.stopped_by_user = stopped_by_user
        self.backoff = Backoff()
        self.restart_timer: threading.Timer | None = None
        self.started_mono = 0.0
        self.volume_names: list[str] = []
        self.link_env: list[str] = []      # of the current run's --link targets (execs get them too)
        self.copying = 0                   # `docker cp` writes in the stopped container's upper dir

    def active(self) -> bool:
        """Running, starting or about to restart: a "not-running" wait must block."""
        s = self.c.state
        return s.running or s.restarting or self.starting

    def snapshot(self) -> Container:
        """A deep copy of the record taken under the lock: what inspect and list hand out.

        As moby's in-memory view: the API layer serialises a consistent, independent copy,
        never the record a start or stop is updating meanwhile.
        """
        with self.lock:
            return copy.deepcopy(self.c)


class WaitHandle:
    """Registered before the container starts (the docker CLI waits before it starts)."""

    def __init__(self, live: Live, condition: str) -> None:
        self._live = live
        self._condition = condition
        self._cancelled = False
        with live.changed:
            self._seq = live.exit_seq
            self._immediate = condition == "not-running" and not live.active()

    def _done(self) -> bool:
        live = self._live
        if self._cancelled or self._immediate or live.removed:
            return True
        if self._condition == "removed":
            return False
        return live.exit_seq > self._seq

    def result(self, timeout: float | None = None) -> tuple[int, str]:
        """Block until the condition is met: (exit code, error message or "")."""
        live = self._live
        with live.changed:
            if not live.changed.wait_for(self._done, timeout):
                raise TimeoutError("the container did not reach the wait condition in time")
            if self._cancelled:
                raise RuntimeFailure("wait cancelled")
            return live.c.state.exit_code, live.c.state.error

    def cancel(self) -> None:
        with self._live.changed:
            self._cancelled = True
            self._live.changed.notify_all()
