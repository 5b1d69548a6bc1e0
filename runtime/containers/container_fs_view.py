"""A container's filesystem as `docker cp` and `docker export` see it: a directory fd of its root.

What dockerd's cp sees is the container's root filesystem with its volumes,
binds and the engine's /etc files mounted on it, and nothing else (no /proc,
/sys, /dev or tmpfs mounts of the running container). Both views here are
that, held by a short-lived forked helper in a mount namespace of its own,
and the engine works through `/proc/<helper>/root` with `path_scope`, so no
path ever leaves the container's root:

* a running container: the helper joins the container's mount namespace,
  unshares a private copy of it and unmounts there everything that is not
  the root, a volume, a bind or an /etc file; writes go through the very
  overlay the container uses, so both see them at once;
* a stopped (created, exited) container: the helper unshares a mount
  namespace, mounts the overlay of the image layers and the container's upper
  dir there (read-only when nothing is written), binds the volumes, binds and
  /etc files in, and chroots into it.

Closing the view ends the helper, and its namespace with every mount in it:
nothing ever appears in the engine's or the container's mount table. The
helper is a fork of the multi-threaded engine: between fork and exit it only
makes syscalls (os.*, ctypes), never logs or takes a lock, as the container
launcher's children (containers/process).
"""

from __future__ import annotations

import errno
import gc
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ..errors import RuntimeFailure, describe_os_error
from ..linux import syscalls as sc
from ..linux.overlay_mount import mount_overlay
from .rootfs import bind_into_root

_ROOT_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_UMOUNT_NOFOLLOW = 0x8      # umount2: do not follow a symlink at the mount point
_MAX_STACKED = 8            # mounts stacked on one point (a bind over a tmpfs ...)


@dataclass(frozen=True)
class ViewMount:
    """A host directory or file bound into a stopped container's view (a volume or a bind)."""

    source: str
    target: str
    readonly: bool = False


class ContainerRoot:
    """An O_PATH fd of a container's root (`fd`), and what keeps it alive; a context manager."""

    def __init__(self, fd: int, helper_pid: int = 0, hold_fd: int = -1) -> None:
        self.fd = fd
        self._helper_pid = helper_pid
        self._hold_fd = hold_fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._hold_fd >= 0:
            os.close(self._hold_fd)   # the helper sees EOF and exits, taking its mounts along
            self._hold_fd = -1
        if self._helper_pid:
            pid, self._helper_pid = self._helper_pid, 0
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def __enter__(self) -> ContainerRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def running_root(pid: int, keep: list[str]) -> ContainerRoot:
    """The root of running process `pid`'s mount namespace with only the mounts at `keep`
    (container paths: volumes, binds, /etc files) and below them left on it."""
    try:
        mountinfo = Path(f"/proc/{pid}/mountinfo").read_text(errors="surrogateescape")
        ns_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise RuntimeFailure(describe_os_error(err, "open the container's mount namespace")) from None
    drop = _mounts_to_drop(mountinfo, keep)
    try:
        return _start_helper(lambda: _join_and_prune(ns_fd, drop), keep_fds={ns_fd})
    finally:
        os.close(ns_fd)


def _mounts_to_drop(mountinfo: str, keep: list[str]) -> list[str]:
    """Mount points (deepest first) that are neither the root nor at or below a kept one."""
    points: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == "/" or any(point == k or point.startswith(k.rstrip("/") + "/") for k in keep):
            continue
        if point not in points:
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in a path as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _join_and_prune(ns_fd: int, drop: list[str]) -> None:
    """(In the helper) a private copy of the container's mount namespace, pruned."""
    sc.setns(ns_fd, sc.CLONE_NEWNS)     # the root and cwd become the container's root
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    for point in drop:
        for _ in range(_MAX_STACKED):   # stacked mounts come off one by one
            try:
                sc.umount2(point, sc.MNT_DETACH | _UMOUNT_NOFOLLOW)
            except OSError:
                break
    os.chdir("/")


def mounted_root(lower_dirs: list[Path], upper_dir: Path, work_dir: Path, mountpoint: Path,
                 mounts: list[ViewMount], writable: bool) -> ContainerRoot:
    """A stopped container's root, mounted in the private namespace of a short-lived child.

    Read-only (`writable` False) the upper dir is mounted as the topmost lower
    layer, so the overlay never claims it (a start meanwhile is unaffected).
    """
    mountpoint.mkdir(exist_ok=True)
    upper_dir.mkdir(exist_ok=True)   # a created container gets it at its first start otherwise
    if writable:
        work_dir.mkdir(exist_ok=True)
    lowers = [str(p) for p in lower_dirs]

    def setup() -> None:
        _mount_layers(lowers, str(upper_dir), str(work_dir), str(mountpoint), mounts, writable)

    return _start_helper(setup)


def _start_helper(setup: Callable[[], None], keep_fds: set[int] | None = None) -> ContainerRoot:
    """Fork the helper, let it run `setup` (syscalls only), and open its root once it is ready."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _helper(ready_w, hold_r, setup, keep_fds or set())
    os.close(ready_w)
    os.close(hold_r)
    try:
        chunks = []
        while chunk := os.read(ready_r, 4096):
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
        report = b"".join(chunks).decode(errors="replace")
        if report != "ok\n":
            raise RuntimeFailure(f"cannot mount the container's filesystem: {report.strip() or 'helper died'}")
        fd = os.open(f"/proc/{pid}/root", _ROOT_FLAGS)
    except BaseException:
        os.close(ready_r)
        os.close(hold_w)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        raise
    os.close(ready_r)
    return ContainerRoot(fd, pid, hold_w)


def _mount_layers(lowers: list[str], upper: str, work: str, mountpoint: str, mounts: list[ViewMount],
                  writable: bool) -> None:
    """(In the helper) the stopped container's root, mounted in a new namespace, chrooted into."""
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    if writable:
        root = mount_overlay(lowers, upper, work, mountpoint)
    else:
        root = mount_overlay([*lowers, upper], None, None, mountpoint)
    root_fd = os.open(root, _ROOT_FLAGS)
    for m in mounts:
        try:
            bind_into_root(root_fd, m.target, m.source, m.readonly)
        except OSError as err:
            # A read-only view cannot make a missing mount point; nothing of that
            # mount is visible then, as nothing is there to copy.
            if err.errno not in (errno.EROFS, errno.ENOENT):
                raise
    os.chroot(root)
    os.chdir("/")


def _helper(ready_w: int, hold_r: int, setup: Callable[[], None], keep_fds: set[int]) -> NoReturn:
    """The forked child: set up, report, wait for the parent to let go; never returns."""
    code = 0
    try:
        gc.disable()
        _close_other_fds({ready_w, hold_r, *keep_fds})
        setup()
        os.write(ready_w, b"ok\n")
        os.close(ready_w)
        while os.read(hold_r, 1):   # until the parent closes its end (or dies)
            pass
    except BaseException as err:  # never let the forked child unwind into the engine
        try:
            os.write(ready_w, f"{type(err).__name__}: {err}\n".encode(errors="replace"))
        except OSError:
            pass
        code = 1
    os._exit(code)


def _close_other_fds(keep: set[int]) -> None:
    """The engine's client sockets and pipes must not stay open in the child."""
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 65536)
