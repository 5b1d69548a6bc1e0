"""The guest clock as a container sees it, against the host's: for the clock tests and the bench.

A busybox container reads the wall clock with `adjtimex` (microseconds;
busybox `date` has no %N) each time the host writes a line to its stdin,
through the real docker CLI and the machine's host socket. The offset is
NTP-style: host t0, container t, host t1, offset = t - (t0 + t1) / 2, wrong by
at most half the round trip; the sample with the shortest round trip is kept.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

SCRIPT = "while read x; do adjtimex; echo END; done"
STA_NANO = 0x2000


@dataclass(frozen=True)
class ContainerOffset:
    """Guest clock read in a container minus the host clock, in seconds, and the round trip."""

    offset_s: float
    rtt_s: float

    @property
    def error_s(self) -> float:
        return self.rtt_s / 2

    def __str__(self) -> str:
        return f"{self.offset_s * 1000:+.1f} ms (+-{self.error_s * 1000:.1f} ms)"


class ContainerClock:
    """A running `docker run -i` busybox container answering clock readings."""

    def __init__(self, docker_host: str, image: str) -> None:
        self.proc = subprocess.Popen(
            ["docker", "run", "-i", "--rm", "--network", "none", image, "sh", "-c", SCRIPT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            env=dict(os.environ, DOCKER_HOST=docker_host))

    def __enter__(self) -> ContainerClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()  # `read` fails, the loop and the container end
        except OSError:
            pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def sample(self) -> ContainerOffset:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        t0 = time.time_ns()
        self.proc.stdin.write("x\n")
        self.proc.stdin.flush()
        fields: dict[str, int] = {}
        while (line := self.proc.stdout.readline()) and line.strip() != "END":
            name, _, value = line.partition(":")
            if name.strip() in ("time.tv_sec", "time.tv_usec", "status"):
                fields[name.strip()] = int(value.split()[0])
        t1 = time.time_ns()
        if len(fields) != 3:
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            raise AssertionError(f"the clock container gave no reading (exit {self.proc.poll()}): {err}")
        # With STA_NANO in the kernel's status (ntp tools set it) "tv_usec" holds nanoseconds.
        sub_ns = fields["time.tv_usec"] * (1 if fields["status"] & STA_NANO else 1000)
        guest_ns = fields["time.tv_sec"] * 1_000_000_000 + sub_ns
        return ContainerOffset((guest_ns - (t0 + t1) / 2) / 1e9, (t1 - t0) / 1e9)

    def measure(self, samples: int = 8) -> ContainerOffset:
        """The least uncertain of `samples` readings."""
        return min((self.sample() for _ in range(samples)), key=lambda s: s.rtt_s)
