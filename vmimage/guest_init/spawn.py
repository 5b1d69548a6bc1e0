"""Starting programs from pid 1 without importing subprocess (slow under TCG)."""

from __future__ import annotations

import os
import signal

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8"}
# posix_spawnp searches the PATH of init's own environment (empty at boot).
os.environ["PATH"] = PATH
_DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD,
                    signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE)


def spawn(argv: list[str], log_path: str = "/dev/null", env: dict[str, str] | None = None) -> int:
    """Start argv[0] (searched in PATH) with stdout+stderr appended to `log_path`; return the pid."""
    environment = dict(BASE_ENV, **(env or {}))
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # Children get default signal handling and their own session, so a signal
    # meant for init never leaks to them through a shared process group.
    return os.posix_spawnp(argv[0], argv, environment, file_actions=actions,
                           setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=set())


def run(argv: list[str], log_path: str = "/dev/null") -> int:
    """Run to completion and return the exit status (init's reaper must not be active)."""
    pid = spawn(argv, log_path)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
