"""Measuring the guest clock against the host's and correcting it, through the guest's clock service.

The guest init serves its clock on a unix socket (vmimage/guest_init/clock_service.py);
we reach it over the SSH link as a streamlocal channel, so a check costs a few
small packets and no process in the guest.

The offset is measured NTP-style: host time t0, guest time t, host time t1,
offset = t - (t0 + t1) / 2, uncertain by at most half the round trip. The
sample with the shortest round trip of a few is kept. Corrections are relative
(the guest adds what we send), so the time a request spends in transit does not
add an error the way `date -s <absolute time>` did: that one set the clock
8.5 s behind because the command took 8.5 s to run right after boot.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from desktop.ssh_link import LinkError, close_channel

log = logging.getLogger(__name__)

CLOCK_SOCKET = "/run/dockyard/clock.sock"
NS_PER_S = 1_000_000_000
SAMPLES = 4
# Above this the clock is stepped; below it slewed (the guest slews 0.5 s in 10 s).
STEP_THRESHOLD_S = 0.5
# Offsets below this are left alone: samples scatter by about a millisecond.
TOLERANCE_S = 0.005


class GuestClockError(LinkError):
    """The guest's clock service is unreachable or refused a request."""


@dataclass(frozen=True)
class OffsetSample:
    """One NTP-style reading of the guest clock (guest minus host), in seconds."""

    offset_s: float
    rtt_s: float
    # What a slew running in the guest has yet to add to its clock.
    slewing_s: float = 0.0

    @property
    def error_s(self) -> float:
        """The most the true offset can differ from `offset_s`."""
        return self.rtt_s / 2

    @property
    def settled_offset_s(self) -> float:
        """The offset once the running slew is done."""
        return self.offset_s + self.slewing_s


@dataclass(frozen=True)
class Correction:
    """What one check found and did: action is "none", "slew" or "step"."""

    action: str
    measured: OffsetSample
    amount_s: float = 0.0


class GuestClock:
    """A session with the guest's clock service: one channel, closed with the session."""

    def __init__(self, link: Any, socket_path: str = CLOCK_SOCKET, timeout: float = 10.0,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.link = link
        self.socket_path = socket_path
        self.timeout = timeout
        self._now_ns = wall_clock_ns
        self._chan: Any = None
        self._inbox = b""

    def __enter__(self) -> GuestClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None:
            close_channel(chan)

    def request(self, line: str) -> dict[str, Any]:
        """Send one request line, return the guest's JSON reply; GuestClockError if it failed."""
        if self._chan is None:
            self._chan = self.link.open_streamlocal(self.socket_path)
            self._chan.settimeout(self.timeout)
            self._inbox = b""
        try:
            self._chan.sendall(line.encode() + b"\n")
            while b"\n" not in self._inbox:
                data = self._chan.recv(4096)
                if not data:
                    raise GuestClockError("the guest clock service closed the connection")
                self._inbox += data
        except (OSError, EOFError) as exc:
            self.close()
            raise GuestClockError(f"the guest clock service did not answer {line!r}: {exc}") from None
        reply, _, self._inbox = self._inbox.partition(b"\n")
        try:
            answer = json.loads(reply)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "error" in answer or not isinstance(answer.get("ns"), int):
            raise GuestClockError(f"the guest clock service answered {line!r} with {reply[:200]!r}")
        return answer

    def sample(self) -> OffsetSample:
        t0 = self._now_ns()
        answer = self.request("now")
        t1 = self._now_ns()
        return OffsetSample(offset_s=(answer["ns"] - (t0 + t1) / 2) / NS_PER_S, rtt_s=(t1 - t0) / NS_PER_S,
                            slewing_s=int(answer.get("slewing_ns", 0)) / NS_PER_S)

    def measure(self, samples: int = SAMPLES) -> OffsetSample:
        """The sample with the shortest round trip (the least uncertain) of `samples`."""
        return min((self.sample() for _ in range(samples)), key=lambda s: s.rtt_s)

    def step(self, delta_s: float) -> None:
        """Add `delta_s` to the guest clock at once (ends a running slew)."""
        self.request(f"step {round(delta_s * NS_PER_S)}")

    def slew(self, delta_s: float) -> None:
        """Add `delta_s` to the guest clock gradually (replaces a running slew)."""
        self.request(f"slew {round(delta_s * NS_PER_S)}")


def correct(clock: GuestClock, *, force_step: bool = False, step_threshold_s: float = STEP_THRESHOLD_S,
            tolerance_s: float = TOLERANCE_S) -> Correction:
    """Measure the guest clock and bring it to the host's: step when far off (or `force_step`), else slew."""
    measured = clock.measure()
    # A new correction replaces a running slew, which leaves the clock where it is
    # now: what to undo is the current offset, not the settled one.
    if abs(measured.settled_offset_s) <= tolerance_s:
        return Correction("none", measured)
    if force_step or abs(measured.offset_s) > step_threshold_s:
        clock.step(-measured.offset_s)
        return Correction("step", measured, -measured.offset_s)
    clock.slew(-measured.offset_s)
    return Correction("slew", measured, -measured.offset_s)
