"""The guest's clock service (vmimage/guest_init/clock_service.py) served on this host, on a simulated clock.

Setting this machine's real clock from a test would move the host's clock
under everything else that runs here, so the service gets a `SimulatedClock`:
the host's clock plus an offset that `shift` moves and a tick that makes the
offset grow or shrink the way the kernel's tick length does. Everything else
is real: the unix socket, the service's select-driven loop, the protocol, and
(in the link tests) sshd carrying it. The VM tests cover the real kernel clock.
"""

from __future__ import annotations

import select
import threading
import time
from pathlib import Path

from vmimage.guest_init.clock_service import ClockService

NOMINAL_TICK = 10_000


class SimulatedClock:
    """CLOCK_REALTIME = the host's + an offset; a tick other than nominal slews the offset."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._offset_ns = round(offset_s * 1e9)
        self._since_raw = time.monotonic_ns()
        self._tick = NOMINAL_TICK
        self.ticks_set: list[int] = []

    def _offset_now(self, raw: int) -> int:
        return self._offset_ns + (raw - self._since_raw) * (self._tick - NOMINAL_TICK) // NOMINAL_TICK

    def _fold(self) -> None:
        raw = time.monotonic_ns()
        self._offset_ns, self._since_raw = self._offset_now(raw), raw

    @property
    def offset_s(self) -> float:
        """How far this clock is ahead of the host's now."""
        with self._lock:
            return self._offset_now(time.monotonic_ns()) / 1e9

    def set_offset(self, offset_s: float) -> None:
        """Put the clock `offset_s` off the host's, as something outside Dockyard would."""
        with self._lock:
            self._fold()
            self._offset_ns = round(offset_s * 1e9)

    # -- the KernelClock interface -------------------------------------------------
    def now_ns(self) -> int:
        with self._lock:
            return time.time_ns() + self._offset_now(time.monotonic_ns())

    def raw_ns(self) -> int:
        return time.monotonic_ns()

    def shift(self, delta_ns: int) -> None:
        with self._lock:
            self._fold()
            self._offset_ns += delta_ns

    def tick(self) -> int:
        return self._tick

    def set_tick(self, tick_us: int) -> None:
        if not 9000 <= tick_us <= 11000:
            raise OSError(22, "adjtimex: Invalid argument")  # what the kernel answers
        with self._lock:
            self._fold()
            self._tick = tick_us
            self.ticks_set.append(tick_us)


class ServedGuestClock:
    """A ClockService on `path` with a SimulatedClock, run by a thread the way the guest init runs it."""

    def __init__(self, path: Path, offset_s: float = 0.0) -> None:
        self.path = path
        self.clock = SimulatedClock(offset_s)
        self.service = ClockService(str(path), self.clock)  # type: ignore[arg-type]  # same interface
        self.service.open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="guest-clock-service", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # The guest init's loop, reduced to the clock service: select with the slew's deadline.
        while not self._stop.is_set():
            timeout = self.service.timeout()
            readable, _, _ = select.select(self.service.readers(), [], [],
                                           0.05 if timeout is None else min(timeout, 0.05))
            self.service.handle(readable)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.service.close()
