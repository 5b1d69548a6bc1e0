"""Docker's restart policies and the restart manager's backoff.

Docker restarts after 100 ms, doubling the delay after each consecutive restart,
and starts again at 100 ms once a run lasted at least 10 s (moby restartmanager).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument

POLICY_NAMES = ("no", "always", "unless-stopped", "on-failure")
INITIAL_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER_RUNNING = 10.0


@dataclass
class RestartPolicy:
    """HostConfig.RestartPolicy: `name` is one of POLICY_NAMES."""

    name: str = "no"
    max_retries: int = 0

    @classmethod
    def from_host_config(cls, host_config: dict[str, Any]) -> RestartPolicy:
        """Parse and validate; raises InvalidArgument with Docker's messages."""
        raw = host_config.get("RestartPolicy") or {}
        name = raw.get("Name") or "no"
        retries = int(raw.get("MaximumRetryCount") or 0)
        if name not in POLICY_NAMES:
            raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; "
                                  "use one of 'no', 'always', 'on-failure', or 'unless-stopped'")
        if retries < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count must be a positive integer")
        if retries and name != "on-failure":
            raise InvalidArgument("invalid restart policy: maximum retry count can only be used with 'on-failure'")
        return cls(name, retries)

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "MaximumRetryCount": self.max_retries}

    def should_restart(self, exit_code: int, restart_count: int, stopped_by_user: bool) -> bool:
        """Whether a container that just exited with `exit_code` is started again."""
        if stopped_by_user or self.name == "no":
            return False
        if self.name in ("always", "unless-stopped"):
            return True
        # on-failure
        if exit_code == 0:
            return False
        return self.max_retries == 0 or restart_count < self.max_retries

    def restarts_at_engine_start(self, stopped_by_user: bool) -> bool:
        """Whether the container comes back when the engine starts (daemon restart)."""
        if self.name == "always":
            return True
        return self.name == "unless-stopped" and not stopped_by_user


class Backoff:
    """The delay before the next restart; call `next_delay(ran_for)` after each exit."""

    def __init__(self) -> None:
        self._delay = 0.0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= RESET_AFTER_RUNNING or self._delay == 0.0:
            self._delay = INITIAL_DELAY
        else:
            self._delay = min(self._delay * 2, MAX_DELAY)
        return self._delay

    def reset(self) -> None:
        self._delay = 0.0
