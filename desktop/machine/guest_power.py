"""Powering the guest off from the host over its SSH link (used by the manager and the supervisor)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Runs in the background so the exec channel returns before the guest goes away.
# Prefer the guest's own clean shutdown; busybox-style inits power off on SIGUSR2.
POWEROFF_COMMAND = (
    "sync; (if command -v dockyard-poweroff >/dev/null; then dockyard-poweroff; "
    "elif command -v poweroff >/dev/null; then poweroff; else kill -USR2 1; fi) >/dev/null 2>&1 </dev/null &"
)


def request_poweroff(link: Any, timeout: float = 10) -> None:
    """Ask the guest behind a connected SshLink to power off; logs, never raises for a failed command."""
    code, _out, err = link.run(POWEROFF_COMMAND, timeout=timeout)
    if code != 0:
        log.warning("guest power-off command exited %d: %s", code, err[:200])
