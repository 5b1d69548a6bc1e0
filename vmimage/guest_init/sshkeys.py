"""SSH keys of the guest: the host key (kept on the data disk) and the authorized key."""

from __future__ import annotations

import os

from . import spawn
from .layout import AUTHORIZED_KEYS, HOST_KEY


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_public_key(path: str) -> tuple[str, str] | None:
    """(type, base64 blob) of `path`.pub, or None if either half is missing or empty."""
    try:
        if os.path.getsize(path) == 0:
            return None
        with open(path + ".pub") as pub:
            fields = pub.read().split()
    except OSError:
        return None
    return (fields[0], fields[1]) if len(fields) >= 2 else None


def ensure_host_key(path: str = HOST_KEY) -> tuple[str, str]:
    """Generate the ed25519 host key once; return (type, base64 blob) of its public half.

    ssh-keygen writes into a temp name on the same filesystem; both files are
    fsynced (ssh-keygen does not) and the private key is renamed last, so a
    power cut never leaves an empty or half key behind. A damaged pair is
    replaced.
    """
    key = read_public_key(path)
    if key is None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        for leftover in (tmp, tmp + ".pub"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        status = spawn.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dockyard",
                            "-f", tmp], "/run/dockyard/ssh-keygen.log")
        if status != 0:
            raise RuntimeError(f"ssh-keygen failed with status {status}")
        _fsync(tmp + ".pub")
        _fsync(tmp)
        os.rename(tmp + ".pub", path + ".pub")
        os.rename(tmp, path)
        _fsync(os.path.dirname(path))
        key = read_public_key(path)
        if key is None:
            raise RuntimeError(f"ssh-keygen left no usable key at {path}")
    return key


def write_authorized_key(key_line: str, path: str = AUTHORIZED_KEYS) -> None:
    """Install the host user's public key for root (mode 0600)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_line.strip() + "\n" if key_line else "")
    os.rename(tmp, path)
