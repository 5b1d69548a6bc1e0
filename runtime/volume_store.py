"""Named and anonymous volumes: <root>/volumes/<name>/_data plus metadata.json.

Which containers use a volume is the engine's knowledge (container records), so
removal checks happen there; this store only owns the directories and metadata.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
from pathlib import Path

from .atomic_file import read_json, write_json_atomic
from .errors import Conflict, InvalidArgument, NotFound
from .log_store import now_rfc3339
from .models import Volume

log = logging.getLogger(__name__)

VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# Docker (23+) marks volumes it created for `-v /path` and image VOLUMEs with this label.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


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
        self._load()

    def _load(self) -> None:
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".removing-"):
                shutil.rmtree(entry, ignore_errors=True)   # a removal the last run did not finish
                continue
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
        if options:
            # The local driver's mount options (type/device/o) would need mount(2) on
            # every use; refuse clearly rather than create a volume that ignores them.
            raise InvalidArgument(f"volume driver options are not supported: {sorted(options)}")
        labels = dict(labels or {})
        if not name:
            name = secrets.token_hex(32)
            anonymous = True
        validate_volume_name(name)
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        with self._lock:
            existing = self._volumes.get(name)
            if existing is not None:
                return existing, False
            vol_dir = self.root / name
            (vol_dir / "_data").mkdir(parents=True, exist_ok=True)
            vol = Volume(name=name, mountpoint=str(vol_dir / "_data"), created_at=now_rfc3339(),
                         driver="local", labels=labels, options={})
            write_json_atomic(vol_dir / "metadata.json", {
                "created_at": vol.created_at, "driver": vol.driver,
                "labels": vol.labels, "options": vol.options})
            self._volumes[name] = vol
            return vol, True

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
            vol = self._volumes.pop(name, None)
        if vol is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        vol_dir = self.root / name
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
        total = 0
        for dirpath, _dirs, files in os.walk(self.root / name / "_data"):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total
