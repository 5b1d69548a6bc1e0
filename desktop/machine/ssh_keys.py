"""The machine's SSH client key pair (ed25519) and the known_hosts file of its pinned host key."""

from __future__ import annotations

import base64
from pathlib import Path

from runtime.atomic_file import write_bytes_atomic


def generate_keypair(private_path: Path, comment: str = "dockyard") -> str:
    """Write an OpenSSH ed25519 private key (0600) and .pub; return the public key line.

    Uses `cryptography` (a paramiko dependency) so no ssh-keygen is needed on the host.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    private_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(private_path, private, mode=0o600)
    write_bytes_atomic(private_path.with_suffix(".pub"), (line + "\n").encode(), mode=0o644)
    return line


def public_key_line(private_path: Path) -> str:
    return private_path.with_suffix(".pub").read_text().strip()


def kernel_key_argument(public_line: str) -> str:
    """The `dockyard.key=` kernel argument: the public key line, base64 without newlines."""
    return "dockyard.key=" + base64.b64encode(public_line.encode()).decode()


def write_known_hosts(path: Path, port: int, host_key_line: str) -> None:
    """known_hosts for OpenSSH's `ssh` to the forwarded port, so `dockyard machine ssh` verifies too."""
    write_bytes_atomic(path, f"[127.0.0.1]:{port} {host_key_line}\n".encode(), mode=0o600)
