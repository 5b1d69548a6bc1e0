"""Mount a container's overlayfs root from its image layers, however many there are.

The legacy mount(2) option string is limited to one page, which holds about
200 short absolute lowerdirs. When the options would not fit (or a path holds
a character overlayfs treats as a separator), we put a small tmpfs at the
mount point, make one short symlink per directory in it ("0", "1", ...),
chdir there and mount with those relative names: overlayfs resolves the links
once at mount time, so 500 layers mount the same way on any kernel (the
fsconfig "lowerdir+" key needs 6.8+). Safe to call in a forked child: no locks.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import syscalls as sc

OPTIONS_LIMIT = 4000          # one page minus room for the terminating NUL and slack
_UNSAFE_CHARS = (",", ":", "\\")


def overlay_options(lower_dirs: list[str], upper_dir: str | None, work_dir: str | None) -> str:
    """The mount(2) data string; `lower_dirs` lowest first (overlayfs wants topmost first).

    Without an upper dir the overlay is read-only (lower layers only)."""
    lower = f"lowerdir={':'.join(reversed(lower_dirs))}"
    if upper_dir is None or work_dir is None:
        return lower
    return f"{lower},upperdir={upper_dir},workdir={work_dir}"


def _needs_links(paths: list[str], options: str) -> bool:
    return len(options) > OPTIONS_LIMIT or any(c in p for p in paths for c in _UNSAFE_CHARS)


def mount_overlay(lower_dirs: list[Path] | list[str], upper_dir: Path | str | None,
                  work_dir: Path | str | None, target: Path | str) -> str:
    """Mount the overlay and return the path of the merged root (under `target`).

    `upper_dir` and `work_dir` None: a read-only overlay of the lower dirs alone
    (overlayfs then wants at least two). Must run in a private mount namespace:
    the long-option path mounts a tmpfs on `target` and changes the working directory.
    """
    if not lower_dirs:
        raise OSError(22, "overlay: an image needs at least one layer")
    lowers = [os.fspath(p) for p in lower_dirs]
    target = os.fspath(target)
    upper_work: list[str] = []
    flags = sc.MS_RDONLY
    if upper_dir is not None and work_dir is not None:
        upper_work = [os.fspath(upper_dir), os.fspath(work_dir)]
        flags = 0
    options = overlay_options(lowers, upper_work[0] if upper_work else None,
                              upper_work[1] if upper_work else None)
    if not _needs_links(lowers + upper_work, options):
        sc.mount("overlay", target, "overlay", flags, options)
        return target

    sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=1m,mode=755")
    links = os.path.join(target, "l")
    merged = os.path.join(target, "root")
    os.mkdir(links)
    os.mkdir(merged)
    names = []
    for index, path in enumerate(lowers + upper_work):
        name = format(index, "x")
        os.symlink(path, os.path.join(links, name))
        names.append(name)
    os.chdir(links)
    upper_names: tuple[str | None, str | None] = (names[-2], names[-1]) if upper_work else (None, None)
    short = overlay_options(names[:len(lowers)], *upper_names)
    if len(short) > OPTIONS_LIMIT:
        raise OSError(7, f"overlay: {len(lowers)} layers are too many to mount")
    sc.mount("overlay", merged, "overlay", flags, short)
    return merged
