"""The bare guest image booted under plain QEMU (no machine manager), for guest and link tests.

The session's `vm` fixture (tests/conftest.py) boots it once; tests that need
a boot of their own (a late host, virtiofs) use `boot_guest` or qemu_boot.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import paramiko

from tests.support import qemu_boot

IMAGE_CACHE = Path(os.environ.get("DOCKYARD_TEST_CACHE",
                                  Path.home() / ".cache" / "dockyard-tests")) / "vm-images"
# The guest RTC is set far in the past so the tests prove the clock comes from
# dockyard.time and not from QEMU's RTC.
WRONG_RTC = ["-rtc", "base=2001-01-01T00:00:00"]
READY_TIMEOUT_S = 180.0


@dataclass
class GuestVM:
    """A booted guest and what the tests need to reach it."""

    guest: qemu_boot.BootedGuest
    ready: dict
    key_path: Path
    share_dir: Path
    data_disk: Path
    cmdline: str
    workdir: Path

    def ssh(self) -> paramiko.SSHClient:
        """A paramiko client, key auth, host key pinned to the one the ready message reported."""
        client = paramiko.SSHClient()
        blob = base64.b64decode(self.ready["host_keys"]["ssh-ed25519"])
        client.get_host_keys().add(f"[127.0.0.1]:{self.guest.ssh_port}", "ssh-ed25519",
                                   paramiko.Ed25519Key(data=blob))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", self.guest.ssh_port, username="root",
                       pkey=paramiko.Ed25519Key.from_private_key_file(str(self.key_path)),
                       allow_agent=False, look_for_keys=False, timeout=30, auth_timeout=30)
        return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `command` in the guest: (exit status, stdout, stderr)."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def guest_cmdline(image, key_path: Path, share_dir: Path, sharefs: str = "9p") -> str:
    """The image's base arguments plus the dockyard.* ones the machine manager appends."""
    key = base64.b64encode(key_path.with_suffix(".pub").read_bytes().strip()).decode()
    return (f"{image.cmdline} dockyard.key={key} dockyard.sharefs={sharefs} "
            f"dockyard.shares=share0:{quote(str(share_dir), safe='/')} dockyard.hostloop=10.0.2.2 "
            f"dockyard.time={int(time.time())}")


def boot_guest(image, workdir: Path, data_disk: Path, key_path: Path, share_dir: Path,
               sharefs: str = "9p") -> GuestVM:
    """Boot `image` and wait for its ready message."""
    cmdline = guest_cmdline(image, key_path, share_dir, sharefs)
    guest = qemu_boot.boot(image.kernel, image.initrd, image.rootfs, data_disk, cmdline, workdir,
                           shares=[("share0", share_dir)], extra_args=WRONG_RTC, sharefs=sharefs)
    try:
        ready = guest.wait_for("ready", READY_TIMEOUT_S)
    except BaseException:
        guest.kill()
        raise
    return GuestVM(guest, ready, key_path, share_dir, data_disk, cmdline, workdir)
