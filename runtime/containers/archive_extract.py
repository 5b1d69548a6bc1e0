"""`docker cp` into a container: a tar extracted at a directory, as dockerd's Unpack does it.

Works on a container's root fd (`container_fs_view`). dockerd unpacks inside a
chroot of the container's root, so:

* the destination is resolved with every symlink followed in scope (a link to
  a directory is a fine destination) and must be a directory;
* each entry's name is cleaned and must stay below the destination, lexically
  ("../x" is refused); a symlink entry must point below the destination when
  joined to its directory (an absolute target is joined too, so "/" is fine),
  a hard link's target must be below the destination;
* the directories on the way to an entry are followed in scope (a link in the
  container to "/" leads to the container's root, never the engine's), and
  missing ones are made (0755, root); the entry itself is never followed: an
  existing non-directory is replaced, an existing directory merged;
* `no_overwrite_dir_non_dir` refuses to replace a directory with a
  non-directory and the reverse (the CLI always asks for it);
* owners are the tar's (or `chown_to`), then modes and times; directories get
  their times last.

Every step goes through directory fds opened by `path_scope`, so nothing in the
tar or in the container can make a write land outside the container's root.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from typing import Any, Protocol

from .. import path_scope
from ..errors import InvalidArgument, NotFound

_COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class Readable(Protocol):
    """Where a tar comes from: a file, or a request body read as it arrives."""

    def read(self, size: int = -1, /) -> bytes: ...


class _RawSource(io.RawIOBase):
    """A `Readable` as the raw stream a buffered reader (which tarfile takes) reads from."""

    def __init__(self, source: Readable) -> None:
        super().__init__()
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:   # any writable buffer, as io's own
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        view[:len(data)] = data
        return len(data)


def resolve_destination(root_fd: int, path: str, container: str) -> str:
    """The destination directory as a clean path in the container, links followed in scope."""
    try:
        fd = path_scope.open_in_root(root_fd, path)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"Could not find the file {path} in container {container}") from None
    except path_scope.ScopeError as err:
        raise InvalidArgument(f"cannot resolve {path} in container {container}: {err.strerror}") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise InvalidArgument("extraction point is not a directory")
    finally:
        os.close(fd)
    return "/" + "/".join(path_scope.resolve_in_root(root_fd, path))


def _inside(path: str, dest: str) -> bool:
    return path == dest or path.startswith(dest.rstrip("/") + "/")


class Extractor:
    """Unpacks one tar below `dest` (a resolved directory) inside the root `root_fd`."""

    def __init__(self, root_fd: int, dest: str, no_overwrite_dir_non_dir: bool = False,
                 chown_to: tuple[int, int] | None = None) -> None:
        self.root_fd = root_fd
        self.dest = dest
        self.no_overwrite = no_overwrite_dir_non_dir
        self.chown_to = chown_to
        self._dir_times: list[tuple[str, int]] = []

    def extract(self, stream: Readable) -> None:
        try:
            with tarfile.open(fileobj=io.BufferedReader(_RawSource(stream), 1 << 16), mode="r|*") as tar:
                for member in tar:
                    self._entry(tar, member)
        except (tarfile.TarError, EOFError) as err:
            raise InvalidArgument(f"Error processing tar file: {err}") from None
        for path, mtime in reversed(self._dir_times):
            self._set_times(path, mtime)

    # -- one entry ------------------------------------------------------------
    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        target = path_scope.clean(self.dest + "/" + name)
        if not _inside(target, self.dest):
            raise InvalidArgument(f'Error processing tar file: "{name}" is outside of "{self.dest}"')
        if target == self.dest:
            return   # the destination itself ("." or "/"): dockerd leaves it as it is
        if member.issym():
            linked = path_scope.clean(target.rsplit("/", 1)[0] + "/" + member.linkname)
            if not _inside(linked, self.dest):
                raise InvalidArgument(f'Error processing tar file: invalid symlink "{target}" -> '
                                      f'"{member.linkname}"')
        if member.islnk():
            linked = path_scope.clean(self.dest + "/" + member.linkname)
            if not _inside(linked, self.dest):
                raise InvalidArgument(f'Error processing tar file: invalid hardlink "{linked}" -> '
                                      f'"{member.linkname}"')
        parent, leaf = self._open_parent(target)
        try:
            if not self._clear(parent, leaf, member, target):
                return
            self._create(tar, member, parent, leaf)
            self._finish(member, parent, leaf, target)
        finally:
            os.close(parent)

    def _open_parent(self, target: str) -> tuple[int, str]:
        try:
            return path_scope.open_parent_in_root(self.root_fd, target, create=True)
        except NotADirectoryError:
            raise InvalidArgument(f"Error processing tar file: a parent of {target} is not a "
                                  f"directory") from None
        except path_scope.ScopeError as err:
            raise InvalidArgument(f"Error processing tar file: {target}: {err.strerror}") from None

    def _clear(self, parent: int, leaf: str, member: tarfile.TarInfo, target: str) -> bool:
        """Make room for the entry; False when there is nothing to create (a directory merged)."""
        try:
            st = os.lstat(leaf, dir_fd=parent)
        except FileNotFoundError:
            return True
        is_dir = stat.S_ISDIR(st.st_mode)
        if self.no_overwrite and is_dir and not member.isdir():
            raise InvalidArgument(f'cannot overwrite directory "{target}" with non-directory "{self.dest}"')
        if self.no_overwrite and not is_dir and member.isdir():
            raise InvalidArgument(f'cannot overwrite non-directory "{target}" with directory "{self.dest}"')
        if is_dir and member.isdir():
            return True
        _remove_tree(parent, leaf, st)
        return True

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, leaf: str) -> None:
        mode = member.mode & 0o7777
        if member.isdir():
            try:
                os.mkdir(leaf, 0o700, dir_fd=parent)
            except FileExistsError:
                pass
        elif member.isreg():
            fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=parent)
            try:
                source = tar.extractfile(member)
                while source is not None and (chunk := source.read(_COPY_CHUNK)):
                    os.write(fd, chunk)
            finally:
                os.close(fd)
        elif member.issym():
            os.symlink(member.linkname, leaf, dir_fd=parent)
        elif member.islnk():
            src_parent, src_leaf = self._open_parent(path_scope.clean(self.dest + "/" + member.linkname))
            try:
                os.link(src_leaf, leaf, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(src_parent)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            os.mknod(leaf, kind | mode, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
        else:
            raise InvalidArgument(f"Error processing tar file: unhandled tar header type "
                                  f"{member.type!r} for {member.name}")

    def _finish(self, member: tarfile.TarInfo, parent: int, leaf: str, target: str) -> None:
        """Owner, mode, times, through the entry's own fd (never a path that may move)."""
        if member.islnk():
            return   # a hard link shares its target's inode: nothing of its own to set
        uid, gid = self.chown_to if self.chown_to is not None else (member.uid, member.gid)
        if member.issym():
            os.chown(leaf, uid, gid, dir_fd=parent, follow_symlinks=False)
            os.utime(leaf, ns=(int(member.mtime) * 10**9,) * 2, dir_fd=parent, follow_symlinks=False)
            return
        fd = os.open(leaf, _PATH_FLAGS, dir_fd=parent)
        try:
            path = path_scope.fd_path(fd)
            os.chown(path, uid, gid)
            os.chmod(path, member.mode & 0o7777)   # after chown, which clears set-id bits
            if member.isdir():
                self._dir_times.append((target, int(member.mtime)))
            else:
                os.utime(path, ns=(int(member.mtime) * 10**9,) * 2)
        finally:
            os.close(fd)

    def _set_times(self, target: str, mtime: int) -> None:
        try:
            fd = path_scope.open_in_root(self.root_fd, target)
        except OSError:
            return
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.utime(path_scope.fd_path(fd), ns=(mtime * 10**9,) * 2)
        finally:
            os.close(fd)


def _remove_tree(parent: int, name: str, st: os.stat_result) -> None:
    """os.RemoveAll of `name` in `parent`, never following a link."""
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            try:
                _remove_tree(fd, child, os.lstat(child, dir_fd=fd))
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise
