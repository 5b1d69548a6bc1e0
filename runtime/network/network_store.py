"""Network records (built-in and user-defined), persisted under the engine root.

Every network has a 64-hex id, as in Docker, including the built-in `bridge`,
`host` and `none` (their ids are made once and kept). A network is found by its
full name, its full id or a unique id prefix, in that order, as dockerd does.
Each user network is one JSON file `<dir>/<id>.json`, written atomically.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_file import read_json, write_json_atomic
from ..errors import Conflict, InvalidArgument, NotFound

log = logging.getLogger(__name__)

BUILTIN_DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass
class NetworkRecord:
    """One network as `docker network inspect` describes it (IPv4, bridge driver or built-in)."""

    id: str
    name: str
    driver: str
    created: str
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    bridge: str = ""                # the Linux bridge (user networks)
    mtu: int = 0
    icc: bool = True
    masquerade: bool = True
    user_subnet: bool = False       # the subnet came from the request (so --ip is allowed)
    ipam_options: dict[str, str] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_DRIVERS and self.driver in ("bridge", "host", "null") and not self.bridge


def validate_name(name: str) -> str:
    if not name or not _NAME_RE.match(name):
        raise InvalidArgument(f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
    return name


class NetworkStore:
    """The set of networks; thread-safe; every change is on disk before it returns."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._by_id: dict[str, NetworkRecord] = {}
        self._load()

    def _load(self) -> None:
        builtin = read_json(self.dir / "builtin.json", default=None) or {}
        if set(builtin) != set(BUILTIN_DRIVERS):
            builtin = {name: secrets.token_hex(32) for name in BUILTIN_DRIVERS}
            write_json_atomic(self.dir / "builtin.json", obj=builtin)
        for name, nid in builtin.items():
            self._by_id[nid] = NetworkRecord(id=nid, name=name, driver=BUILTIN_DRIVERS[name],
                                             created="0001-01-01T00:00:00Z")
        for entry in os.scandir(self.dir):
            if not entry.name.endswith(".json") or entry.name == "builtin.json":
                continue
            data = read_json(Path(entry.path), default=None)
            try:
                record = NetworkRecord(**data)
            except TypeError:
                log.warning("ignoring unreadable network record %s", entry.path)
                continue
            self._by_id[record.id] = record

    def all(self) -> list[NetworkRecord]:
        with self._lock:
            return list(self._by_id.values())

    def user_networks(self) -> list[NetworkRecord]:
        return [n for n in self.all() if not n.builtin]

    def builtin_id(self, name: str) -> str:
        with self._lock:
            for n in self._by_id.values():
                if n.builtin and n.name == name:
                    return n.id
        raise NotFound(f"network {name} not found")

    def find(self, ref: str) -> NetworkRecord:
        """By name, full id, then unique id prefix; NotFound with dockerd's words."""
        with self._lock:
            for n in self._by_id.values():
                if n.name == ref:
                    return n
            if ref in self._by_id:
                return self._by_id[ref]
            matches = [n for n in self._by_id.values() if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def add(self, record: NetworkRecord) -> None:
        with self._lock:
            if any(n.name == record.name for n in self._by_id.values()):
                raise Conflict(f"network with name {record.name} already exists")
            write_json_atomic(self.dir / f"{record.id}.json", obj=asdict(record))
            self._by_id[record.id] = record

    def remove(self, network_id: str) -> None:
        with self._lock:
            self._by_id.pop(network_id, None)
            try:
                os.unlink(self.dir / f"{network_id}.json")
            except FileNotFoundError:
                pass

    @staticmethod
    def record_json(record: NetworkRecord) -> dict[str, Any]:
        return asdict(record)
