"""Process helpers shared by the container and exec services: the launcher, exit waits, timings."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

DEFAULT_STOP_TIMEOUT = 10
SHUTDOWN_STOP_CAP = 10
DRAIN_TIMEOUT = 5.0
KILL_WAIT = 30.0


def launcher() -> ModuleType:
    """The process launcher, imported on first use (it pulls in ctypes and syscalls)."""
    from ..containers import process as container_process
    return container_process


def pure_cgroup_v2() -> bool:
    """Whether this host has cgroup v2 only (it decides Docker's default --cgroupns)."""
    from ..linux.cgroups import host_layout
    return host_layout().pure_v2


def wait_exit(proc: Any) -> int:
    """The process's exit code, once it exited.

    ContainerProcess.wait() holds its lock while blocked in waitpid, which would make
    signal() (stop, kill) wait for the exit it is meant to cause; so first wait for the
    reaper's exit without reaping it (WNOWAIT), then let wait() reap at once.
    """
    reaper = getattr(proc, "reaper_pid", None)
    while reaper:
        try:
            os.waitid(os.P_PID, reaper, os.WEXITED | os.WNOWAIT)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    return int(proc.wait())


def signal_process(proc: Any, sig: int) -> None:
    """Signal a container's process; one that exited meanwhile is left to its watcher."""
    try:
        proc.signal(sig)
    except ProcessLookupError:
        pass
