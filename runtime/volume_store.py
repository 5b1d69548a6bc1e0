"""Named and anonymous volumes: <root>/volumes/<name>/_data plus metadata.json.

Which containers use a volume is the engine's knowledge (container records), so
removal checks happen there; this store only owns the directories and metadata.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import shutil
import threading
from pathlib import Path

from .atomic_file import read_json, write_json_atomic
from .errors import Conflict, InvalidArgument, NotFound
from .lazy_re import lazy_compile
from .local_volume import is_mounted, mount_volume, unmount_volume, validate_options
from .log_store import now_rfc3339
from .models import Volume

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

    def remove(self, name: str, in_use_by: list[str] | None = None, force: bool = False) -> None:
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
_OPAQUE_XATTR = "trusted.overlay.opaque"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _hidden_in(layer: Path, rel_parts: list[str]) -> bool:
    """Whether `layer` hides the path below it (a whiteout or a non-directory on the way)."""
    current = layer
    for part in rel_parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return False
        if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
            return True
    return False


def populate_from_layers(layers: list[Path], target: str, dest: Path) -> bool:
    """Copy the merged content of `target` across `layers` (lowest first) into `dest`.

    Returns True when something was copied. Only directories are copied, as dockerd does.
    """
    parts = [p for p in target.split("/") if p]
    sources: list[Path] = []
    for layer in reversed(layers):
        path = layer.joinpath(*parts)
        if _hidden_in(layer, parts[:-1]):
            break
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            break     # a whiteout or a file: nothing below is visible
        sources.append(path)
        if _is_opaque(path):
            break
    if not sources:
        return False
    for src in reversed(sources):
        _merge_tree(src, dest)
    top = os.lstat(sources[0])
    os.chown(dest, top.st_uid, top.st_gid)
    os.chmod(dest, stat.S_IMODE(top.st_mode))
    return True


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _merge_tree(src: Path, dst: Path) -> None:
    for entry in os.scandir(src):
        target = dst / entry.name
        st = entry.stat(follow_symlinks=False)
        if _is_whiteout(st):
            _remove_path(target)
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.lexists(target) and not (target.is_dir() and not target.is_symlink()):
                _remove_path(target)
            elif os.path.lexists(target) and _is_opaque(Path(entry.path)):
                shutil.rmtree(target)
            target.mkdir(exist_ok=True)
            _merge_tree(Path(entry.path), target)
        else:
            if os.path.lexists(target):
                _remove_path(target)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(entry.path), target)
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(entry.path, target, follow_symlinks=False)
            else:
                continue   # fifos and devices are not volume content
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(target, stat.S_IMODE(st.st_mode))
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
