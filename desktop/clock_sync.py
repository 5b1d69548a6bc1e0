"""Keeps the guest clock right after the host sleeps.

A suspended host freezes the VM; on resume the guest clock is behind by the
time asleep (TLS certificates and `make` then misbehave). Suspend shows up as
wall-clock time advancing more than monotonic time (CLOCK_MONOTONIC stops
during suspend), so we compare both deltas periodically; a jump, or a
reconnect of the SSH link (which often follows a resume), triggers setting
the guest clock with `date -s` over the link. That costs a guest process,
which is fine because it is rare.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from desktop.ssh_link import LinkError, SshLink

log = logging.getLogger(__name__)

SET_CLOCK_COMMAND = "date -u -s @{seconds}"


@dataclass
class ClockSyncResult:
    """One attempt to set the guest clock."""

    reason: str
    seconds: str
    exit_status: int
    output: bytes


class ClockSync:
    """Detects host clock jumps and sets the guest clock through the link."""

    def __init__(self, link: SshLink, *, wall_clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, jump_threshold_s: float = 2.0,
                 check_interval_s: float = 5.0, command_template: str = SET_CLOCK_COMMAND,
                 sync_on_start: bool = True) -> None:
        self.link = link
        # Injectable so tests can simulate a suspend without suspending.
        self._wall = wall_clock
        self._mono = monotonic
        self.jump_threshold_s = jump_threshold_s
        self.check_interval_s = check_interval_s
        self.command_template = command_template
        # A supervisor re-attaching to a running machine cannot know how long
        # the host slept meanwhile: sync once at start.
        self.sync_on_start = sync_on_start
        self.last_result: ClockSyncResult | None = None
        self.sync_count = 0
        self._last_sample = (self._wall(), self._mono())
        self._pending_reason: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sync_lock = threading.Lock()

    def start(self) -> None:
        self._stop.clear()
        self._last_sample = (self._wall(), self._mono())
        self.link.add_reconnect_listener(self._on_reconnect)
        if self.sync_on_start:
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
        # hand the (slow) guest command to our own thread.
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
        """One periodic check: sync if the host clock jumped or a reconnect asked for it."""
        reason, self._pending_reason = self._pending_reason, None
        drift = self.detect_jump()
        if drift is not None:
            reason = f"host clock jumped {drift:+.1f} s (suspend/resume or clock step)"
        if reason is None:
            return None
        try:
            return self.sync_now(reason)
        except LinkError as exc:
            # The guest may still be waking up; the next reconnect retries.
            log.warning("could not set the guest clock (%s): %s", reason, exc)
            return None

    def sync_now(self, reason: str = "requested") -> ClockSyncResult:
        """Set the guest clock to the host's now; raises LinkError if the link is down."""
        with self._sync_lock:
            seconds = f"{self._wall():.3f}"
            rc, out, err = self.link.run(self.command_template.format(seconds=seconds), timeout=30)
            result = ClockSyncResult(reason, seconds, rc, out + err)
            self.last_result = result
            self.sync_count += 1
        if rc != 0:
            log.warning("setting the guest clock failed (%d): %s", rc, (out + err).decode(errors="replace").strip())
        else:
            log.info("guest clock set to %s (%s)", seconds, reason)
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.check_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.check()
