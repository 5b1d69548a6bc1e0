"""Paths taken from images and requests, resolved inside a root and never outside it.

Every path an image or a client names (volume keys, mount targets, the working
directory, paths in a layer) is meant relative to a container's root or a
layer directory. This module is the one place that turns such a path into
something on disk:

* `clean` is the lexical step dockerd applies first (Go's `filepath.Clean` of
  the path joined to "/"): "../../etc" and "/a/../../etc" both become "/etc".
* `resolve` follows symlinks *in scope* as Go's `FollowSymlinkInScope` does:
  an absolute link target starts again at the root and ".." never climbs
  above it. It works on any tree through a `readlink` callback, so the same
  rule applies to a real directory and to the merged view of image layers.
* `open_in_root` opens (and optionally creates) a path inside a root
  directory fd and returns an O_PATH fd. It uses the kernel's
  openat2(RESOLVE_IN_ROOT) where there is one and otherwise walks one
  component at a time, each opened with O_NOFOLLOW relative to the previous
  directory's fd, reading symlinks itself. Either way a symlink swapped in
  concurrently cannot redirect the result outside the root, and callers act
  on the fd (`fd_path`) rather than on a path string.
* `open_beneath` opens a path of plain directories below a fd without
  following any symlink at all (layer directories, where a link is content).
* `open_parent_in_root` is `docker cp`'s rule for the last component: the
  directories are followed in scope, the last name is left as it is (a
  symlink there is copied as a link); `resolve_in_root` gives the components a
  path ends at with every link followed, read through a root fd.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import stat
from collections.abc import Callable

from .errors import InvalidArgument

MAX_SYMLINKS = 40           # as the kernel's MAXSYMLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2) (Linux 5.6+): the same number on x86_64 and aarch64.
_OPENAT2_NUMBERS = {"x86_64": 437, "aarch64": 437}
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MACHINE = platform.machine()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class ScopeError(OSError):
    """A path could not be resolved inside its root (a symlink loop, a file used as a directory)."""


# Set to False once openat2 is known to be missing (old kernel, seccomp): the walk is used.
use_openat2 = _MACHINE in _OPENAT2_NUMBERS


def check(path: str, what: str) -> str:
    """`path` unchanged, or InvalidArgument when no system call could take it (a NUL byte)."""
    if "\x00" in path:
        raise InvalidArgument(f"invalid {what} {path!r}: it contains a NUL byte")
    return path


def components(path: str, refuse_escape: bool = False) -> list[str]:
    """The names of `path` after lexical cleaning inside a root ("" and "/" give []).

    A ".." at the root stays at the root, as dockerd cleans a container path; with
    `refuse_escape` it raises ScopeError instead (a tar member that climbs out of
    the directory it is unpacked into refuses the whole archive).
    """
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
            elif refuse_escape:
                raise ScopeError(errno.EINVAL, f"{path!r} climbs out of its root")
            continue
        parts.append(comp)
    return parts


def clean(path: str) -> str:
    """dockerd's cleaning of a container path: absolute, no ".", "..", or doubled slashes."""
    return "/" + "/".join(components(path))


def go_clean(path: str) -> str:
    """Go's filepath.Clean, which dockerd stores as a volume's Destination.

    An absolute path is `clean`ed; a relative one stays relative ("../../x"):
    it means nothing until `resolve` or `open_in_root` puts it inside a root.
    """
    if path.startswith("/"):
        return clean(path)
    return os.path.normpath(path)


def is_root(path: str) -> bool:
    """Whether `path` names the root itself once cleaned ("", ".", "/..", "../..")."""
    return not components(path)


def resolve(path: str, readlink: Callable[[list[str]], str | None],
            max_links: int = MAX_SYMLINKS) -> list[str]:
    """Follow the symlinks of `path` in scope; returns the resolved components.

    `readlink(parts)` gives the target of the symlink at `parts` (already
    resolved, relative to the root) or None when that is not a symlink or
    does not exist. Missing components are kept as they are, as dockerd does.
    """
    pending = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = readlink(resolved + [part])
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > max_links:
            raise ScopeError(errno.ELOOP, f"too many levels of symbolic links in {path}")
        if target.startswith("/"):
            resolved = []
        pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
    return resolved


def fd_path(fd: int) -> str:
    """A path naming what `fd` refers to, for calls that only take paths (mount(2))."""
    return f"/proc/self/fd/{fd}"


def _openat2_in_root(root_fd: int, path: str, flags: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    number = _OPENAT2_NUMBERS[_MACHINE]
    for _attempt in range(16):
        fd = _libc.syscall(ctypes.c_long(number), ctypes.c_int(root_fd),
                           os.fsencode(path or "."), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:   # EAGAIN: a rename raced the lookup; the kernel asks to retry
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def open_in_root(root_fd: int, path: str, create: str = "", mode: int = 0o755) -> int:
    """An O_PATH fd for `path` inside the directory `root_fd`, symlinks followed in scope.

    `create` "dir" makes missing components directories; "file" does the same
    but makes the last one an empty regular file. Raises FileNotFoundError
    when something is missing and nothing is to be created, NotADirectoryError
    when a component that must be a directory is not, ScopeError on loops.
    """
    global use_openat2
    if use_openat2:
        try:
            return _openat2_in_root(root_fd, path, os.O_PATH)
        except OSError as err:
            if err.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
                use_openat2 = False
            elif err.errno == errno.ENOENT and not create:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
            elif err.errno == errno.ENOTDIR:
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
            # ENOENT with `create`, or ELOOP (a /proc magic link, which the walk reads as
            # a plain link in scope, or a true loop, which the walk reports): walk it.
    return _walk_in_root(root_fd, path, create, mode)


def _walk_in_root(root_fd: int, path: str, create: str, mode: int) -> int:
    # stack[i] is an fd of the i-th resolved directory; ".." pops, never below the root.
    stack = [os.dup(root_fd)]
    pending = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    links = 0
    try:
        while pending:
            part = pending.pop()
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            parent = stack[-1]
            try:
                fd = os.open(part, _PATH_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
                _create(parent, part, "file" if create == "file" and not pending else "dir", mode)
                pending.append(part)   # open what is there now (ours or a racer's) and check it
                continue
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise ScopeError(errno.ELOOP, f"too many levels of symbolic links in {path}")
                if target.startswith("/"):
                    for extra in stack[1:]:
                        os.close(extra)
                    del stack[1:]
                pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
                continue
            if pending and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(fd)
        if len(stack) == 1:
            return os.dup(stack[0])
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def _create(parent: int, name: str, kind: str, mode: int) -> None:
    try:
        if kind == "file":
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=parent))
        else:
            os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        pass   # made meanwhile: the caller opens and checks whatever is there


def open_beneath(dir_fd: int, parts: list[str] | tuple[str, ...], create: bool = False,
                 mode: int = 0o755) -> int:
    """A directory fd for `parts` below `dir_fd`, every component a real directory.

    No symlink is followed and no ".." is accepted: ELOOP/ENOTDIR surface as
    ScopeError. With `create`, missing directories are made. The caller closes the fd.
    """
    fd = os.dup(dir_fd)
    try:
        for i, comp in enumerate(parts):
            if comp in ("", ".", "..") or "/" in comp:
                raise ScopeError(errno.EINVAL, f"invalid path component {comp!r}")
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                _create(fd, comp, "dir", mode)
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ScopeError(err.errno, f"{'/'.join(parts[:i + 1])} is a symlink or "
                                                f"not a directory") from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_parent_in_root(root_fd: int, path: str, create: bool = False) -> tuple[int, str]:
    """(O_PATH fd of the directory holding the last component, that name), the directories
    resolved in scope and the last component not followed; the name is "" when `path` is the
    root. With `create`, missing directories are made. The caller closes the fd."""
    parts = components(path)
    if not parts:
        return open_in_root(root_fd, ""), ""
    parent = open_in_root(root_fd, "/".join(parts[:-1]), create="dir" if create else "")
    if not stat.S_ISDIR(os.fstat(parent).st_mode):
        os.close(parent)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    return parent, parts[-1]


def resolve_in_root(root_fd: int, path: str) -> list[str]:
    """The components `path` ends at inside the directory `root_fd`, every symlink followed in
    scope (as Go's FollowSymlinkInScope); missing components are kept as they are."""
    def readlink(parts: list[str]) -> str | None:
        try:
            parent = open_in_root(root_fd, "/".join(parts[:-1]))
        except OSError:
            return None
        try:
            return os.readlink(parts[-1], dir_fd=parent)
        except OSError:     # not a link, or missing
            return None
        finally:
            os.close(parent)
    return resolve(path, readlink)
