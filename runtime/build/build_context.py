"""The build context: the tar a client sends to POST /build, unpacked safely, and COPY's sources in it.

The tar comes from the client, so every member is treated as hostile, with the
rules of `runtime/images/layer_unpack.py` and `runtime/path_scope.py`: names are
cleaned and one that climbs out of the context refuses the whole context;
parent directories are opened one component at a time without following any
symlink (`path_scope.open_beneath`), so a link planted by an earlier member is
never written through; hard links must name a member already unpacked; device
nodes are skipped. Unlike a layer, `.wh.` names are plain files here.

After unpacking, as dockerd does: the Dockerfile is read (the name given with
`-f`, relative to the context or absolute in it, a lower-case `dockerfile` when
the default name is missing), `.dockerignore` becomes an IgnoreMatcher, and the
two files are removed from the context when `.dockerignore` names them, so that
`COPY . /x` does not copy them.

`copy_sources` turns COPY/ADD source paths into paths inside the context: a
path that climbs out is refused with dockerd's message, symlinks are followed
in scope, wildcards match as Go's `filepath.Match` does, one path level at a time.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO, cast

from .. import path_scope
from ..errors import BuildError
from ..images import layer_unpack
from .dockerignore import IgnoreMatcher, glob_regex

log = logging.getLogger(__name__)

DEFAULT_DOCKERFILE = "Dockerfile"
DOCKERIGNORE = ".dockerignore"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_WILDCARD = re.compile(r"(?<!\\)[*?\[]")
_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_BZIP2 = b"BZh"
_MAGIC_XZ = b"\xfd7zXZ\x00"


class _Rejoined(io.RawIOBase):
    """A stream whose first bytes were read to sniff its compression, served again."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]  # io passes only these
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(buf))
        buf[:len(data)] = data
        return len(data)


def _decompressed(stream: BinaryIO) -> IO[bytes]:
    """`stream` decompressed as its magic bytes say (gzip, bzip2, xz or none).

    The standard library's readers check the end of a compressed stream (length,
    CRC), which tarfile's own "r|*" mode does not: a truncated context is refused.
    """
    head = b""
    while len(head) < len(_MAGIC_XZ):
        more = stream.read(len(_MAGIC_XZ) - len(head))
        if not more:
            break
        head += more
    raw = io.BufferedReader(_Rejoined(head, stream), _CHUNK)
    if head.startswith(_MAGIC_GZIP):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))   # typeshed: GzipFile is no IO
    if head.startswith(_MAGIC_BZIP2):
        return bz2.BZ2File(raw)
    if head.startswith(_MAGIC_XZ):
        return lzma.LZMAFile(raw)
    return raw


def _member_parts(name: str) -> list[str]:
    """The cleaned components of a member name; BuildError when it climbs out of the context."""
    try:
        return path_scope.components(name, refuse_escape=True)
    except path_scope.ScopeError:
        raise BuildError(f"build context member {name!r} points outside the context") from None


def _owner_and_times(pfd: int, name: str, info: tarfile.TarInfo, fd: int | None = None) -> None:
    try:
        if fd is not None:
            os.fchown(fd, info.uid, info.gid)
        else:
            os.chown(name, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
    except PermissionError:
        pass   # not root (tests, rootless): the files are ours, as the copy will make them anyway
    if fd is not None:
        os.fchmod(fd, stat.S_IMODE(info.mode))
        os.utime(fd, (info.mtime, info.mtime))
    else:
        os.utime(name, (info.mtime, info.mtime), dir_fd=pfd, follow_symlinks=False)


class _Unpacker:
    """One extraction into `dest`, every write relative to a directory fd."""

    def __init__(self, dest: Path) -> None:
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []

    def close(self) -> None:
        os.close(self.root_fd)

    def parent(self, parts: list[str], create: bool = True) -> int:
        try:
            return path_scope.open_beneath(self.root_fd, parts, create=create)
        except path_scope.ScopeError:
            raise BuildError(f"build context member {'/'.join(parts)!r} goes through a symlink "
                             "or a file") from None

    def member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        parts = _member_parts(info.name)
        if not parts:
            return   # the context root itself
        *parent, base = parts
        if info.ischr() or info.isblk() or info.isfifo():
            log.info("build context member %r is a device or fifo: skipped", info.name)
            return
        pfd = self.parent(parent)
        try:
            if info.isdir():
                if not layer_unpack.clear_slot(pfd, base, keep_dir=True):
                    os.mkdir(base, 0o700, dir_fd=pfd)
                self.dirs.append((parts, info))
                return
            layer_unpack.clear_slot(pfd, base, keep_dir=False)
            if info.isreg():
                self.regular(tar, info, pfd, base)
            elif info.issym():
                os.symlink(info.linkname, base, dir_fd=pfd)
                _owner_and_times(pfd, base, info)
            elif info.islnk():
                self.hard_link(info, pfd, base)
        finally:
            os.close(pfd)

    def regular(self, tar: tarfile.TarFile, info: tarfile.TarInfo, pfd: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            src = tar.extractfile(info)
            if src is not None:
                with open(fd, "wb", closefd=False) as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            _owner_and_times(pfd, base, info, fd=fd)
        finally:
            os.close(fd)

    def hard_link(self, info: tarfile.TarInfo, pfd: int, base: str) -> None:
        target = _member_parts(info.linkname)
        if not target:
            raise BuildError(f"hard link {info.name!r} in the build context has an empty target")
        src_fd = self.parent(target[:-1], create=False) if len(target) > 1 else os.dup(self.root_fd)
        try:
            if stat.S_ISDIR(os.lstat(target[-1], dir_fd=src_fd).st_mode):
                raise BuildError(f"hard link {info.name!r} in the build context points to a directory")
            os.link(target[-1], base, src_dir_fd=src_fd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise BuildError(f"hard link {info.name!r} points to {info.linkname!r}, "
                             "which is not in the build context") from None
        finally:
            os.close(src_fd)

    def finish_dirs(self) -> None:
        """Directory modes and times last (filling a directory changes its mtime), deepest first."""
        for parts, info in sorted(self.dirs, key=lambda d: len(d[0]), reverse=True):
            try:
                pfd = self.parent(parts[:-1], create=False)
            except (BuildError, OSError):
                continue   # replaced later in the tar by something else
            try:
                dfd = os.open(parts[-1], _DIR_FLAGS, dir_fd=pfd)
            except OSError:
                os.close(pfd)
                continue
            try:
                _owner_and_times(pfd, parts[-1], info, fd=dfd)
            finally:
                os.close(dfd)
                os.close(pfd)


def unpack_context(stream: BinaryIO, dest: Path) -> None:
    """Unpack a build-context tar (plain, gzip, bzip2 or xz) into the existing directory `dest`."""
    unpacker = _Unpacker(dest)
    try:
        source = _decompressed(stream)
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for info in tar:
                unpacker.member(tar, info)
        while source.read(_CHUNK):
            pass   # to the end, so that a compressed stream's trailer is checked
        unpacker.finish_dirs()
    except tarfile.ReadError as err:
        if str(err) == "empty file":
            return   # an empty body is an empty context: the missing Dockerfile says so
        raise BuildError(f"the build context is not a valid tar archive: {err}") from None
    # A corrupt compressed stream surfaces as any of these (gzip garbage even as TypeError).
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError, TypeError) as err:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        raise BuildError(f"the build context is not a valid tar archive: {err}") from None
    finally:
        unpacker.close()


def _in_context(context: Path, rel: str) -> Path:
    """`rel` resolved inside `context`, symlinks followed in scope (never out of it)."""
    def readlink(parts: list[str]) -> str | None:
        path = context.joinpath(*parts)
        return os.readlink(path) if path.is_symlink() else None
    return context.joinpath(*path_scope.resolve(rel, readlink))


def _read_dockerfile(dest: Path, name: str) -> tuple[str, Path]:
    rel = name.lstrip("/") or DEFAULT_DOCKERFILE
    candidates = [rel] + (["dockerfile"] if rel == DEFAULT_DOCKERFILE else [])
    for candidate in candidates:
        path = _in_context(dest, candidate)
        if path.is_file():
            data = path.read_bytes()
            if not data.strip():
                raise BuildError(f"the Dockerfile ({name}) cannot be empty")
            return data.decode("utf-8", "replace"), path
    raise BuildError(f"Cannot locate specified Dockerfile: {name}")


def extract_context(stream: BinaryIO, dest: Path, dockerfile_name: str = DEFAULT_DOCKERFILE
                    ) -> tuple[str, IgnoreMatcher]:
    """Unpack the build context into `dest`; (the Dockerfile's text, the .dockerignore matcher).

    BuildError for a corrupt tar, a member escaping `dest`, a missing or empty Dockerfile.
    """
    unpack_context(stream, dest)
    text, dockerfile = _read_dockerfile(dest, dockerfile_name)
    ignore_file = dest / DOCKERIGNORE
    ignore_text = ""
    if ignore_file.is_file() and not ignore_file.is_symlink():
        ignore_text = ignore_file.read_text("utf-8", "replace")
    matcher = IgnoreMatcher.from_text(ignore_text)
    # dockerd removes the Dockerfile and .dockerignore when .dockerignore names them.
    for path in (dockerfile, ignore_file):
        rel = path.relative_to(dest).as_posix()
        if matcher.ignored(rel) and (path.is_file() or path.is_symlink()):
            path.unlink()
    return text, matcher


def _walk(context: Path) -> Iterator[str]:
    """Every path of the context, relative, parents before children; symlinks not followed."""
    for directory, dirs, files in os.walk(context):
        base = Path(directory).relative_to(context).as_posix()
        for name in sorted(dirs + files):
            yield name if base == "." else f"{base}/{name}"
        dirs.sort()


def _go_match(pattern: str, name: str) -> bool:
    """Go's filepath.Match: * and ? stop at /, [...] classes, \\ escapes, ** is just * twice."""
    return glob_regex(pattern, double_star=False).match(name) is not None


def copy_sources(context: Path, patterns: list[str], matcher: IgnoreMatcher, keyword: str = "COPY"
                 ) -> list[Path]:
    """The context paths COPY/ADD `patterns` (expanded sources) name, in order, each inside `context`.

    BuildError, worded as dockerd's, for a path outside the context, a missing one,
    or wildcards that match nothing. Paths `matcher` ignores count as missing.
    """
    found: list[Path] = []
    for source in patterns:
        rel = source[1:] if source.startswith("/") else source
        cleaned = os.path.normpath(rel) if rel else "."
        if cleaned == ".." or cleaned.startswith("../"):
            raise BuildError(f"{keyword} failed: forbidden path outside the build context: {rel} ()")
        cleaned = "" if cleaned == "." else cleaned
        if _WILDCARD.search(cleaned):
            matched = [p for p in _walk(context) if _go_match(cleaned, p) and not matcher.ignored(p)]
            found += [_in_context(context, p) for p in matched]
            continue
        if cleaned and matcher.ignored(cleaned) and not matcher.may_contain_kept(cleaned):
            raise _not_found(keyword, source)
        path = _in_context(context, cleaned)
        if not os.path.lexists(path):
            raise _not_found(keyword, source)
        found.append(path)
    if not found:
        raise BuildError(f"{keyword} failed: no source files were specified")
    return found


def _not_found(keyword: str, source: str) -> BuildError:
    return BuildError(f"{keyword} failed: file not found in build context or excluded by .dockerignore: "
                      f"stat {source}: file does not exist")
