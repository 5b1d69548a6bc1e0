"""COPY and ADD: files from the build context (or another stage) into an image's root.

Everything is written through a directory fd of the merged root (`build_mount`), each
destination resolved in scope with `path_scope`, so a symlink in the image never leads
a copy outside it. Entries are recreated, never followed: a symlink in the source is
copied as a symlink. Owners are 0:0 unless `--chown` names others (as Docker's COPY);
modes and modification times are kept. ADD unpacks a local tar archive (plain, gzip,
bzip2 or xz) into the destination directory, keeping the archive's owners.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import path_scope
from ..errors import InvalidArgument
from ..images import layer_unpack

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REOPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC   # for /proc/self/fd/N of an O_PATH fd
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")

Skip = Callable[[str], bool]      # relative source path -> leave it out (.dockerignore)


@dataclass
class Owner:
    """uid and gid given to copied entries; None keeps the source's (ADD archives)."""

    uid: int
    gid: int


@dataclass
class Source:
    """One COPY/ADD source: a path on disk and the name it is copied under."""

    path: Path
    rel: str          # relative to the context (or the other stage's root), for .dockerignore
    name: str = ""    # the name a file is copied under (the source as named, before its
                      # symlinks were followed); the path's own name when empty


def _no_skip(rel: str) -> bool:
    return False


# -- the cache's view of the sources ------------------------------------------------
def sources_hash(sources: list[Source], skip: Skip = _no_skip) -> str:
    """A hash of names, types, modes, owners, link targets and contents of the sources."""
    h = hashlib.sha256()
    for src in sources:
        h.update(f"\0src {src.rel}\0".encode())
        _hash_entry(h, src.path, ".", skip, src.rel, top=True)
    return h.hexdigest()


def _hash_entry(h: hashlib._Hash, path: Path, name: str, skip: Skip, rel: str, top: bool = False) -> None:
    st = os.stat(path) if top else os.lstat(path)
    h.update(f"{name}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0".encode())
    if stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(path).encode() + b"\0")
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    elif stat.S_ISDIR(st.st_mode):
        for child in sorted(os.listdir(path)):
            child_rel = f"{rel}/{child}" if rel not in ("", ".") else child
            if skip(child_rel):
                continue
            _hash_entry(h, path / child, f"{name}/{child}", skip, child_rel)


# -- destinations in the image's root -------------------------------------------------
def make_dirs(root_fd: int, path: str, owner: Owner | None, mode: int = 0o755) -> int:
    """An O_PATH fd of directory `path` in the root, missing components made (owned by
    `owner`, else root) as Docker's MkdirAllAndChownNew does; symlinks followed in scope."""
    parts = path_scope.components(path)
    fd = os.dup(root_fd)
    for i in range(len(parts)):
        prefix = "/".join(parts[: i + 1])
        try:
            nfd = path_scope.open_in_root(root_fd, prefix)
        except FileNotFoundError:
            try:
                os.mkdir(parts[i], mode, dir_fd=fd)
            except FileExistsError:
                pass
            nfd = path_scope.open_in_root(root_fd, prefix)
            os.chown(path_scope.fd_path(nfd), owner.uid if owner else 0, owner.gid if owner else 0)
            os.chmod(path_scope.fd_path(nfd), mode)
        os.close(fd)
        fd = nfd
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise InvalidArgument(f"cannot copy to {path}: /{prefix} is not a directory")
    return fd


def is_dir_in_root(root_fd: int, path: str) -> bool:
    try:
        fd = path_scope.open_in_root(root_fd, path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _apply_meta(name: str, dir_fd: int, st: os.stat_result, owner: Owner | None) -> None:
    uid, gid = (owner.uid, owner.gid) if owner else (st.st_uid, st.st_gid)
    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dir_fd)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def _clear(name: str, dir_fd: int, keep_dir: bool) -> bool:
    """Make room for `name`; True when a directory is there and is kept (merged into)."""
    try:
        return layer_unpack.clear_slot(dir_fd, name, keep_dir, remove_dir=False)
    except IsADirectoryError:
        raise InvalidArgument(f"cannot overwrite directory {name!r} with a non-directory") from None


def copy_entry(src: Path, dir_fd: int, name: str, owner: Owner | None, skip: Skip, rel: str,
               top: bool = False) -> None:
    """Recreate `src` as `name` in the directory `dir_fd` (recursively, links not followed)."""
    st = os.stat(src) if top else os.lstat(src)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        if not _clear(name, dir_fd, keep_dir=True):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        child_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            copy_children(src, child_fd, owner, skip, rel)
        finally:
            os.close(child_fd)
    elif stat.S_ISLNK(mode):
        _clear(name, dir_fd, keep_dir=False)
        os.symlink(os.readlink(src), name, dir_fd=dir_fd)
    elif stat.S_ISREG(mode):
        _clear(name, dir_fd, keep_dir=False)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=dir_fd)
        with open(src, "rb") as fin, os.fdopen(out, "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
    elif stat.S_ISFIFO(mode):
        _clear(name, dir_fd, keep_dir=False)
        os.mkfifo(name, 0o600, dir_fd=dir_fd)
    else:
        return   # sockets and devices are not copied (a build context cannot carry them)
    _apply_meta(name, dir_fd, st, owner)


def copy_children(src_dir: Path, dir_fd: int, owner: Owner | None, skip: Skip, rel: str) -> None:
    for child in sorted(os.listdir(src_dir)):
        child_rel = f"{rel}/{child}" if rel not in ("", ".") else child
        if skip(child_rel):
            continue
        copy_entry(src_dir / child, dir_fd, child, owner, skip, child_rel)


def copy_source(root_fd: int, src: Source, dest: str, dest_is_dir: bool, owner: Owner | None,
                skip: Skip = _no_skip, extract: bool = False) -> None:
    """One COPY/ADD source to `dest` (absolute in the image): a directory's contents go into
    `dest`; a file goes to `dest/<name>` when `dest` is a directory, else becomes `dest`."""
    st = os.stat(src.path)
    if stat.S_ISDIR(st.st_mode):
        fd = make_dirs(root_fd, dest, owner)
        try:
            dfd = os.open(path_scope.fd_path(fd), _REOPEN_FLAGS)
            try:
                copy_children(src.path, dfd, owner, skip, src.rel)
                os.chown(dfd, owner.uid if owner else 0, owner.gid if owner else 0)
                os.chmod(dfd, stat.S_IMODE(st.st_mode))
            finally:
                os.close(dfd)
        finally:
            os.close(fd)
        return
    if extract and is_archive(src.path):
        fd = make_dirs(root_fd, dest, owner)
        try:
            extract_archive(src.path, path_scope.fd_path(fd))
        finally:
            os.close(fd)
        return
    if dest_is_dir or is_dir_in_root(root_fd, dest):
        parent, name = dest, src.name or src.path.name
    else:
        parent, _, name = path_scope.clean(dest).rpartition("/")
    fd = make_dirs(root_fd, parent or "/", owner)
    try:
        dfd = os.open(path_scope.fd_path(fd), _REOPEN_FLAGS)
        try:
            copy_entry(src.path, dfd, name, owner, skip, src.rel, top=True)
        finally:
            os.close(dfd)
    finally:
        os.close(fd)


# -- ADD's archives ---------------------------------------------------------------------
def is_archive(path: Path) -> bool:
    """A tar, plain or compressed, as Docker's ADD recognises one (by content)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if any(head.startswith(m) for m in _ARCHIVE_MAGIC):
        try:
            with tarfile.open(path, "r:*") as tar:
                tar.next()
            return True
        except (tarfile.TarError, OSError, EOFError):
            return False
    return len(head) == 512 and head[257:262] == b"ustar"


def extract_archive(archive: Path, dest_dir: str) -> None:
    """Unpack `archive` into `dest_dir` (a /proc/self/fd path of a directory in the root);
    every member is placed in scope, owners and modes as the archive says."""
    root_fd = os.open(dest_dir, _REOPEN_FLAGS)
    try:
        with tarfile.open(archive, "r:*") as tar:
            dirs: list[tuple[str, tarfile.TarInfo]] = []
            for member in tar:
                name = path_scope.clean(member.name).lstrip("/")
                if not name:
                    continue
                parent, _, base = name.rpartition("/")
                pfd = make_dirs(root_fd, parent or "/", None)
                try:
                    dfd = os.open(path_scope.fd_path(pfd), _REOPEN_FLAGS)
                finally:
                    os.close(pfd)
                try:
                    _extract_member(tar, member, root_fd, dfd, base)
                finally:
                    os.close(dfd)
                if member.isdir():
                    dirs.append((name, member))
            for name, member in reversed(dirs):   # directory times last, after their contents
                fd = path_scope.open_in_root(root_fd, name)
                try:
                    os.utime(path_scope.fd_path(fd), (member.mtime, member.mtime))
                finally:
                    os.close(fd)
    except tarfile.TarError as err:
        raise InvalidArgument(f"ADD: cannot unpack {archive.name}: {err}") from None
    finally:
        os.close(root_fd)


def _extract_member(tar: tarfile.TarFile, m: tarfile.TarInfo, root_fd: int, dfd: int, base: str) -> None:
    if m.isdir():
        if not _clear(base, dfd, keep_dir=True):
            os.mkdir(base, 0o700, dir_fd=dfd)
    elif m.issym():
        _clear(base, dfd, keep_dir=False)
        os.symlink(m.linkname, base, dir_fd=dfd)
    elif m.islnk():
        _clear(base, dfd, keep_dir=False)
        target = path_scope.open_in_root(root_fd, path_scope.clean(m.linkname).lstrip("/"))
        try:
            os.link(path_scope.fd_path(target), base, dst_dir_fd=dfd, follow_symlinks=True)
        finally:
            os.close(target)
        return
    elif m.isreg():
        _clear(base, dfd, keep_dir=False)
        out = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=dfd)
        fin = tar.extractfile(m)
        with os.fdopen(out, "wb") as fout:
            while fin is not None and (chunk := fin.read(1 << 20)):
                fout.write(chunk)
    elif m.isfifo():
        _clear(base, dfd, keep_dir=False)
        os.mkfifo(base, 0o600, dir_fd=dfd)
    elif m.ischr() or m.isblk():
        _clear(base, dfd, keep_dir=False)
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=dfd)
    else:
        return
    os.chown(base, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
    if not m.issym():
        os.chmod(base, m.mode & 0o7777, dir_fd=dfd)
        os.utime(base, (m.mtime, m.mtime), dir_fd=dfd)


# -- --chown ------------------------------------------------------------------------------
def parse_owner(spec: str, root_fd: int) -> Owner:
    """`--chown=user[:group]`, names looked up in the image's /etc/passwd and /etc/group."""
    user, _, group = spec.partition(":")
    if not user:
        raise InvalidArgument(f"invalid --chown value {spec!r}")
    uid = _lookup_id(root_fd, "/etc/passwd", user, "user")
    gid = _lookup_id(root_fd, "/etc/group", group or user, "group")
    return Owner(uid, gid)


def _lookup_id(root_fd: int, table: str, name: str, kind: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        fd = path_scope.open_in_root(root_fd, table)
        try:
            with open(path_scope.fd_path(fd), encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                        return int(fields[2])
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise
    raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: "
                          f"can't find {kind} {name!r} in {table}")
