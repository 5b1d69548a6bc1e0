"""SSH keys of the guest: the host key (kept on the data disk) and the authorized key."""

from __future__ import annotations

import os

from . import spawn

HOST_KEY = "/var/lib/dockyard/ssh/ssh_host_ed25519_key"
AUTHORIZED_KEYS = "/etc/dockyard/authorized_keys"


def ensure_host_key(path: str = HOST_KEY) -> tuple[str, str]:
    """Generate the ed25519 host key once; return (type, base64 blob) of its public half.

    ssh-keygen writes into a temp name on the same filesystem and the private key
    is renamed last, so a crash never leaves a key without its .pub.
    """
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        for leftover in (tmp, tmp + ".pub"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        status = spawn.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dockyard",
                            "-f", tmp], "/run/dockyard/ssh-keygen.log")
        if status != 0:
            raise RuntimeError(f"ssh-keygen failed with status {status}")
        os.rename(tmp + ".pub", path + ".pub")
        os.rename(tmp, path)
        fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    with open(path + ".pub") as pub:
        key_type, blob = pub.read().split()[:2]
    return key_type, blob


def write_authorized_key(key_line: str, path: str = AUTHORIZED_KEYS) -> None:
    """Install the host user's public key for root (mode 0600)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_line.strip() + "\n" if key_line else "")
    os.rename(tmp, path)
