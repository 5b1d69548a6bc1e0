"""9p shares across a saved machine: unmounted before the save, mounted again after the resume.

QEMU will not save a guest while one of its 9p exports is mounted ("Migration is
disabled when VirtFS export path ... is mounted"): the guest's open fids are state
the device cannot carry. The default machine shares the user's home, so without
this the instant start would never happen for most users. Before the save the
supervisor unmounts the shares in the guest (after a `sync`); the last unmount
clunks the export's root fid and QEMU lifts its block. After the resume the guest
init mounts them again when the supervisor announces the resume on the ready
channel (vmimage/guest_init/shares.py: no process to start, so it overlaps the
SSH handshake), before the host socket lets a container ask for one.

A running container that bind-mounts a shared folder keeps that share's 9p
filesystem alive in its own mount namespace: QEMU then still refuses, and the
machine is shut down instead, as `machine stop` says. virtiofs (vhost-user) cannot
be saved by QEMU at all, mounted or not.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def unmount_script(paths: Sequence[str]) -> str:
    """Flush the guest's caches and unmount each share that is mounted (exit 1 if one is busy)."""
    unmounts = "".join(f"if mountpoint -q {shlex.quote(p)}; then umount {shlex.quote(p)} || rc=1; fi; "
                       for p in paths)
    return f"sync; rc=0; {unmounts}exit $rc"
