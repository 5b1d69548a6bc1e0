"""Host folders (9p or virtiofs) mounted at the same path as on the host."""

from __future__ import annotations

import os

from . import spawn, syscalls
from .bootopts import Share

NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"
MODULES = {"9p": ["9pnet_virtio", "9p"], "virtiofs": ["virtiofs"]}


def mount_shares(sharefs: str, shares: list[Share]) -> tuple[list[str], list[str]]:
    """Mount every share; return (mounted paths, error messages)."""
    if sharefs == "none" or not shares:
        return [], []
    errors: list[str] = []
    status = spawn.run(["modprobe", "-a", *MODULES[sharefs]], "/run/dockyard/modprobe.log")
    if status != 0:
        errors.append(f"modprobe {' '.join(MODULES[sharefs])} failed ({status})")
    mounted, mount_errors = _mount_each(sharefs, shares)
    return mounted, errors + mount_errors


def remount_shares(sharefs: str, shares: list[Share]) -> tuple[list[str], list[str]]:
    """After a resume: mount again each share the host unmounted for the save
    (desktop/machine/share_remount.py); its modules are loaded already."""
    if sharefs == "none" or not shares:
        return [], []
    return _mount_each(sharefs, [share for share in shares if not os.path.ismount(share.path)])


def _mount_each(sharefs: str, shares: list[Share]) -> tuple[list[str], list[str]]:
    mounted: list[str] = []
    errors: list[str] = []
    for share in shares:
        try:
            os.makedirs(share.path, exist_ok=True)
            if sharefs == "9p":
                syscalls.mount(share.tag, share.path, "9p", 0, NINEP_OPTIONS)
            else:
                syscalls.mount(share.tag, share.path, "virtiofs")
            mounted.append(share.path)
        except OSError as err:
            errors.append(f"share {share.tag} at {share.path}: {err}")
    return mounted, errors
