"""Reads the guest's ready announcement from the virtio-serial channel's unix socket.

QEMU listens on the socket (server=on, wait=off); the host connects right after
the VM starts and the guest writes JSON lines: first, from newer images,
`{"event": "sshd-ready", "host_keys": {...}, "timings": {...}}` as soon as sshd
listens (the host may connect its SSH link while the agent still starts), then
once sshd and the agent answer
`{"event": "ready", "host_keys": {...}, "timings": {...}, "agent_socket": ...}`.
Reading blocks on the socket itself, so there is no polling: a guest that dies
during boot closes the socket and the read ends at once.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeFailure


class GuestNotReady(RuntimeFailure):
    """The VM runs but its guest sent no "ready" in time: a stalled boot, worth one more try."""

log = logging.getLogger(__name__)


@dataclass
class ReadyEvent:
    """The guest's "ready" line: pinned host keys, boot timings, agent socket path."""

    host_keys: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    agent_socket: str = "/run/dockyard/docker.sock"

    def host_key_line(self) -> str:
        """The "ssh-ed25519 AAAA..." line to pin (ed25519 is what our link expects)."""
        if "ssh-ed25519" in self.host_keys:
            return f"ssh-ed25519 {self.host_keys['ssh-ed25519']}"
        raise RuntimeFailure(f"the guest announced no ssh-ed25519 host key (got {sorted(self.host_keys)})")


def parse_ready(event: dict[str, Any]) -> ReadyEvent:
    """Build a ReadyEvent, tolerating odd fields (timings are informative, keys are not)."""
    host_keys = event.get("host_keys")
    if not isinstance(host_keys, dict):
        raise RuntimeFailure(f"the guest's ready message has no host_keys object: {str(event)[:200]}")
    timings_raw = event.get("timings")
    timings: dict[str, float] = {}
    if isinstance(timings_raw, dict):
        for key, value in timings_raw.items():
            if isinstance(value, (int, float)):
                timings[str(key)] = float(value)
    agent_socket = event.get("agent_socket")
    return ReadyEvent(
        host_keys={str(k): str(v) for k, v in host_keys.items()},
        timings=timings,
        agent_socket=agent_socket if isinstance(agent_socket, str) and agent_socket else "/run/dockyard/docker.sock",
    )


@dataclass
class ResumeReport:
    """The guest init's answer to "resumed": whether it stepped its clock, and what failed."""

    clock_stepped: bool
    errors: list[str] = field(default_factory=list)


class ReadyChannel:
    """A connection to the ready channel; `wait_ready` then, optionally, `follow` for later events."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    @classmethod
    def connect(cls, path: Path) -> ReadyChannel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as err:
            sock.close()
            raise RuntimeFailure(f"cannot connect to the guest ready channel {path}: {err.strerror or err}") from err
        return cls(sock)

    @classmethod
    def from_fd(cls, fd: int) -> ReadyChannel:
        return cls(socket.socket(fileno=fd))

    def _readline(self, deadline: float | None) -> bytes:
        while b"\n" not in self._buf:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.sock.settimeout(remaining)
            else:
                self.sock.settimeout(None)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def next_event(self, deadline: float | None = None) -> dict[str, Any]:
        """The next JSON event; non-JSON noise (e.g. a half line from an earlier boot) is skipped."""
        while True:
            line = self._readline(deadline).strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                log.debug("ignoring non-JSON line on the ready channel: %r", line[:200])
                continue
            if isinstance(event, dict):
                return event

    def wait_ready(self, timeout: float, console_log: Path | None = None,
                   on_sshd_ready: Callable[[ReadyEvent], None] | None = None) -> ReadyEvent:
        """Block until the guest says ready; clear errors on timeout or a VM that died.

        `on_sshd_ready` is called (in this thread, so it must not block) with the
        guest's early "sshd-ready" event, if one comes before "ready".
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.next_event(deadline)
            except TimeoutError:
                hint = _console_hint(console_log)
                raise GuestNotReady(f"the guest did not report ready within {timeout:.0f} s{hint}") from None
            except EOFError:
                hint = _console_hint(console_log)
                raise RuntimeFailure(f"the VM closed its ready channel during boot (it stopped){hint}") from None
            if event.get("event") == "ready":
                return parse_ready(event)
            log.info("guest event during boot: %s", event)
            if event.get("event") == "sshd-ready" and on_sshd_ready is not None:
                try:
                    early = parse_ready(event)
                except RuntimeFailure as err:
                    log.info("ignoring a malformed sshd-ready event: %s", err)
                    continue
                on_sshd_ready(early)

    def announce_resume(self, timeout: float) -> ResumeReport:
        """Tell the guest init it was resumed ("resumed <host time>"); what it did about it.

        It steps its clock to the host's and mounts the shares unmounted for the save
        (share_remount.py), with no process to start (an SSH exec costs ~0.2 s in a
        TCG guest just resumed, its translation cache empty), while the SSH link connects.
        """
        deadline = time.monotonic() + timeout
        try:
            self.sock.sendall(f"resumed {time.time():.6f}\n".encode())
        except OSError as err:
            return ResumeReport(clock_stepped=False, errors=[f"the guest init did not answer the resume ({err})"])
        while True:
            try:
                event = self.next_event(deadline)
            except (TimeoutError, EOFError, OSError) as err:
                return ResumeReport(clock_stepped=False,
                                    errors=[f"the guest init did not answer the resume ({type(err).__name__})"])
            if event.get("event") != "resumed":
                log.info("guest event: %s", event)
                continue
            if event.get("clock_error"):
                log.warning("the guest could not step its clock: %s", event["clock_error"])
            else:
                log.info("guest clock stepped to the host's %s", event.get("seconds"))
            errors = event.get("errors")
            return ResumeReport(clock_stepped=not event.get("clock_error"),
                                errors=[str(e) for e in errors] if isinstance(errors, list) else [])

    def follow(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        """Deliver later events (e.g. agent-exited) until the VM closes the channel."""
        while True:
            try:
                event = self.next_event(None)
            except (EOFError, OSError):
                return
            on_event(event)

    def close(self) -> None:
        self.sock.close()


def console_problem(console_log: Path, max_bytes: int = 65536) -> str:
    """The most telling line at the end of the console log: a panic/error line, else the last line."""
    try:
        with open(console_log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - max_bytes))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        lowered = line.lower()
        if "panic" in lowered or "error" in lowered or "cannot" in lowered or "failed" in lowered:
            return line[:200]
    return lines[-1][:200] if lines else ""


def _console_hint(console_log: Path | None) -> str:
    if not console_log:
        return ""
    last = console_problem(console_log)
    return (f" (console: {last!r})" if last else "") + f"; see the guest console log {console_log}"
