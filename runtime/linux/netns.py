"""Network namespaces: create one, pin it to a file with a bind mount, remove it.

Python 3.11 has no os.unshare/os.setns, so libc is called through ctypes. Namespaces
are created in a short-lived helper thread: unshare(CLONE_NEWNET) in a thread moves
only that thread, so the engine's other threads stay in the host namespace. The
helper opens an fd on the new namespace (which keeps it alive) and runs an optional
callback inside it, typically opening a netlink socket that stays bound to it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import RuntimeFailure

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

T = TypeVar("T")


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _in_thread(func: Callable[[], T]) -> T:
    """Run `func` in a fresh thread (whose namespace changes die with it); re-raise its error."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = func()
        except BaseException as err:  # handed to the caller below
            box["error"] = err

    thread = threading.Thread(target=run, name="netns-helper", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return cast(T, box["result"])


def new_netns(inside: Callable[[], T] | None = None) -> tuple[int, T | None]:
    """Create a network namespace: (fd on it, result of `inside()` run within it)."""

    def create() -> tuple[int, T | None]:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        fd = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return fd, (inside() if inside is not None else None)
        except BaseException:
            os.close(fd)
            raise

    try:
        return _in_thread(create)
    except OSError as err:
        raise RuntimeFailure(f"cannot create a network namespace: {err}") from err


def run_in_netns(path_or_fd: str | Path | int, func: Callable[[], T]) -> T:
    """Run `func` in a helper thread that has joined the given namespace."""

    def enter() -> T:
        fd = path_or_fd if isinstance(path_or_fd, int) else os.open(path_or_fd, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), "setns")
        finally:
            if not isinstance(path_or_fd, int):
                os.close(fd)
        return func()

    return _in_thread(enter)


def pin_netns(fd: int, path: Path) -> None:
    """Bind-mount the namespace behind `fd` on `path` so it outlives our fd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd_file = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444)
    os.close(fd_file)
    result = _libc.mount(f"/proc/self/fd/{fd}".encode(), str(path).encode(), None, MS_BIND, None)
    if result != 0:
        err = ctypes.get_errno()
        os.unlink(path)
        raise RuntimeFailure(f"cannot bind-mount network namespace on {path}: {os.strerror(err)}")


def remove_netns(path: Path) -> bool:
    """Unmount and delete a pinned namespace file; False if there was none. Idempotent."""
    existed = False
    for _ in range(16):  # a path pinned twice (crash between attach attempts) has stacked mounts
        if _libc.umount2(str(path).encode(), MNT_DETACH) == 0:
            existed = True
            continue
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise RuntimeFailure(f"cannot unmount network namespace {path}: {os.strerror(err)}")
        break
    try:
        os.unlink(path)
        existed = True
    except FileNotFoundError:
        pass
    return existed


def is_pinned(path: Path) -> bool:
    """True if `path` is a bind-mounted namespace (not a plain file left by a crash)."""
    try:
        # A pinned namespace lives on nsfs, a different device from its directory.
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except FileNotFoundError:
        return False


def netns_has_processes(path: Path) -> bool:
    """True if some process (main thread) lives in the namespace pinned at `path`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    target = (st.st_dev, st.st_ino)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            pst = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:  # the process went away, or is a kernel thread we may not inspect
            continue
        if (pst.st_dev, pst.st_ino) == target:
            return True
    return False
