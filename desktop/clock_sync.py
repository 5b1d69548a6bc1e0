"""Keeps the guest clock within a few milliseconds of the host's.

* When the machine is up (the supervisor starts us once the agent answers),
  unless the guest init already stepped it for a resume, and whenever asked
  (`ClockSync.sync_now`), the guest clock is stepped to the host's.
* Every `check_interval_s` (the `clock_check` setting, 30 s) one check measures
  the offset and slews it away, or steps it when it is over 0.5 s
  (clock_discipline.py has the measuring and the policy). A check is a channel
  to the guest init and four short request/reply pairs: the guest's idle CPU
  does not notice it.
* A host suspend freezes the VM, so on resume the guest clock is behind by the
  time asleep. It shows up here as wall-clock time advancing more than
  monotonic time (CLOCK_MONOTONIC stops during suspend on Linux and macOS); a
  jump over `jump_threshold_s`, or a reconnect of the SSH link (which often
  follows a resume), steps the clock at once rather than at the next check.
  The host-only jump test runs every `wake_s` and costs nothing in the guest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from desktop.clock_discipline import CLOCK_SOCKET, Correction, GuestClock, correct
from desktop.ssh_link import ChannelOpenRefused, LinkError

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 30.0


@dataclass
class ClockSyncResult:
    """One check or sync of the guest clock: why, and what it measured and did."""

    reason: str
    correction: Correction

    @property
    def offset_s(self) -> float:
        """The offset found before correcting (guest minus host, seconds)."""
        return self.correction.measured.offset_s


def _log(result: ClockSyncResult) -> None:
    c = result.correction
    if c.action == "none":
        log.debug("guest clock within %.1f ms of the host's (%s)", c.measured.offset_s * 1000, result.reason)
    else:
        log.info("guest clock was %+.1f ms off (+-%.1f ms): %s by %+.1f ms (%s)", c.measured.offset_s * 1000,
                 c.measured.error_s * 1000, "stepped" if c.action == "step" else "slewing", c.amount_s * 1000,
                 result.reason)


class ClockSync:
    """A thread that keeps the guest clock right: periodic checks, suspend detection, reconnects."""

    def __init__(self, link: Any, *, check_interval_s: float | None = None, wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, jump_threshold_s: float = 2.0,
                 wake_s: float = 5.0, socket_path: str = CLOCK_SOCKET, sync_on_start: bool = True) -> None:
        self.link = link
        if check_interval_s is None:
            from desktop import settings

            check_interval_s = settings.load().clock_check
        self.check_interval_s = check_interval_s
        # Injectable so tests can simulate a suspend without suspending.
        self._wall = wall_clock
        self._mono = monotonic
        self.jump_threshold_s = jump_threshold_s
        self.wake_s = min(wake_s, check_interval_s)
        self.socket_path = socket_path
        self.sync_on_start = sync_on_start
        self.last_result: ClockSyncResult | None = None
        self.sync_count = 0    # steps asked for (start, jumps, reconnects, sync_now)
        self.check_count = 0   # periodic checks done
        self._last_sample = (self._wall(), self._mono())
        self._next_check = self._mono() + self.check_interval_s
        self._pending_reason: str | None = None
        self._no_service_logged = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Keep the guest clock right in a thread, which first steps it (the agent just became ready)."""
        self._stop.clear()
        self._last_sample = (self._wall(), self._mono())
        self._next_check = self._mono() + self.check_interval_s
        self.link.add_reconnect_listener(self._on_reconnect)
        if self.sync_on_start:
            # In the thread, not here: `machine start` does not wait for it (up to a second
            # while the guest is busy booting), and it is done long before a first container starts.
            self._pending_reason = "clock sync started"
            self._wake.set()
        self._thread = threading.Thread(target=self._loop, name="clock-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.link.remove_reconnect_listener(self._on_reconnect)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _on_reconnect(self) -> None:
        # Runs in the thread that reconnected, which is serving a request:
        # hand the guest requests to our own thread.
        self._pending_reason = "SSH link reconnected"
        self._wake.set()

    def detect_jump(self) -> float | None:
        """Seconds the wall clock moved beyond the monotonic clock since the last call, if over the threshold."""
        wall, mono = self._wall(), self._mono()
        last_wall, last_mono = self._last_sample
        self._last_sample = (wall, mono)
        drift = (wall - last_wall) - (mono - last_mono)
        return drift if abs(drift) > self.jump_threshold_s else None

    def check(self) -> ClockSyncResult | None:
        """One round: step if the host clock jumped or a reconnect asked for it, else the periodic check if due."""
        reason, self._pending_reason = self._pending_reason, None
        jump = self.detect_jump()
        if jump is not None:
            reason = f"host clock jumped {jump:+.1f} s (suspend/resume or clock step)"
        if reason is not None:
            return self._attempt(reason)
        if self._mono() >= self._next_check:
            return self._attempt("periodic check", force_step=False)
        return None

    def sync_now(self, reason: str = "requested") -> ClockSyncResult:
        """Step the guest clock to the host's now; raises LinkError if it cannot."""
        return self._run(reason, force_step=True)

    def _run(self, reason: str, force_step: bool) -> ClockSyncResult:
        with self._lock:
            with GuestClock(self.link, self.socket_path) as clock:
                result = ClockSyncResult(reason, correct(clock, force_step=force_step))
            self.last_result = result
            if force_step:
                self.sync_count += 1
            else:
                self.check_count += 1
            # Any correction restarts the period: the next check is a full interval away.
            self._next_check = self._mono() + self.check_interval_s
        _log(result)
        return result

    def _attempt(self, reason: str, force_step: bool = True) -> ClockSyncResult | None:
        try:
            return self._run(reason, force_step)
        except ChannelOpenRefused as exc:
            # A guest booted from an image older than the clock service.
            if not self._no_service_logged:
                log.warning("the guest has no clock service (%s): its clock is not kept in step; restart "
                            "the machine to boot the current image", exc)
                self._no_service_logged = True
        except LinkError as exc:
            # The guest may still be waking up; the next check or reconnect retries.
            log.warning("could not correct the guest clock (%s): %s", reason, exc)
        self._next_check = self._mono() + self.check_interval_s
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(max(0.0, min(self.wake_s, self._next_check - self._mono())))
            self._wake.clear()
            if self._stop.is_set():
                return
            self.check()
