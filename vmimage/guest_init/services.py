"""Long-running children of init (sshd, the agent), restarted with a backoff when they die."""

from __future__ import annotations

import os
import time

from . import spawn
from .logsetup import log

# A service that ran this long before dying is considered healthy again.
HEALTHY_AFTER_S = 30.0
MAX_BACKOFF_S = 10.0


def now() -> float:
    """Seconds since boot (same clock as /proc/uptime; immune to clock setting)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Service:
    """One supervised program; `pid` is None while it is down."""

    def __init__(self, name: str, argv: list[str], log_path: str) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env: dict[str, str] = {}
        self.pid: int | None = None
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None
        self.restarts = 0

    def adopt(self, pid: int, started_at: float) -> None:
        """Take over a process early.sh started before this init ran."""
        self.pid = pid
        self.started_at = started_at
        log.info("adopted %s pid %d", self.name, pid)

    def start(self) -> None:
        """Spawn the program now."""
        self.restart_at = None
        try:
            self.pid = spawn.spawn(self.argv, self.log_path, self.env)
        except OSError as err:
            log.error("cannot start %s: %s", self.name, err)
            self.pid = None
            self._schedule_restart()
            return
        self.started_at = now()
        try:
            # Children inherit the init's boot-time niceness; services run at 0.
            os.setpriority(os.PRIO_PROCESS, self.pid, 0)
        except OSError:
            pass
        log.info("started %s pid %d", self.name, self.pid)

    def exited(self, status: int) -> int:
        """Record the exit of `pid` (a waitpid status); schedules a restart; returns the exit code."""
        code = os.waitstatus_to_exitcode(status)
        ran = now() - self.started_at
        self.pid = None
        if ran >= HEALTHY_AFTER_S:
            self.failures = 0
        restart_at = self._schedule_restart()
        log.warning("%s exited with %d after %.1fs; restart in %.1fs",
                    self.name, code, ran, restart_at - now())
        return code

    def _schedule_restart(self) -> float:
        """Set and return the time of the next start."""
        delay = 0.0 if self.failures == 0 else min(0.5 * 2 ** (self.failures - 1), MAX_BACKOFF_S)
        self.failures += 1
        self.restarts += 1
        self.restart_at = now() + delay
        return self.restart_at

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the service's log, for the agent-exited event."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def tcp_listening(port: int, proc_file: str = "/proc/net/tcp") -> bool:
    """True if some socket listens on `port` (reading /proc costs no process in the guest)."""
    wanted = f":{port:04X}"
    try:
        with open(proc_file) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1].endswith(wanted) and fields[3] == "0A":
                    return True
    except (OSError, StopIteration):
        pass
    return False


def unix_listening(path: str, proc_file: str = "/proc/net/unix") -> bool:
    """True if a listening unix socket is bound at `path`."""
    if not os.path.exists(path):
        return False  # a stat is far cheaper than reading the whole table
    try:
        with open(proc_file) as f:
            next(f)
            for line in f:
                fields = line.split()
                # Flags 00010000 is __SO_ACCEPTCON: the socket is listening.
                if len(fields) >= 8 and fields[7] == path and fields[3] == "00010000":
                    return True
    except (OSError, StopIteration):
        pass
    return False


def cap_log(path: str, limit: int = 8 << 20, keep: int = 1 << 20) -> bool:
    """Keep a service log on the RAM-backed /run bounded: when over `limit`, save
    its last `keep` bytes as `path`.1 and truncate it in place (the writer opened
    it O_APPEND, so it carries on at the new end). Returns True if it was cut."""
    try:
        if os.path.getsize(path) <= limit:
            return False
        with open(path, "rb") as f:
            f.seek(-keep, os.SEEK_END)
            tail = f.read()
        with open(path + ".1", "wb") as f:
            f.write(tail)
        os.truncate(path, 0)
        return True
    except OSError:
        return False
