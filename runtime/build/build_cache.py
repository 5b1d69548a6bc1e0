"""The classic builder's layer cache: what each build step made, keyed on what it started from.

A step's key is the sha256 of the state it started from (the parent's config id), the
instruction as it ran (after expansion, with the build args it saw) and, for COPY and
ADD, a hash of the files it copied (names, modes, owners, link targets, contents).
The value is the state the step left: the full image config and the layer chain.
Entries live under ``<engine root>/build-cache/<key hex>.json``, written atomically;
an entry whose layers are gone (pruned with the images that used them) is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic_file import read_json, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class CachedStep:
    """The state a step left: a full image config and its layers, lowest first."""

    config: dict[str, Any]
    chain_ids: list[str]


def step_key(parent_id: str, instruction: str, content_hash: str = "") -> str:
    """The cache key of one step (hex)."""
    text = json.dumps([parent_id, instruction, content_hash], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class BuildCache:
    """Step results on disk; thread-safe (each entry is one atomically written file)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> CachedStep | None:
        try:
            data = read_json(self._path(key))
        except (OSError, ValueError):   # torn by a crash: a miss, rewritten by the next build
            data = None
        if not isinstance(data, dict):
            return None
        config, chains = data.get("config"), data.get("chain_ids")
        if not isinstance(config, dict) or not isinstance(chains, list):
            log.warning("ignoring a malformed build cache entry %s", key)
            return None
        return CachedStep(config, [str(c) for c in chains])

    def put(self, key: str, step: CachedStep) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._path(key), {"config": step.config, "chain_ids": step.chain_ids},
                          durable=False)

    def chain_ids_in_use(self) -> set[str]:
        """Every layer some entry refers to."""
        used: set[str] = set()
        for key in self.keys():
            entry = self.get(key)
            if entry is not None:
                used.update(entry.chain_ids)
        return used

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.stem for p in self.root.glob("*.json")]

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
