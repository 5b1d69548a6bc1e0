"""Raising and observing file events through the kernel: utimensat with UTIME_OMIT, fanotify.

The hot-reload helper (guest_agent/hot_reload.py) uses these on shared folders
(9p, virtiofs), which carry no change notifications from the host:

* `set_mtime(path, mtime_ns)` sets only the modification time (the access time is
  UTIME_OMIT). The kernel's notify_change() then raises IN_MODIFY (FS_MODIFY: only
  ATTR_MTIME among the times) on the file for every inotify watcher, whatever
  mount namespace it watches from. Setting both times would raise IN_ATTRIB, which
  Go's fsnotify users (air) ignore; IN_MODIFY is what every watcher reacts to.
* `WriteWatch` marks whole filesystems with fanotify (FAN_MARK_FILESYSTEM, classic
  fd events) for FAN_MODIFY | FAN_CLOSE_WRITE, so the helper learns which files
  processes in the guest (containers) wrote, and at which mtime.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_STATX_FORCE_SYNC = 0x2000
STATX_BASIC_STATS = 0x7FF
UTIME_OMIT = (1 << 30) - 2

FAN_CLASS_NOTIF = 0x0
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100
FAN_MODIFY = 0x2
FAN_CLOSE_WRITE = 0x8
FAN_Q_OVERFLOW = 0x4000
FAN_NOFD = -1
# struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid.
_EVENT = struct.Struct("=IBBHQii")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p]
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]


def _raise(what: str, path: str | None = None) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}", path)


def set_mtime(path: str, mtime_ns: int) -> None:
    """Set `path`'s modification time only (not following a final symlink): raises IN_MODIFY."""
    times = (_Timespec * 2)(_Timespec(0, UTIME_OMIT), _Timespec(mtime_ns // 1_000_000_000, mtime_ns % 1_000_000_000))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, AT_SYMLINK_NOFOLLOW) != 0:
        _raise("utimensat", path)


def fresh_stat(path: str) -> tuple[int, int, int]:
    """(st_dev, st_ino, st_mtime_ns) of `path` (not following a final symlink), asked of the server.

    AT_STATX_FORCE_SYNC makes FUSE (virtiofs) fetch the attributes instead of
    answering from its cache (1 s with virtiofsd's cache=auto); 9p without a
    cache always asks. A cached, older mtime would look like a newer change.
    """
    buf = ctypes.create_string_buffer(256)
    if _libc.statx(AT_FDCWD, os.fsencode(path), AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC,
                   STATX_BASIC_STATS, buf) != 0:
        _raise("statx", path)
    ino, = struct.unpack_from("=Q", buf.raw, 32)
    sec, nsec = struct.unpack_from("=qI", buf.raw, 112)
    dev_major, dev_minor = struct.unpack_from("=II", buf.raw, 136)
    return os.makedev(dev_major, dev_minor), ino, sec * 1_000_000_000 + nsec


class WriteWatch:
    """Which files processes wrote on some filesystems: fanotify, one mark per filesystem.

    `drain()` returns (st_dev, st_ino, st_mtime_ns) of each written file, read from
    the event's own file descriptor. Needs CAP_SYS_ADMIN (the guest agent is root).
    Only writes are seen: classic fanotify reports no creates, deletes or renames.
    """

    def __init__(self) -> None:
        fd = _libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK,
                                 os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
        if fd < 0:
            _raise("fanotify_init")
        self.fd = fd
        self.overflowed = 0

    def watch_filesystem(self, path: str) -> None:
        """Report writes anywhere on the filesystem that holds `path`, through any mount of it."""
        if _libc.fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_MODIFY | FAN_CLOSE_WRITE,
                               AT_FDCWD, os.fsencode(path)) != 0:
            _raise("fanotify_mark", path)

    def drain(self) -> list[tuple[int, int, int]]:
        """Every queued write, without blocking."""
        written: list[tuple[int, int, int]] = []
        while True:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return written
            offset = 0
            while offset + _EVENT.size <= len(buf):
                length, _vers, _res, _meta, mask, fd, _pid = _EVENT.unpack_from(buf, offset)
                offset += length or _EVENT.size
                if mask & FAN_Q_OVERFLOW:
                    self.overflowed += 1
                if fd == FAN_NOFD or fd < 0:
                    continue
                try:
                    st = os.fstat(fd)
                    written.append((st.st_dev, st.st_ino, st.st_mtime_ns))
                except OSError:
                    pass
                finally:
                    os.close(fd)

    def close(self) -> None:
        os.close(self.fd)
