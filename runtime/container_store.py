"""Container records on disk: <root>/containers/<id>/config.json and state.json.

config.json changes rarely (create, rename, network), state.json at every state
transition; both are written atomically, so a crash leaves the old or the new record.
The names index lives here too, because a name must be unique across all records.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from .atomic_file import read_json, write_json_atomic
from .errors import Conflict, NotFound
from .models import Container, ContainerState, NetworkAttachment, PortMapping

log = logging.getLogger(__name__)


def _state_from_json(obj: dict[str, Any]) -> ContainerState:
    names = {f.name for f in dataclasses.fields(ContainerState)}
    return ContainerState(**{k: v for k, v in obj.items() if k in names})


def _network_from_json(obj: dict[str, Any] | None) -> NetworkAttachment | None:
    if not obj:
        return None
    obj = dict(obj)
    obj["ports"] = [PortMapping(**p) for p in obj.get("ports") or []]
    names = {f.name for f in dataclasses.fields(NetworkAttachment)}
    return NetworkAttachment(**{k: v for k, v in obj.items() if k in names})


class ContainerStore:
    """Reads and writes container records and keeps the name → id index."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.names_lock = threading.Lock()
        self._names: dict[str, str] = {}

    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    # persistence -----------------------------------------------------------
    def save_config(self, c: Container) -> None:
        """Everything but the state (and the per-run network attachment)."""
        record = dataclasses.asdict(c)
        record.pop("state")
        record.pop("network")
        write_json_atomic(self.dir(c.id) / "config.json", record)

    def save_state(self, c: Container, extra: dict[str, Any] | None = None) -> None:
        """State, restart count and network attachment: the fields that change per run."""
        record = {"state": dataclasses.asdict(c.state), "restart_count": c.restart_count,
                  "network": dataclasses.asdict(c.network) if c.network else None}
        record.update(extra or {})
        write_json_atomic(self.dir(c.id) / "state.json", record)

    def load_all(self) -> list[tuple[Container, dict[str, Any]]]:
        """Every record that can be read, with the extra state fields; indexes names."""
        result = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".removing-"):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                cfg = read_json(entry / "config.json")
                state = read_json(entry / "state.json", {}) or {}
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable container record %s: %s", entry.name, err)
                continue
            if not isinstance(cfg, dict) or not isinstance(state, dict):
                continue
            try:
                names = {f.name for f in dataclasses.fields(Container)}
                c = Container(**{k: v for k, v in cfg.items() if k in names and k not in ("state", "network")})
                c.state = _state_from_json(state.get("state") or {})
                c.restart_count = int(state.get("restart_count") or 0)
                c.network = _network_from_json(state.get("network"))
            except (TypeError, ValueError) as err:
                log.warning("skipping unreadable container record %s: %s", entry.name, err)
                continue
            extra = {k: v for k, v in state.items() if k not in ("state", "restart_count", "network")}
            result.append((c, extra))
            with self.names_lock:
                self._names[c.name] = c.id
        return result

    def delete(self, container_id: str) -> None:
        """Remove the record directory (rename first: a crash never leaves half a record).

        The rename is the removal; the tree (the container's writable layer,
        logs) is deleted by a background thread, because `docker run --rm`
        waits for the removal and a large upper layer can take a while. A
        tree left by a crash is swept by `load_all` at the next start.
        """
        d = self.dir(container_id)
        doomed = self.root / f".removing-{container_id}"
        try:
            os.rename(d, doomed)
        except FileNotFoundError:
            return
        threading.Thread(target=shutil.rmtree, args=(doomed,), kwargs={"ignore_errors": True},
                         name=f"rm-{container_id[:12]}", daemon=True).start()

    # names -----------------------------------------------------------------
    def reserve_name(self, name: str, container_id: str) -> None:
        """Claim `name` for `container_id`; Conflict with Docker's message if it is taken."""
        with self.names_lock:
            owner = self._names.get(name)
            if owner is not None and owner != container_id:
                raise Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                               f'"{owner}". You have to remove (or rename) that container to be able '
                               f"to reuse that name.")
            self._names[name] = container_id

    def release_name(self, name: str, container_id: str) -> None:
        with self.names_lock:
            if self._names.get(name) == container_id:
                del self._names[name]

    def name_taken(self, name: str) -> bool:
        with self.names_lock:
            return name in self._names

    def lookup_name(self, name: str) -> str:
        with self.names_lock:
            cid = self._names.get(name.lstrip("/"))
        if cid is None:
            raise NotFound(f"No such container: {name}")
        return cid
