"""`docker diff`: what a container changed, from its overlay upper dir against its image.

Only the upper dir (`<root>/containers/<id>/diff`) can differ from the image, so
only it is walked; each entry is compared with the image's merged layers
(`LayerView`), with dockerd's rules (archive.ChangesDirs):

* Kind 1 (added): not in the image; an added directory's contents are added too;
* Kind 0 (modified): in the image with another mode, owner or device, or for a
  non-directory another size or mtime (a directory's size and mtime are not a
  change); a directory with a change inside is modified too (listed before it);
* Kind 2 (deleted): an overlay whiteout (char device 0/0) of an image path, or
  what an opaque directory hides; a deleted directory is listed once.

The mount points the engine makes for its own files (/etc/hosts, ...) are
skipped, as dockerd keeps them in an "init" layer below the container's.
Entries are listed depth first in lexical order, every path read through
directory fds opened with O_NOFOLLOW (a link in the container is content).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..volumes.store import LayerView, is_opaque, is_whiteout

MODIFIED, ADDED, DELETED = 0, 1, 2
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# dockerd's init layer (daemon/initlayer): paths a container gets from the engine.
ENGINE_PATHS = frozenset({"/dev/pts", "/dev/shm", "/proc", "/sys", "/.dockerenv", "/etc/resolv.conf",
                          "/etc/hosts", "/etc/hostname", "/dev/console", "/etc/mtab"})


def _differs(old: os.stat_result, new: os.stat_result) -> bool:
    """archive.statDifferent: mode, owner, device; size and mtime only for non-directories."""
    if (old.st_mode, old.st_uid, old.st_gid, old.st_rdev) != (new.st_mode, new.st_uid, new.st_gid,
                                                              new.st_rdev):
        return True
    if stat.S_ISDIR(old.st_mode):
        return False
    return old.st_size != new.st_size or old.st_mtime_ns != new.st_mtime_ns


def changes(upper_dir: Path, layers: list[Path]) -> list[tuple[int, str]]:
    """(kind, path) of every change, parents before children, siblings in lexical order."""
    result: list[tuple[int, str]] = []
    with LayerView(layers) as view:
        upper = os.open(upper_dir, _DIR_FLAGS)
        image = view.open_dir([])
        try:
            _walk(upper, image, "", result)
        finally:
            os.close(upper)
            for fd in image:
                os.close(fd)
    return result


def _walk(upper: int, image: list[int], path: str, out: list[tuple[int, str]]) -> None:
    """Compare the upper directory `upper` with the image's merged directory `image`."""
    names = set(os.listdir(upper))
    if image and is_opaque(upper):
        # Everything of the image's directory is hidden: what the upper dir lacks is deleted.
        for name in sorted(LayerView.listdir(image) - names):
            out.append((DELETED, f"{path}/{name}"))
    for name in sorted(names):
        child = f"{path}/{name}"
        try:
            st = os.lstat(name, dir_fd=upper)
        except FileNotFoundError:
            continue
        found = LayerView.lookup(image, name) if image else None
        if is_whiteout(st):
            if found is not None:
                out.append((DELETED, child))
            continue
        if found is None:
            if child in ENGINE_PATHS:
                continue
            out.append((ADDED, child))
            if stat.S_ISDIR(st.st_mode):
                _added(upper, name, child, out)
            continue
        mark = len(out)
        if _differs(found[1], st):
            out.append((MODIFIED, child))
        if stat.S_ISDIR(st.st_mode):
            below = LayerView.descend(image, name) if stat.S_ISDIR(found[1].st_mode) else []
            fd = os.open(name, _DIR_FLAGS, dir_fd=upper)
            try:
                _walk(fd, below, child, out)
            finally:
                os.close(fd)
                for lower in below:
                    os.close(lower)
            if len(out) > mark and out[mark] != (MODIFIED, child):
                out.insert(mark, (MODIFIED, child))


def _added(parent: int, name: str, path: str, out: list[tuple[int, str]]) -> None:
    """Everything below a directory the image does not have is added."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        for child in sorted(os.listdir(fd)):
            try:
                st = os.lstat(child, dir_fd=fd)
            except FileNotFoundError:
                continue
            if is_whiteout(st):
                continue
            out.append((ADDED, f"{path}/{child}"))
            if stat.S_ISDIR(st.st_mode):
                _added(fd, child, f"{path}/{child}", out)
    finally:
        os.close(fd)
