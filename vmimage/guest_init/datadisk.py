"""The per-machine data disk (vdb): ext4, formatted on first boot, at /var/lib/dockyard."""

from __future__ import annotations

import os

from . import spawn, syscalls
from .layout import DATA_MOUNT
from .logsetup import log

DATA_DEVICE = "/dev/vdb"
EXT_MAGIC_OFFSET = 1080
EXT_MAGIC = b"\x53\xef"
BLANK_PROBE_BYTES = 1 << 20


def classify(head: bytes) -> str:
    """'ext4' if the bytes start an ext2/3/4 filesystem, 'blank' if all zero, else 'unknown'."""
    if head[EXT_MAGIC_OFFSET:EXT_MAGIC_OFFSET + 2] == EXT_MAGIC:
        return "ext4"
    if not head.strip(b"\0"):
        return "blank"
    return "unknown"


def prepare(device: str = DATA_DEVICE, mountpoint: str = DATA_MOUNT) -> str:
    """Mount the data disk, formatting it only if blank; returns what happened.

    A disk holding something else is never formatted: the guest then runs on a
    tmpfs and reports it, so the user's data stays intact.
    """
    if os.path.ismount(mountpoint):
        return "mounted"  # stage 1 found an ext4 disk and mounted it already
    os.makedirs(mountpoint, exist_ok=True)
    try:
        with open(device, "rb") as disk:
            head = disk.read(BLANK_PROBE_BYTES)
    except FileNotFoundError:
        syscalls.mount("tmpfs", mountpoint, "tmpfs", 0, "mode=0755")
        return "missing (tmpfs)"
    kind = classify(head)
    state = "mounted"
    if kind == "blank":
        status = spawn.run(["mkfs.ext4", "-q", "-F", "-L", "dockyard-data", "-m", "0",
                            "-E", "lazy_itable_init=1,lazy_journal_init=1", device],
                           "/run/dockyard/mkfs.log")
        if status != 0:
            log.error("mkfs.ext4 %s failed with %s", device, status)
            syscalls.mount("tmpfs", mountpoint, "tmpfs", 0, "mode=0755")
            return "format failed (tmpfs)"
        state = "formatted"
    elif kind == "unknown":
        log.error("%s holds no ext4 filesystem and is not blank: left alone", device)
        syscalls.mount("tmpfs", mountpoint, "tmpfs", 0, "mode=0755")
        return "unrecognised (tmpfs)"
    syscalls.mount(device, mountpoint, "ext4", syscalls.MS_NOATIME)
    return state
