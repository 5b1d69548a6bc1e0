"""Safe extraction of one image layer (a tar diff) into an overlay "diff" directory.

A layer comes from a registry, so every member is treated as hostile:

* names are cleaned lexically; a name that climbs out of the root ("../x")
  refuses the whole layer; a leading "/" is dropped (tar names are relative);
* every parent directory is opened component by component with O_NOFOLLOW
  relative to the previous directory's fd, so a symlink planted by an earlier
  member can never be followed (such a layer is refused);
* hard links must name an existing member of this layer, reached the same way;
* device nodes are skipped (only the overlay whiteout form, a 0/0 char device,
  is created); fifos are allowed.

Whiteouts become overlayfs's own format: ".wh.NAME" → char device 0/0 named
NAME, ".wh..wh..opq" → xattr trusted.overlay.opaque=y on the directory.
Modes (with setuid/setgid/sticky), owners, mtimes and simple xattrs are kept
(we run as root). The decompressed stream is hashed on the way through, and
the caller compares it with the layer's diff id.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from .. import path_scope
from ..errors import RegistryError

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class UnsafeLayerError(RegistryError):
    """A layer tried to write outside its directory or is otherwise malformed."""


@dataclass
class UnpackResult:
    """What an extraction produced."""

    diff_id: str                  # sha256 of the uncompressed tar stream
    size: int = 0                 # bytes of regular file content written
    members: int = 0
    skipped: list[str] = field(default_factory=list)   # member names neutralised (devices, ...)


class _Reader(Protocol):
    """What the extraction reads from: a file, a gzip stream or the zstd tool's pipe."""

    def read(self, size: int = -1, /) -> bytes: ...


class _HashingReader(io.RawIOBase):
    """Reads through `inner`, hashing every byte and reporting progress."""

    def __init__(self, inner: _Reader, on_read: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.count = 0
        self.on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]  # io passes only these
        data = self.inner.read(len(buf))
        n = len(data)
        buf[:n] = data
        if n:
            self.digest.update(data)
            self.count += n
            if self.on_read is not None:
                self.on_read(n)
        return n


def _decompressed(raw: BinaryIO) -> tuple[_Reader, Callable[[], None]]:
    """Wrap `raw` in the decompressor its magic bytes call for; returns (stream, close)."""
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
        return stream, stream.close
    if head == _ZSTD_MAGIC:
        # Python 3.11's standard library has no zstd: use the zstd tool when present.
        if shutil.which("zstd") is None:
            raise UnsafeLayerError("layer is zstd-compressed and the zstd tool is not installed")
        # The buffered seek(0) above may not have moved the fd the child will read from.
        os.lseek(raw.fileno(), 0, os.SEEK_SET)
        proc = subprocess.Popen(["zstd", "-dc"], stdin=raw, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        stdout = proc.stdout

        def close() -> None:
            stdout.close()
            if proc.wait() != 0:
                raise UnsafeLayerError("zstd failed to decompress the layer")
        return stdout, close
    return raw, lambda: None


def clean_member_name(name: str) -> list[str]:
    """Split a tar member name into safe components; raise if it climbs out of the root."""
    try:
        return path_scope.components(name, refuse_escape=True)
    except path_scope.ScopeError:
        raise UnsafeLayerError(f"layer member {name!r} points outside the layer") from None


def clear_slot(pfd: int, name: str, keep_dir: bool, remove_dir: bool = True) -> bool:
    """Make room for a new entry `name` under the directory `pfd`, never following a symlink.

    True when a directory is there and `keep_dir` keeps it (merged into). Anything
    else there is removed, a directory with all it holds; with `remove_dir` False a
    directory in the way raises IsADirectoryError instead (COPY does not replace one).
    """
    try:
        st = os.lstat(name, dir_fd=pfd)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        if not remove_dir:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        _remove_tree_at(pfd, name)
    else:
        os.unlink(name, dir_fd=pfd)
    return False


class _Extractor:
    """One extraction: owns the root fd and a small cache of the last parent directory fd."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._cached: tuple[tuple[str, ...], int] | None = None
        self.dirs: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def open_dir(self, parts: list[str] | tuple[str, ...], create: bool) -> int:
        """An fd for directory `parts` (relative to root), never following a symlink.

        The returned fd belongs to the cache; do not close it.
        """
        key = tuple(parts)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        try:
            fd = path_scope.open_beneath(self.root_fd, parts, create=create)
        except FileNotFoundError:
            raise UnsafeLayerError(
                f"layer member refers to missing directory {'/'.join(parts)!r}") from None
        except path_scope.ScopeError as err:
            raise UnsafeLayerError(f"layer member path goes through a symlink or non-directory: "
                                   f"{err.strerror}") from None
        self._drop_cache()
        self._cached = (key, fd)
        return fd

    def clear_slot(self, pfd: int, parent: list[str], name: str, keep_dir: bool) -> bool:
        """Remove whatever is at parent/name; returns True if an existing directory was kept."""
        below = tuple(parent) + (name,)
        if not keep_dir and self._cached is not None and self._cached[0][:len(below)] == below:
            self._drop_cache()   # the cached fd may point into the directory about to be deleted
        return clear_slot(pfd, name, keep_dir)


def _remove_tree_at(pfd: int, name: str) -> None:
    """Remove directory `name` under `pfd` and all it holds, never following symlinks."""
    dfd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    try:
        for entry in os.listdir(dfd):
            if stat.S_ISDIR(os.lstat(entry, dir_fd=dfd).st_mode):
                _remove_tree_at(dfd, entry)
            else:
                os.unlink(entry, dir_fd=dfd)
    finally:
        os.close(dfd)
    os.rmdir(name, dir_fd=pfd)


def _apply_xattrs(target: int | str, info: tarfile.TarInfo) -> None:
    for key, value in info.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr."):]
        if name.startswith("trusted.overlay."):
            continue   # overlay metadata comes only from whiteout members we translate
        try:
            os.setxattr(target, name, value.encode("utf-8", "surrogateescape"))
        except OSError as err:
            log.debug("xattr %s not applied: %s", name, err)


def _set_meta(pfd: int, name: str, info: tarfile.TarInfo, fd: int | None = None) -> None:
    """Owner, then mode (chown clears setuid), then mtime."""
    if fd is not None:
        os.fchown(fd, info.uid, info.gid)
        os.fchmod(fd, stat.S_IMODE(info.mode))
        os.utime(fd, (info.mtime, info.mtime))
        return
    os.chown(name, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
    if not info.issym():
        os.chmod(name, stat.S_IMODE(info.mode), dir_fd=pfd)
    os.utime(name, (info.mtime, info.mtime), dir_fd=pfd, follow_symlinks=False)


def unpack_layer(blob: Path, dest: Path, on_progress: Callable[[int], None] | None = None
                 ) -> UnpackResult:
    """Extract the layer tar in `blob` (gzip, zstd or plain) into the empty directory `dest`.

    `on_progress(position)` receives how many bytes of `blob` have been consumed.
    Raises UnsafeLayerError for hostile members or corrupt data.
    """
    with open(blob, "rb") as raw:
        stream, close_stream = _decompressed(raw)
        report = (lambda _n: on_progress(raw.tell())) if on_progress else None
        reader = _HashingReader(stream, report)
        ex = _Extractor(dest)
        result = UnpackResult(diff_id="")
        try:
            with tarfile.open(fileobj=io.BufferedReader(reader, _CHUNK), mode="r|") as tar:
                for info in tar:
                    result.members += 1
                    _extract_member(ex, tar, info, result)
                # The tar end marker and padding are part of the diff id too.
                while reader.read(_CHUNK):
                    pass
            _finish_dirs(ex)
        except tarfile.TarError as err:
            raise UnsafeLayerError(f"layer is not a valid tar archive: {err}") from None
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise UnsafeLayerError(f"layer data is corrupt: {err}") from None
        finally:
            ex.close()
            close_stream()
    result.diff_id = "sha256:" + reader.digest.hexdigest()
    return result


def _finish_dirs(ex: _Extractor) -> None:
    """Directory modes and mtimes last (writing children changes the mtime), deepest first."""
    for parts, info in sorted(ex.dirs, key=lambda d: len(d[0]), reverse=True):
        try:
            pfd = ex.open_dir(parts[:-1], create=False)
            dfd = os.open(parts[-1], _DIR_FLAGS, dir_fd=pfd)
        except (UnsafeLayerError, OSError):
            continue   # replaced later in the same layer by a non-directory
        try:
            _set_meta(pfd, parts[-1], info, fd=dfd)
            _apply_xattrs(dfd, info)
        finally:
            os.close(dfd)


def _extract_member(ex: _Extractor, tar: tarfile.TarFile, info: tarfile.TarInfo,
                    result: UnpackResult) -> None:
    parts = clean_member_name(info.name)
    if not parts:
        if info.isdir():
            return   # "./" itself: the layer root keeps our own mode
        raise UnsafeLayerError(f"layer member {info.name!r} has an empty name")
    *parent, base = parts

    if base.startswith(WHITEOUT_PREFIX):
        pfd = ex.open_dir(parent, create=True)
        if base == WHITEOUT_OPAQUE:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
        elif base.startswith(WHITEOUT_META_PREFIX):
            result.skipped.append(info.name)   # other AUFS metadata (.wh..wh.plnk, ...)
        else:
            name = base[len(WHITEOUT_PREFIX):]
            if not name or name in (".", ".."):
                raise UnsafeLayerError(f"layer member {info.name!r} is a malformed whiteout")
            ex.clear_slot(pfd, parent, name, keep_dir=False)
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            os.chown(name, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
            # The member's mtime, so that the layer's tar can be written again identically.
            os.utime(name, (info.mtime, info.mtime), dir_fd=pfd, follow_symlinks=False)
        return

    if info.ischr() or info.isblk():
        if info.ischr() and info.devmajor == 0 and info.devminor == 0:
            pfd = ex.open_dir(parent, create=True)
            ex.clear_slot(pfd, parent, base, keep_dir=False)
            os.mknod(base, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
            return
        log.warning("layer member %r is a device node: skipped", info.name)
        result.skipped.append(info.name)
        return

    pfd = ex.open_dir(parent, create=True)
    if info.isdir():
        kept = ex.clear_slot(pfd, parent, base, keep_dir=True)
        if not kept:
            os.mkdir(base, 0o700, dir_fd=pfd)
        ex.dirs.append((tuple(parts), info))
        return

    ex.clear_slot(pfd, parent, base, keep_dir=False)
    if info.isreg():
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            src = tar.extractfile(info)
            assert src is not None
            with open(fd, "wb", closefd=False) as out:
                shutil.copyfileobj(src, out, _CHUNK)
            _set_meta(pfd, base, info, fd=fd)
            _apply_xattrs(fd, info)
        finally:
            os.close(fd)
        result.size += info.size
    elif info.issym():
        os.symlink(info.linkname, base, dir_fd=pfd)
        _set_meta(pfd, base, info)
    elif info.islnk():
        target = clean_member_name(info.linkname)
        if not target:
            raise UnsafeLayerError(f"hard link {info.name!r} has an empty target")
        # Resolve the source without following symlinks; the cached fd is the
        # destination's parent, so hold our own reference while walking.
        dst_fd = os.dup(pfd)
        try:
            src_parent = ex.open_dir(target[:-1], create=False)
            try:
                st = os.lstat(target[-1], dir_fd=src_parent)
            except FileNotFoundError:
                raise UnsafeLayerError(
                    f"hard link {info.name!r} points to {info.linkname!r}, not in this layer") from None
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayerError(f"hard link {info.name!r} points to a directory")
            os.link(target[-1], base, src_dir_fd=src_parent, dst_dir_fd=dst_fd,
                    follow_symlinks=False)
        finally:
            os.close(dst_fd)
    elif info.isfifo():
        os.mkfifo(base, 0o600, dir_fd=pfd)
        _set_meta(pfd, base, info)
    else:
        log.warning("layer member %r has unsupported type %r: skipped", info.name, info.type)
        result.skipped.append(info.name)
