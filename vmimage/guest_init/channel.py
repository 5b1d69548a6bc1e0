"""The ready channel: JSON lines on the virtio-serial port org.dockyard.guest.0.

Without udev there is no /dev/virtio-ports/<name> link, so the port is found
through sysfs. Writes are non-blocking and queued: init must never hang because
the host has not connected yet.
"""

from __future__ import annotations

import os
import time

from .logsetup import log

PORT_NAME = "org.dockyard.guest.0"
HOST_RETRY_S = 0.5
SYSFS_PORTS = "/sys/class/virtio-ports"


def find_port(name: str = PORT_NAME, sysfs: str = SYSFS_PORTS) -> str | None:
    """Device path of the virtio-serial port called `name`, if the host configured one."""
    try:
        entries = os.listdir(sysfs)
    except FileNotFoundError:
        return None
    for entry in entries:
        try:
            with open(f"{sysfs}/{entry}/name") as f:
                if f.read().strip() == name:
                    return f"/dev/{entry}"
        except OSError:
            continue
    return None


class Channel:
    """Line-oriented, non-blocking link to the host; `fd` is None without a port."""

    def __init__(self, device: str | None) -> None:
        self.fd: int | None = None
        self.pending = b""
        self.inbox = b""
        # While no host is connected the port polls as hung up (readable, read
        # returns 0): it is left out of select() until this time, then retried,
        # or until the port's SIGIO says the host connected (host_changed).
        self.away_until = 0.0
        if device:
            try:
                self.fd = os.open(device, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as err:
                log.error("cannot open %s: %s", device, err)
                return
            # The port signals a host (dis)connection and incoming data with SIGIO, which
            # the init turns into a select() wakeup. Without it a host connecting in the
            # retry pause waits out the rest of it: after a resume that pause is the one
            # begun when the host left for the save, up to HOST_RETRY_S on the start path.
            try:
                import fcntl
                fcntl.fcntl(self.fd, fcntl.F_SETOWN, os.getpid())
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_ASYNC)
            except OSError as err:
                log.warning("no SIGIO from %s (a connecting host waits for the retry): %s", device, err)

    def host_changed(self) -> None:
        """SIGIO: the host connected or sent something; look at the port again now."""
        self.away_until = 0.0

    def send(self, message: dict) -> None:
        """Queue one JSON line and write as much as the port takes now."""
        import json  # deferred: nothing is sent before sshd and the agent run
        self.pending += json.dumps(message, separators=(",", ":")).encode() + b"\n"
        self.flush()

    def flush(self) -> None:
        """Write queued bytes; keeps the rest when the host side is not reading."""
        if self.fd is None:
            self.pending = b""
            return
        while self.pending:
            try:
                written = os.write(self.fd, self.pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                # ENODEV/EPIPE while the host is disconnected: retry on the next event.
                log.debug("ready channel write: %s", err)
                return
            self.pending = self.pending[written:]

    def wait_sets(self) -> tuple[list[int], list[int], float | None]:
        """(readers, writers, max timeout) to give select() for this channel now."""
        if self.fd is None:
            return [], [], None
        away = self.away_until - time.monotonic()
        if away > 0:
            return [], [], away
        return [self.fd], ([self.fd] if self.pending else []), None

    def read_lines(self) -> list[str]:
        """Complete lines the host sent (requests such as 'status')."""
        if self.fd is None:
            return []
        try:
            chunk = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError, OSError):
            return []
        if not chunk:
            self.away_until = time.monotonic() + HOST_RETRY_S
            return []
        self.inbox += chunk
        *lines, self.inbox = self.inbox.split(b"\n")
        return [line.decode(errors="replace").strip() for line in lines if line.strip()]
