"""Run the same docker CLI command against our agent and the reference dockerd, and compare.

Container IDs differ between the engines and our CLI prints a line of its own
when a start fails; `normalised` keeps what both must agree on: the exit code,
stdout, and the daemon's error message.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Any

_ID_RE = re.compile(r"\b[0-9a-f]{64}\b")


@dataclass(frozen=True)
class Outcome:
    """What a docker CLI run shows: exit code, stdout, the daemon's error (if any)."""

    code: int
    out: str
    error: str


def normalised(result: subprocess.CompletedProcess, names: dict[str, str] | None = None) -> Outcome:
    """IDs become <ID>; only the "Error response from daemon" line of stderr is kept."""
    error = next((line.split("Error response from daemon: ", 1)[1] for line in result.stderr.splitlines()
                  if "Error response from daemon: " in line), "")

    def clean(text: str) -> str:
        return _ID_RE.sub("<ID>", text)

    return Outcome(result.returncode, clean(result.stdout), clean(error))


class Engines:
    """Our agent and dockerd side by side; containers they run use `--network none`."""

    def __init__(self, ours: Any, reference: Any, image: str) -> None:
        self.ours = ours
        self.reference = reference
        self.image = image
        for engine in (ours, reference):
            pulled = engine.docker("pull", "-q", image, timeout=120)
            assert pulled.returncode == 0, pulled.stderr

    def each(self, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
        """The same command on both: (ours, dockerd's)."""
        return (self.ours.docker(*args, timeout=timeout), self.reference.docker(*args, timeout=timeout))

    def compare(self, *args: str, timeout: float = 60) -> Outcome:
        """Run on both, assert they agree, return the outcome."""
        ours, theirs = self.each(*args, timeout=timeout)
        assert normalised(ours) == normalised(theirs), (ours.stderr, theirs.stderr)
        return normalised(ours)

    def cleanup(self, *names: str) -> None:
        for engine in (self.ours, self.reference):
            engine.docker("rm", "-f", "-v", *names)
