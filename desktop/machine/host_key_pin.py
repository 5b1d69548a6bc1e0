"""The guest's SSH host key, pinned at the first boot and compared at every later one.

The guest keeps its host key on the data disk, so it is the same key for the
machine's whole life. The first boot pins the key the guest announces (trust
on first use, over the VM's own virtio-serial channel); a later boot that
announces another key is refused, naming both fingerprints in the form
`ssh-keygen -l` prints, until `dockyard machine reset-host-key` re-pins.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from runtime.atomic_file import write_bytes_atomic
from runtime.errors import Conflict


class HostKeyChanged(Conflict):
    """The guest announced a host key other than the pinned one."""

    def __init__(self, machine: str, pinned: str, announced: str) -> None:
        self.pinned = pinned
        self.announced = announced
        # One line: the supervisor reports its failure to the CLI as a single line.
        super().__init__(
            f"the SSH host key of machine {machine!r} changed: it announced {fingerprint(announced)} "
            f"({key_type(announced)}), but {fingerprint(pinned)} ({key_type(pinned)}) is pinned; refusing to "
            f"connect. If the machine's data disk was replaced on purpose, re-pin with "
            f"`dockyard machine reset-host-key --name {machine}`"
        )


def key_type(key_line: str) -> str:
    parts = key_line.split()
    return parts[0] if parts else "?"


def fingerprint(key_line: str) -> str:
    """"SHA256:..." of an OpenSSH public key line, as `ssh-keygen -l` prints it (unpadded base64)."""
    parts = key_line.split()
    if len(parts) < 2:
        return "SHA256:?"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return "SHA256:?"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def same_key(a: str, b: str) -> bool:
    """Whether two key lines name the same key (type and blob; comments differ freely)."""
    return a.split()[:2] == b.split()[:2]


def read_pin(path: Path) -> str:
    """The pinned key line, or "" when none is pinned yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def write_pin(path: Path, key_line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (" ".join(key_line.split()[:2]) + "\n").encode(), mode=0o600)


def check(path: Path, machine: str, key_line: str) -> str:
    """The pinned key line ("" when none is pinned yet); HostKeyChanged when another key is pinned."""
    pinned = read_pin(path)
    if pinned and not same_key(pinned, key_line):
        raise HostKeyChanged(machine, pinned, key_line)
    return pinned


def check_or_pin(path: Path, machine: str, announced: str) -> bool:
    """Pin `announced` if nothing is pinned (returns True), accept it if it is the pin (False),
    else raise HostKeyChanged."""
    if check(path, machine, announced):
        return False
    write_pin(path, announced)
    return True
