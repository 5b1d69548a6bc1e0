"""Named and anonymous volumes: <root>/volumes/<name>/_data plus metadata.json.

Which containers use a volume is the engine's knowledge (container records), so
removal checks happen there; this store only owns the directories and metadata.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from .. import path_scope
from ..atomic_file import read_json, write_json_atomic
from ..errors import Conflict, InvalidArgument, NotFound
from ..lazy_re import lazy_compile
from ..models import Volume
from ..timestamps import now_rfc3339
from .local_volume import is_mounted, mount_volume, unmount_volume, validate_options

log = logging.getLogger(__name__)

VOLUME_NAME_RE = lazy_compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# Docker (23+) marks volumes it created for `-v /path` and image VOLUMEs with this label.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
_MAX_STACKED_MOUNTS = 16


def validate_volume_name(name: str) -> None:
    """Docker's rule for volume names; raises InvalidArgument with Docker's wording."""
    if not VOLUME_NAME_RE.match(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            f'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            f"directory, use absolute path")


class VolumeStore:
    """Local-driver volumes under one directory; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._volumes: dict[str, Volume] = {}
        self._users: dict[str, set[str]] = {}   # volume with driver options → running users
        self._load()

    def _load(self) -> None:
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".removing-"):
                shutil.rmtree(entry, ignore_errors=True)   # a removal the last run did not finish
                continue
            # A mount the last run left behind (its containers are gone): a fresh start.
            self._unmount(entry / "_data")
            meta = read_json(entry / "metadata.json")
            if not isinstance(meta, dict) or not (entry / "_data").is_dir():
                continue
            self._volumes[entry.name] = Volume(
                name=entry.name, mountpoint=str(entry / "_data"),
                created_at=meta.get("created_at", ""), driver=meta.get("driver", "local"),
                labels=dict(meta.get("labels") or {}), options=dict(meta.get("options") or {}))

    def create(self, name: str | None = None, driver: str = "local",
               labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
               anonymous: bool = False) -> tuple[Volume, bool]:
        """Create (or return the existing) volume; the bool says whether it is new.

        A missing name makes an anonymous volume with a random 64-hex name, as Docker does.
        """
        if driver not in ("", "local"):
            raise InvalidArgument(f"error looking up volume plugin {driver}: plugin \"{driver}\" not found")
        labels = dict(labels or {})
        options = dict(options or {})
        if not name:
            name = secrets.token_hex(32)
            anonymous = True
        validate_volume_name(name)
        validate_options(name, options)
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        with self._lock:
            existing = self._volumes.get(name)
            if existing is not None:
                return existing, False
            vol_dir = self.root / name
            (vol_dir / "_data").mkdir(parents=True, exist_ok=True)
            vol = Volume(name=name, mountpoint=str(vol_dir / "_data"), created_at=now_rfc3339(),
                         driver="local", labels=labels, options=options)
            write_json_atomic(vol_dir / "metadata.json", {
                "created_at": vol.created_at, "driver": vol.driver,
                "labels": vol.labels, "options": vol.options})
            self._volumes[name] = vol
            return vol, True

    # driver options: the mount each running user shares ---------------------------
    def acquire(self, name: str, owner: str) -> str:
        """The directory to bind into container `owner`; mounts the volume's filesystem
        (driver options) on its first user, as dockerd's local driver does."""
        vol = self.get(name)
        opts = validate_options(name, vol.options)
        if opts is None:
            return vol.mountpoint
        with self._lock:
            users = self._users.setdefault(name, set())
            if not users:
                mount_volume(opts, vol.mountpoint)
            users.add(owner)
        return vol.mountpoint

    def release(self, owner: str) -> None:
        """`owner` stopped: unmount every volume it was the last user of. Idempotent."""
        with self._lock:
            for name, users in list(self._users.items()):
                if owner not in users:
                    continue
                users.discard(owner)
                if not users:
                    del self._users[name]
                    self._unmount(self.root / name / "_data")

    @staticmethod
    def _unmount(data_dir: Path) -> None:
        try:
            for _ in range(_MAX_STACKED_MOUNTS):   # stacked mounts come off one by one
                if not is_mounted(str(data_dir)):
                    return
                unmount_volume(str(data_dir))
        except OSError as err:
            log.warning("unmounting volume %s failed: %s", data_dir.parent.name, err)

    def get(self, name: str) -> Volume:
        with self._lock:
            vol = self._volumes.get(name)
        if vol is None:
            raise NotFound(f"get {name}: no such volume")
        return vol

    def list(self) -> list[Volume]:
        with self._lock:
            return sorted(self._volumes.values(), key=lambda v: v.name)

    def remove(self, name: str, in_use_by: Sequence[str] | None = None, force: bool = False) -> None:
        """Delete the volume and its data. Conflict when containers (ids) still use it."""
        if in_use_by:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(in_use_by)}]")
        with self._lock:
            vol = self._volumes.get(name)
        if vol is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        vol_dir = self.root / name
        # Never delete through a mount: with o=bind that would be the user's own directory.
        self._unmount(vol_dir / "_data")
        if is_mounted(str(vol_dir / "_data")):
            raise Conflict(f"remove {name}: its mount could not be undone")
        with self._lock:
            self._users.pop(name, None)
            self._volumes.pop(name, None)
        # Rename first so a crash mid-delete never leaves a half-empty live volume.
        doomed = self.root / f".removing-{name}"
        try:
            os.rename(vol_dir, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    @staticmethod
    def is_anonymous(vol: Volume) -> bool:
        return ANONYMOUS_LABEL in vol.labels

    def usage(self, name: str) -> int:
        """Bytes used under the volume's _data (for prune and `system df`)."""
        return directory_size(self.root / name / "_data")


def directory_size(path: Path) -> int:
    """Sum of the sizes of the files below `path`; files vanishing meanwhile count 0."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# Copying the image's content into a fresh volume ------------------------------------
# dockerd fills an empty volume with whatever the image has at the mount point
# (unless `nocopy`), so `VOLUME /var/lib/x` keeps the files the image put there.
# The mount point comes from the image or the request: it is cleaned and its
# symlinks are followed inside the image (path_scope.resolve), and every file
# is then reached through directory fds opened with O_NOFOLLOW, in the layers
# and in the volume alike, so nothing outside either is ever read or written.
_OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20


def is_whiteout(st: os.stat_result) -> bool:
    """Whether `st` is an overlay whiteout (a char device 0/0): the path is deleted in this layer."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(fd: int) -> bool:
    """Whether the directory `fd` is opaque: it hides what the layers below hold there."""
    try:
        return os.getxattr(fd, _OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _lstat_at(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return None


class LayerView:
    """The merged (overlayfs) view of an image's read-only layers, read through fds.

    A directory of the view is a list of layer directory fds, topmost first,
    cut where overlayfs stops merging: at an opaque directory, or above a
    whiteout or non-directory in a lower layer. Use as a context manager.
    """

    def __init__(self, layers: list[Path]) -> None:
        self._roots: list[int] = []
        try:
            for layer in reversed(layers):
                self._roots.append(os.open(layer, _DIR_FLAGS))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in self._roots:
            os.close(fd)
        self._roots = []

    def __enter__(self) -> LayerView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _top(dirs: list[int], name: str) -> tuple[int, os.stat_result] | None:
        """The visible entry `name` of a merged directory: (layer dir fd, lstat) or None."""
        for fd in dirs:
            st = _lstat_at(fd, name)
            if st is None:
                continue
            return None if is_whiteout(st) else (fd, st)
        return None

    @staticmethod
    def _descend(dirs: list[int], name: str) -> list[int]:
        """The merged directory `name` below `dirs` (new fds; [] when it is not a directory)."""
        result: list[int] = []
        try:
            for fd in dirs:
                st = _lstat_at(fd, name)
                if st is None:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    break
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                result.append(child)
                if is_opaque(child):
                    break
        except BaseException:
            _close_all(result)
            raise
        return result

    @classmethod
    def lookup(cls, dirs: list[int], name: str) -> tuple[int, os.stat_result] | None:
        """The visible entry `name` of the merged directory `dirs` (from `open_dir`)."""
        return cls._top(dirs, name)

    @classmethod
    def descend(cls, dirs: list[int], name: str) -> list[int]:
        """Fresh fds of the merged directory `name` below `dirs` ([] if it is not one)."""
        return cls._descend(dirs, name)

    @staticmethod
    def listdir(dirs: list[int]) -> set[str]:
        """The names visible in the merged directory `dirs` (whiteouts hide lower ones)."""
        names: set[str] = set()
        hidden: set[str] = set()
        for fd in dirs:
            for name in os.listdir(fd):
                if name in names or name in hidden:
                    continue
                st = _lstat_at(fd, name)
                if st is None:
                    continue
                (hidden if is_whiteout(st) else names).add(name)
        return names

    def _parent_dirs(self, parts: list[str]) -> list[int]:
        """Fresh fds of the merged directory holding `parts[-1]` ([] if it is not reachable)."""
        dirs = [os.dup(fd) for fd in self._roots]
        for comp in parts[:-1]:
            below = self._descend(dirs, comp)
            _close_all(dirs)
            dirs = below
            if not dirs:
                break
        return dirs

    def readlink(self, parts: list[str]) -> str | None:
        """The target of the symlink the image has at `parts`, else None (path_scope.resolve)."""
        if not parts:
            return None
        dirs = self._parent_dirs(parts)
        try:
            found = self._top(dirs, parts[-1])
            if found is None or not stat.S_ISLNK(found[1].st_mode):
                return None
            return os.readlink(parts[-1], dir_fd=found[0])
        finally:
            _close_all(dirs)

    def resolve(self, path: str) -> list[str]:
        """`path` cleaned and its symlinks followed inside the image, as components."""
        return path_scope.resolve(path, self.readlink)

    def kind(self, parts: list[str]) -> str:
        """"dir", "file" (anything not a directory) or "" (missing) for resolved `parts`."""
        if not parts:
            return "dir"
        dirs = self._parent_dirs(parts)
        try:
            found = self._top(dirs, parts[-1])
        finally:
            _close_all(dirs)
        if found is None:
            return ""
        return "dir" if stat.S_ISDIR(found[1].st_mode) else "file"

    def open_dir(self, parts: list[str]) -> list[int]:
        """Fresh fds of the merged directory at resolved `parts` ([] if it is not one)."""
        if not parts:
            return [os.dup(fd) for fd in self._roots]
        dirs = self._parent_dirs(parts)
        try:
            return self._descend(dirs, parts[-1])
        finally:
            _close_all(dirs)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def volume_target_kind(view: LayerView, target: str) -> tuple[list[str], str]:
    """Where a volume at `target` lands in the image (resolved components) and what is there.

    InvalidArgument when it would cover the root or an existing file, as dockerd refuses.
    """
    try:
        parts = view.resolve(target)
    except path_scope.ScopeError as err:
        raise InvalidArgument(f"invalid mount config: volume destination {target!r}: "
                              f"{err.strerror}") from None
    if not parts:
        raise InvalidArgument(f"invalid mount config: volume destination {target!r} "
                              "resolves to '/' inside the container")
    kind = view.kind(parts)
    if kind == "file":
        raise InvalidArgument(f"cannot mount volume over existing file, file exists "
                              f"{path_scope.clean('/'.join(parts))}")
    return parts, kind


def check_volume_targets(layers: list[Path], targets: list[str]) -> None:
    """InvalidArgument if a volume at one of `targets` would cover the root or a file of the image."""
    with LayerView(layers) as view:
        for target in targets:
            volume_target_kind(view, target)


def populate_from_layers(layers: list[Path], target: str, dest: Path) -> bool:
    """Copy the merged content of `target` across `layers` (lowest first) into `dest`.

    `target` is resolved inside the image (symlinks in scope). Returns True when
    a directory was there (even empty). Only directories are copied, as dockerd does.
    """
    with LayerView(layers) as view:
        parts, kind = volume_target_kind(view, target)
        if kind != "dir":
            return False
        sources = view.open_dir(parts)
        try:
            dest_fd = os.open(dest, _DIR_FLAGS)
            try:
                _copy_merged(sources, dest_fd)
                top = os.fstat(sources[0])
                os.fchown(dest_fd, top.st_uid, top.st_gid)
                os.fchmod(dest_fd, stat.S_IMODE(top.st_mode))
            finally:
                os.close(dest_fd)
        finally:
            _close_all(sources)
    return True


def _copy_merged(sources: list[int], dst: int) -> None:
    """Copy the merged directory `sources` (topmost first) into the directory fd `dst`."""
    visible: dict[str, tuple[int, os.stat_result] | None] = {}
    for fd in sources:
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.name not in visible:
                    st = entry.stat(follow_symlinks=False)
                    visible[entry.name] = None if is_whiteout(st) else (fd, st)
    for name in sorted(visible):
        found = visible[name]
        if found is None:
            continue
        fd, st = found
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            child_dst = os.open(name, _DIR_FLAGS, dir_fd=dst)
            child_src = LayerView._descend(sources, name)
            try:
                _copy_merged(child_src, child_dst)
                _set_meta(child_dst, st)
            finally:
                os.close(child_dst)
                _close_all(child_src)
        elif stat.S_ISREG(st.st_mode):
            src_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                out_fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=dst)
                try:
                    _copy_data(src_fd, out_fd)
                    _set_meta(out_fd, st)
                finally:
                    os.close(out_fd)
            finally:
                os.close(src_fd)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=fd), name, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)
        # fifos and devices are not volume content


def _copy_data(src: int, dst: int) -> None:
    try:
        while os.copy_file_range(src, dst, _COPY_CHUNK):
            pass
        return
    except OSError as err:
        # Kernels before 5.3 refuse copies across file systems; start again by hand.
        if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    os.ftruncate(dst, 0)
    while chunk := os.read(src, _COPY_CHUNK):
        written = 0
        while written < len(chunk):
            written += os.write(dst, chunk[written:])


def _set_meta(fd: int, st: os.stat_result) -> None:
    """Owner, then mode (chown clears setuid), then times."""
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
