"""The guest clock service: the host reads and corrects the guest clock through it.

The init serves it on a root-only unix socket; the host reaches that over its
SSH link as a streamlocal channel, so a check costs two small packets and no
process start in the slow TCG guest (`date -s` over SSH took 4-11 s there).
One request per line, one JSON line back; times are integer nanoseconds:

    now        -> {"ns": CLOCK_REALTIME, "slewing_ns": what a running slew has yet to add}
    step NS    -> add NS to the clock at once (relative, in the kernel: the time the
                  request spent in transit does not matter); ends a running slew
    slew NS    -> add NS gradually: the tick runs SLEW_RATE fast or slow until NS are
                  absorbed (like chrony's fast slews); replaces a running slew

The host decides what to correct and when (desktop/clock_sync.py); this side
only measures and applies, and ends a slew on time by itself even if the host
goes away.
"""

from __future__ import annotations

import json
import os
import socket
import time

from . import timex
from .logsetup import log

CLOCK_SOCKET = "/run/dockyard/clock.sock"
# 5 %: 50 ms are slewed in 1 s, 0.5 s in 10 s; the kernel allows up to 10 %.
SLEW_RATE = 0.05
MAX_SLEW_NS = 5 * timex.NS_PER_S
MAX_CLIENTS = 4
MAX_LINE = 128


class KernelClock:
    """The guest's real clock: CLOCK_REALTIME, CLOCK_MONOTONIC_RAW and adjtimex."""

    def now_ns(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_REALTIME)

    def raw_ns(self) -> int:
        # Never slewed (CLOCK_MONOTONIC is, by the tick we change): slews are timed on it.
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)

    def shift(self, delta_ns: int) -> None:
        timex.shift_clock(delta_ns)

    def tick(self) -> int:
        return timex.read_tick()

    def set_tick(self, tick_us: int) -> None:
        timex.set_tick(tick_us)


class ClockService:
    """Serves the clock protocol on a unix socket, driven by the init's select loop."""

    def __init__(self, path: str = CLOCK_SOCKET, clock: KernelClock | None = None) -> None:
        self.path = path
        self.clock = clock or KernelClock()
        self.listener: socket.socket | None = None
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self.base_tick: int | None = None
        # A running slew: the signed rate it adds and when (CLOCK_MONOTONIC_RAW ns) it ends.
        self.slew_rate = 0.0
        self.slew_end_ns: int | None = None

    def open(self) -> None:
        """Listen on the socket (root only: it sets the machine's clock)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old_umask)
        listener.listen(MAX_CLIENTS)
        self.listener = listener

    def close(self) -> None:
        for sock, _ in self.clients.values():
            sock.close()
        self.clients.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    # -- the init's loop ------------------------------------------------------
    def readers(self) -> list[int]:
        """File descriptors select() should watch for us."""
        if self.listener is None:
            return []
        return [self.listener.fileno(), *self.clients]

    def timeout(self) -> float | None:
        """Seconds until a running slew must end, else None."""
        if self.slew_end_ns is None:
            return None
        return max(0.0, (self.slew_end_ns - self.clock.raw_ns()) / timex.NS_PER_S)

    def handle(self, readable: list[int]) -> None:
        """Serve what select() found readable, and end a slew that is due."""
        if self.listener is not None and self.listener.fileno() in readable:
            self._accept()
        for fd in [fd for fd in readable if fd in self.clients]:
            self._serve(fd)
        self.end_slew_if_due()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self.clients) >= MAX_CLIENTS:
            sock.close()  # the host uses one; more means something is wrong
            return
        sock.setblocking(False)
        self.clients[sock.fileno()] = (sock, bytearray())

    def _serve(self, fd: int) -> None:
        sock, inbox = self.clients[fd]
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        inbox += data
        replies = []
        while b"\n" in inbox:
            line, _, rest = bytes(inbox).partition(b"\n")
            inbox[:] = rest
            replies.append(self.answer(line.decode(errors="replace").strip()))
        try:
            if replies:
                # A few dozen bytes to a reader that waits for them: they fit the socket buffer.
                sock.send("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in replies).encode())
        except OSError:
            data = b""
        if not data or len(inbox) > MAX_LINE:
            del self.clients[fd]
            sock.close()

    # -- the protocol -------------------------------------------------------------
    def answer(self, line: str) -> dict:
        """The reply to one request line."""
        word, _, arg = line.partition(" ")
        try:
            if word == "now":
                pass
            elif word == "step":
                self.step(int(arg))
            elif word == "slew":
                self.slew(int(arg))
            else:
                return {"error": f"unknown request {word!r}"}
        except (ValueError, OSError) as err:
            return {"error": f"{line}: {err}"}
        return {"ns": self.clock.now_ns(), "slewing_ns": self.slewing_ns()}

    def step(self, delta_ns: int) -> None:
        self.stop_slew()
        self.clock.shift(delta_ns)
        log.info("clock stepped by %+.6f s", delta_ns / timex.NS_PER_S)

    def slew(self, delta_ns: int) -> None:
        if abs(delta_ns) > MAX_SLEW_NS:
            raise ValueError(f"a slew of more than {MAX_SLEW_NS / timex.NS_PER_S:.0f} s: step instead")
        self.stop_slew()
        if self.base_tick is None:
            self.base_tick = self.clock.tick()
        base = self.base_tick
        tick_delta = max(1, round(base * SLEW_RATE))
        rate = tick_delta / base
        duration_ns = round(abs(delta_ns) / rate)
        if duration_ns == 0:
            return
        self.clock.set_tick(base + (tick_delta if delta_ns > 0 else -tick_delta))
        self.slew_rate = rate if delta_ns > 0 else -rate
        self.slew_end_ns = self.clock.raw_ns() + duration_ns

    def slewing_ns(self) -> int:
        """What the running slew has yet to add (negative: to take away)."""
        if self.slew_end_ns is None:
            return 0
        return round(self.slew_rate * max(0, self.slew_end_ns - self.clock.raw_ns()))

    def stop_slew(self) -> None:
        """Put the tick back: the clock keeps whatever the slew added so far."""
        if self.slew_end_ns is not None and self.base_tick is not None:
            self.clock.set_tick(self.base_tick)
        self.slew_end_ns = None
        self.slew_rate = 0.0

    def end_slew_if_due(self) -> None:
        if self.slew_end_ns is not None and self.clock.raw_ns() >= self.slew_end_ns:
            try:
                self.stop_slew()
            except OSError as err:
                log.error("could not end the clock slew: %s", err)
