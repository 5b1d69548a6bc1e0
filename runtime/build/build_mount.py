"""A writable view of an image's layers for COPY, ADD and WORKDIR: an overlay mount.

The layers are the lower directories and a fresh directory the upper one, so what a
step writes through the merged root lands in the upper directory as a container's
changes do (copied-up parents, whiteouts), ready to become a layer. Paths are given
to overlayfs as ``/proc/self/fd/N`` of directories opened here: short whatever the
engine root, so no working-directory trick (which would be process-wide in the
threaded agent) is needed to fit many layers in the one-page option string.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import InvalidArgument
from ..linux import syscalls as sc

_OPTIONS_LIMIT = 4000


@contextlib.contextmanager
def merged_view(lower_dirs: list[Path], scratch: Path) -> Iterator[tuple[Path, Path]]:
    """Mount `lower_dirs` (lowest first) under `scratch`; yields (merged root, upper dir).

    The upper directory outlives the mount (the caller turns it into a layer and then
    removes `scratch`); the mount is always taken down, lazily if something holds it.
    """
    upper, work, merged, empty = (scratch / n for n in ("diff", "work", "merged", "empty"))
    for d in (upper, work, merged, empty):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(upper, 0o755)
    lowers = list(lower_dirs) or [empty]
    fds: list[int] = []
    try:
        for path in [*lowers, upper, work]:
            fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        names = [f"/proc/self/fd/{fd}" for fd in fds]
        options = f"lowerdir={':'.join(reversed(names[:-2]))},upperdir={names[-2]},workdir={names[-1]}"
        if len(options) > _OPTIONS_LIMIT:
            raise InvalidArgument(f"the image has too many layers ({len(lowers)}) to build on")
        sc.mount("overlay", merged, "overlay", 0, options)
    finally:
        for fd in fds:
            os.close(fd)
    try:
        yield merged, upper
    finally:
        try:
            sc.umount2(merged)
        except OSError:
            sc.umount2(merged, sc.MNT_DETACH)


def remove_scratch(scratch: Path) -> None:
    """Delete a step's scratch directory (its mount is down by now)."""
    shutil.rmtree(scratch, ignore_errors=True)
