"""Writing a Docker/OCI layer tar from an overlay "diff" directory (commit, save, push).

The inverse of layer_unpack: overlay's own whiteout format becomes the
AUFS-style names layer tars carry, as dockerd's overlay2 driver writes them:

* a char device 0/0 named NAME → an empty regular file ".wh.NAME", mode 0600;
* a directory with xattr trusted.overlay.opaque=y → its header, then an empty
  regular file "DIR/.wh..wh..opq" with the directory's permissions and owner.

Entries come in Go's filepath.Walk order (each directory's names sorted, a
directory before what it holds), in PAX format with whole-second mtimes and no
atime/ctime, so the same tree always gives the same bytes (and diff id).
Owners, modes (setuid/setgid/sticky included), symlinks, hard links (the first
path written carries the content), fifos and device nodes are kept; sockets are
skipped as Docker skips them. Every name is opened relative to its parent
directory's fd with O_NOFOLLOW: a symlink in the tree is stored, never followed.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

from .layer_unpack import OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# The one extended attribute Docker carries in layers (file capabilities).
_KEPT_XATTRS = ("security.capability",)


class _Counting:
    """`out` with the position tarfile asks for (a pipe or socket cannot tell it)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._count = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._count += len(data)
        return len(data)

    def tell(self) -> int:
        return self._count


class _LayerWriter:
    """One tar being written: the tarfile and the hard links seen so far."""

    def __init__(self, out: BinaryIO, exclude: Collection[str] = ()) -> None:
        self.exclude = frozenset(exclude)
        # Directories holding an excluded path: written only if something else is in them.
        self.exclude_parents = {"/".join(p.split("/")[:i]) for p in self.exclude
                                for i in range(1, p.count("/") + 1)}
        self.out = _Counting(out)
        self.tar = tarfile.TarFile(fileobj=self.out, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[arg-type]  # TarFile only calls write and tell
                                   encoding="utf-8", errors="surrogateescape")
        self.links: dict[tuple[int, int], str] = {}

    def finish(self) -> None:
        """The end-of-archive marker only, as Go's archive/tar writes it: two zero blocks,
        no padding to tarfile's 10 KiB record (so an empty layer is Docker's 1024-byte
        empty tar, whose digest dockerd recognises as "no layer")."""
        # TarFile.close() would add the padding; it holds nothing else to release here.
        self.out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))

    def walk(self, dfd: int, prefix: str) -> None:
        """Write every entry of the directory open at `dfd` (its path in the tar is `prefix`)."""
        for name in sorted(os.listdir(dfd)):
            path = prefix + name
            if path in self.exclude:
                continue
            st = os.lstat(name, dir_fd=dfd)
            if stat.S_ISDIR(st.st_mode):
                child = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    if path in self.exclude_parents and not self._has_content(child, path + "/"):
                        continue
                    info = self._info(path + "/", st, tarfile.DIRTYPE)
                    self._add_xattrs(info, child)
                    self.tar.addfile(info)
                    if _is_opaque(child):
                        opq = self._info(path + "/" + WHITEOUT_OPAQUE, st, tarfile.REGTYPE)
                        opq.mode = stat.S_IMODE(st.st_mode) & 0o777
                        self.tar.addfile(opq)
                    self.walk(child, path + "/")
                finally:
                    os.close(child)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                info = self._info(prefix + WHITEOUT_PREFIX + name, st, tarfile.REGTYPE)
                info.mode = 0o600
                self.tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                self._add_file(dfd, name, path, st)
            elif stat.S_ISLNK(st.st_mode):
                info = self._info(path, st, tarfile.SYMTYPE)
                info.linkname = os.readlink(name, dir_fd=dfd)
                self.tar.addfile(info)
            elif stat.S_ISFIFO(st.st_mode):
                self.tar.addfile(self._info(path, st, tarfile.FIFOTYPE))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info = self._info(path, st, kind)
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                self.tar.addfile(info)
            # sockets: skipped, as Docker's archive skips them

    def _has_content(self, dfd: int, prefix: str) -> bool:
        """Whether the directory at `dfd` holds anything not excluded."""
        for name in os.listdir(dfd):
            path = prefix + name
            if path in self.exclude:
                continue
            if path not in self.exclude_parents:
                return True
            child = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                if self._has_content(child, path + "/"):
                    return True
            finally:
                os.close(child)
        return False

    def _add_file(self, dfd: int, name: str, path: str, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            info = self._info(path, st, tarfile.LNKTYPE)
            info.linkname = self.links[key]
            self.tar.addfile(info)
            return
        if st.st_nlink > 1:
            self.links[key] = path
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
        try:
            info = self._info(path, st, tarfile.REGTYPE)
            info.size = st.st_size
            self._add_xattrs(info, fd)
            with open(fd, "rb", closefd=False) as src:
                self.tar.addfile(info, src)
        finally:
            os.close(fd)

    @staticmethod
    def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        info.uname = info.gname = ""
        return info

    @staticmethod
    def _add_xattrs(info: tarfile.TarInfo, fd: int) -> None:
        headers = dict(info.pax_headers)
        for key in _KEPT_XATTRS:
            try:
                value = os.getxattr(fd, key)
            except OSError:
                continue
            headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
        info.pax_headers = headers


def _is_opaque(dfd: int) -> bool:
    try:
        return os.getxattr(dfd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def write_layer_tar(diff_dir: Path, out: BinaryIO, exclude: Collection[str] = ()) -> None:
    """A Docker/OCI layer tar of an overlay "diff" directory (a container's upper dir or a stored layer):
    overlay whiteouts (char device 0/0) become `.wh.<name>`, opaque directories (xattr
    trusted.overlay.opaque=y) get `.wh..wh..opq`; entries sorted, PAX format, owners/modes/mtimes/
    symlinks/hardlinks kept. Never follows a symlink.

    `exclude`: relative paths ("etc/hosts") left out with all they hold; a directory that
    holds nothing else is left out too (it exists only because they do)."""
    root = os.open(diff_dir, _DIR_FLAGS)
    try:
        writer = _LayerWriter(out, exclude)
        writer.walk(root, "")
        writer.finish()
    finally:
        os.close(root)
