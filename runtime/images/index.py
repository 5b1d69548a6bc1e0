"""The in-memory index of local images and their names, persisted as JSON.

* ``imagedb/<id hex>.json`` — one ImageRecord per image (id = config digest);
* ``repositories.json`` — every name in one file, ``{"refs": {familiar ref: image id}}``,
  where a familiar ref is a tag ("busybox:latest") or a digest reference
  ("busybox@sha256:..."). It is rewritten atomically on every change.

Everything is loaded once at start, so lookups never touch the disk. The
index is not thread-safe by itself: ImageStore serialises access.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_file import read_json, write_json_atomic
from .blob_store import digest_hex

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """What we keep about one image besides its config blob."""

    id: str                       # "sha256:<config digest hex>"
    chain_ids: list[str]          # lowest layer first
    size: int                     # unpacked bytes, all layers
    config: dict[str, Any] = field(default_factory=dict, repr=False)   # loaded from the blob store
    manifest_digest: str = ""     # the platform manifest we pulled
    pulled_at: float = 0.0
    parent: str = ""              # the local image this one was made from (commit, build)


class ImageIndex:
    """Images by id and names by familiar ref, mirrored to disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.db_dir = self.root / "imagedb"
        self.refs_path = self.root / "repositories.json"
        self.db_dir.mkdir(parents=True, exist_ok=True)
        self.images: dict[str, ImageRecord] = {}
        self.refs: dict[str, str] = {}

    def load(self, load_config: Callable[[str], dict[str, Any]]) -> None:
        """Read every record; `load_config(image_id)` returns the verified config dict."""
        for path in self.db_dir.glob("*.json"):
            try:
                raw = json.loads(path.read_text())
                record = ImageRecord(**{k: v for k, v in raw.items() if k != "config"})
                record.config = load_config(record.id)
            except Exception as err:   # one damaged record must not stop the engine
                log.warning("ignoring damaged image record %s: %s", path, err)
                continue
            self.images[record.id] = record
        refs = (read_json(self.refs_path, {}) or {}).get("refs", {})
        self.refs = {name: image_id for name, image_id in refs.items() if image_id in self.images}

    def save_refs(self) -> None:
        write_json_atomic(self.refs_path, {"refs": dict(sorted(self.refs.items()))})

    def put(self, record: ImageRecord) -> None:
        data = asdict(record)
        data.pop("config")
        write_json_atomic(self.db_dir / f"{digest_hex(record.id)}.json", data)
        self.images[record.id] = record

    def delete(self, image_id: str) -> None:
        self.images.pop(image_id, None)
        (self.db_dir / f"{digest_hex(image_id)}.json").unlink(missing_ok=True)
        stale = [name for name, iid in self.refs.items() if iid == image_id]
        for name in stale:
            del self.refs[name]
        if stale:
            self.save_refs()

    def refs_of(self, image_id: str) -> list[str]:
        return sorted(name for name, iid in self.refs.items() if iid == image_id)

    def ids_with_prefix(self, hex_prefix: str) -> list[str]:
        return [iid for iid in self.images if iid[7:].startswith(hex_prefix)]
