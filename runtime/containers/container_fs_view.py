"""A container's filesystem as `docker cp` and `docker export` see it: a directory fd of its root.

Everything else (stat, tar, extraction) works through that fd with
`path_scope`, so no path ever leaves the container's root:

* a running container: `/proc/<pid>/root` of its init, which is the root of
  the container's own mount namespace, volumes and binds included (a lookup
  through that fd crosses the mounts of that namespace, not the engine's);
* a stopped (created, exited) container: a short-lived forked child unshares
  a mount namespace, mounts the overlay of the image layers and the
  container's upper dir there (read-only when nothing is written), binds the
  container's volumes and bind mounts in, chroots into it and waits; the
  engine works through `/proc/<child>/root`. Closing the view ends the child,
  and its namespace with every mount in it: nothing ever appears in the
  engine's mount table.

The child is a fork of the multi-threaded engine: between fork and exit it only
makes syscalls (os.*, ctypes), never logs or takes a lock, as the container
launcher's children (containers/process).
"""

from __future__ import annotations

import errno
import gc
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ..errors import RuntimeFailure, describe_os_error
from ..linux import syscalls as sc
from ..linux.overlay_mount import mount_overlay
from .rootfs import bind_into_root

_ROOT_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


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


def running_root(pid: int) -> ContainerRoot:
    """The root of running process `pid`'s mount namespace (its container's view)."""
    try:
        return ContainerRoot(os.open(f"/proc/{pid}/root", _ROOT_FLAGS))
    except OSError as err:
        raise RuntimeFailure(describe_os_error(err, "open the container's root")) from None


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
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _helper(ready_w, hold_r, [str(p) for p in lower_dirs], str(upper_dir), str(work_dir),
                str(mountpoint), mounts, writable)
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


def _helper(ready_w: int, hold_r: int, lowers: list[str], upper: str, work: str, mountpoint: str,
            mounts: list[ViewMount], writable: bool) -> NoReturn:
    """The forked child: mount, report, wait for the parent to let go; never returns."""
    code = 0
    try:
        gc.disable()
        _close_other_fds({ready_w, hold_r})
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
