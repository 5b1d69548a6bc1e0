"""`docker cp` out of a container: the path stat and the tar stream, as dockerd makes them.

Works on a container's root fd (`container_fs_view`); every lookup goes through
`path_scope`, so a symlink in the container (to `/`, to `../../..`) resolves
inside the root and never reaches the engine's files. The rules are dockerd's
(container.ResolvePath, StatPath, archivePath):

* the directories of the path are followed in scope, the last component is
  not: a symlink named last is archived as a link, and its stat carries the
  fully resolved `linkTarget`;
* a trailing "/" follows the last component too, and the archive's top entry
  keeps the requested name; a trailing "/." archives the directory as ".";
  the root is archived as "/" ("/bin/", "/etc/passwd", ...);
* entries are in lexical order, PAX headers as Go's archive/tar writes them
  (directory names end with "/", mtimes in seconds, owners numeric with the
  names of the container's /etc/passwd and /etc/group), a second link of a
  regular file is a hard link entry, sockets are skipped.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from .. import path_scope
from ..errors import InvalidArgument, NotFound

_CHUNK = 1 << 20
_BLOCK = 512
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_NAMES_FILE = 4 << 20

# Go's os.FileMode bits, which the stat header carries instead of a unix mode.
_GO_MODE_BITS = (
    (stat.S_ISDIR, 1 << 31), (stat.S_ISLNK, 1 << 27), (stat.S_ISBLK, 1 << 26),
    (stat.S_ISCHR, (1 << 26) | (1 << 21)), (stat.S_ISFIFO, 1 << 25), (stat.S_ISSOCK, 1 << 24),
)


def go_file_mode(st_mode: int) -> int:
    """The os.FileMode Go's Lstat gives for a unix st_mode (type bits high, perm bits low)."""
    mode = st_mode & 0o777
    for test, bit in _GO_MODE_BITS:
        if test(st_mode):
            mode |= bit
    if st_mode & stat.S_ISUID:
        mode |= 1 << 23
    if st_mode & stat.S_ISGID:
        mode |= 1 << 22
    if st_mode & stat.S_ISVTX:
        mode |= 1 << 20
    return mode


def go_time(time_ns: int) -> str:
    """Go's RFC3339Nano in UTC: fractional seconds without trailing zeros."""
    import time
    secs, nanos = divmod(time_ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


@dataclass
class PathStat:
    """The X-Docker-Container-Path-Stat of a path (types.ContainerPathStat)."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}


def go_base(path: str) -> str:
    """Go's filepath.Base: the last element, trailing slashes dropped; "/" for the root."""
    stripped = path.rstrip("/")
    if not stripped:
        return "/" if path else "."
    return stripped.rsplit("/", 1)[-1]


def absolute(path: str) -> str:
    """dockerd's absPath: the path cleaned inside "/", a trailing "/" or "/." kept."""
    cleaned = path_scope.clean(path)
    if path.endswith("/.") or path == ".":
        return cleaned.rstrip("/") + "/."
    if path.endswith("/") and cleaned != "/":
        return cleaned + "/"
    return cleaned


class Source:
    """A resolved `docker cp` source: where its top entry is (`parent_fd`, `name`), its stat
    and the name it gets in the archive. A context manager (holds `parent_fd`)."""

    def __init__(self, root_fd: int, path: str, container: str) -> None:
        self.abs_path = absolute(path)
        self.arcname = go_base(self.abs_path)
        follow = self.abs_path.endswith("/") or self.abs_path.endswith("/.") or self.abs_path == "/"
        try:
            if follow:
                # The last component is followed too: the stat and archive are of the target.
                self.parent_fd = path_scope.open_in_root(root_fd, self.abs_path)
                self.name = "."
                st = os.lstat(self.name, dir_fd=self.parent_fd)
                if not stat.S_ISDIR(st.st_mode) and self.abs_path != "/":
                    os.close(self.parent_fd)
                    raise InvalidArgument(f"lstat {self.abs_path}: not a directory")
            else:
                self.parent_fd, self.name = path_scope.open_parent_in_root(root_fd, self.abs_path)
                try:
                    st = os.lstat(self.name, dir_fd=self.parent_fd)
                except BaseException:
                    os.close(self.parent_fd)
                    raise
        except FileNotFoundError:
            raise NotFound(f"Could not find the file {path} in container {container}") from None
        except NotADirectoryError:
            raise InvalidArgument(f"lstat {self.abs_path}: not a directory") from None
        except path_scope.ScopeError as err:
            raise InvalidArgument(f"cannot resolve {path} in container {container}: {err.strerror}") from None
        link_target = ""
        if stat.S_ISLNK(st.st_mode):
            link_target = "/" + "/".join(path_scope.resolve_in_root(root_fd, self.abs_path))
        self.stat = PathStat(self.arcname, st.st_size, go_file_mode(st.st_mode), go_time(st.st_mtime_ns),
                             link_target)

    def close(self) -> None:
        if self.parent_fd >= 0:
            os.close(self.parent_fd)
            self.parent_fd = -1

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OwnerNames:
    """uid and gid to the names the container's /etc/passwd and /etc/group give (best effort)."""

    def __init__(self, root_fd: int) -> None:
        self.users = self._read(root_fd, "/etc/passwd")
        self.groups = self._read(root_fd, "/etc/group")

    @staticmethod
    def _read(root_fd: int, path: str) -> dict[int, str]:
        names: dict[int, str] = {}
        try:
            fd = path_scope.open_in_root(root_fd, path)
        except OSError:
            return names
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return names
            with open(path_scope.fd_path(fd), "rb") as f:
                text = f.read(_MAX_NAMES_FILE).decode("utf-8", "replace")
        except OSError:
            return names
        finally:
            os.close(fd)
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdecimal():
                names.setdefault(int(fields[2]), fields[0])
        return names


def tar_stream(parent_fd: int, name: str, arcname: str, owners: OwnerNames,
               include_top: bool = True) -> Iterator[bytes]:
    """The tar of the tree at `name` in directory `parent_fd`, its top entry called `arcname`
    ("/" names children "/x"; "" names them "x"); ends with the two zero blocks."""
    writer = _TarWriter(owners)
    yield from writer.entry(parent_fd, name, arcname, include_top)
    yield b"\0" * (2 * _BLOCK)


def _child_name(arcname: str, child: str) -> str:
    if not arcname:
        return child
    return arcname.rstrip("/") + "/" + child if arcname != "/" else "/" + child


class _TarWriter:
    """Headers and data of the entries, hard links remembered by inode."""

    def __init__(self, owners: OwnerNames) -> None:
        self.owners = owners
        self.links: dict[tuple[int, int], str] = {}

    def entry(self, parent_fd: int, name: str, arcname: str, include: bool = True) -> Iterator[bytes]:
        try:
            st = os.lstat(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return   # removed while we walked: as Go's Walk, nothing to archive
        if stat.S_ISSOCK(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self._directory(parent_fd, name, arcname, st, include)
            return
        info = self._info(arcname, st)
        if stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=parent_fd)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                info.type = tarfile.LNKTYPE
                info.linkname = self.links[key]
            else:
                if st.st_nlink > 1:
                    self.links[key] = arcname
                yield from self._regular(parent_fd, name, info, st)
                return
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        yield self._header(info)

    def _directory(self, parent_fd: int, name: str, arcname: str, st: os.stat_result,
                   include: bool) -> Iterator[bytes]:
        if include:
            info = self._info(arcname if arcname.endswith("/") else arcname + "/", st)
            info.type = tarfile.DIRTYPE
            yield self._header(info)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            for child in sorted(os.listdir(fd)):
                yield from self.entry(fd, child, _child_name(arcname, child))
        finally:
            os.close(fd)

    def _regular(self, parent_fd: int, name: str, info: tarfile.TarInfo,
                 st: os.stat_result) -> Iterator[bytes]:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                return   # replaced between lstat and open: skip rather than archive a stranger
            info.size = st.st_size
            yield self._header(info)
            left = st.st_size
            while left > 0:
                data = os.read(fd, min(_CHUNK, left))
                if not data:
                    break
                left -= len(data)
                yield data
            if left > 0:
                yield b"\0" * left   # the file shrank meanwhile: the header's size still holds
        finally:
            os.close(fd)
        if st.st_size % _BLOCK:
            yield b"\0" * (_BLOCK - st.st_size % _BLOCK)

    def _info(self, arcname: str, st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.mode = st.st_mode   # type bits too, as Go's archive/tar header (see _header)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = self.owners.users.get(st.st_uid, "")
        info.gname = self.owners.groups.get(st.st_gid, "")
        info.mtime = int(st.st_mtime)
        info.size = 0
        return info

    @staticmethod
    def _header(info: tarfile.TarInfo) -> bytes:
        """The header blocks; the mode field keeps the file type bits (Go's archive/tar
        writes c_ISDIR, c_ISREG, ... there), which tarfile would mask off."""
        buf = bytearray(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        block = len(buf) - _BLOCK                      # the ustar block follows any PAX records
        buf[block + 100:block + 108] = b"%07o\0" % (info.mode & 0o7777777)
        buf[block + 148:block + 156] = b" " * 8        # the checksum counts its own field as blanks
        checksum = sum(buf[block:block + _BLOCK])
        buf[block + 148:block + 156] = b"%06o\0 " % checksum
        return bytes(buf)
