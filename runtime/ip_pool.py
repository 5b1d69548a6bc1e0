"""IPv4 address allocation for one subnet, persisted atomically as JSON.

The gateway (first host) is never handed out; the lowest free address is, so a
released address is the next one reused. The file maps owner (container id) to
address, so an engine restart finds the same allocations.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable

from .atomic_file import read_json
from .errors import InvalidArgument, RuntimeFailure

log = logging.getLogger(__name__)


def _write_json_replace(path: Path, obj: object) -> None:
    """Atomic replace like atomic_file.write_json_atomic, but without fsync.

    The allocations only matter while their namespaces exist, and namespaces do not
    survive a reboot (setup() then releases everything), so durability across power
    loss buys nothing here, while the fsync cost ~1.7 ms of every container start.
    A crash of the engine itself still leaves the old or the new file, never half.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class IPPool:
    """Addresses of `subnet` handed to owners; every change is written before it is returned."""

    def __init__(self, path: Path, subnet: str) -> None:
        try:
            self.network = ipaddress.IPv4Network(subnet)
        except ValueError as err:
            raise InvalidArgument(f"invalid subnet {subnet!r}: {err}") from err
        if self.network.num_addresses < 4:
            raise InvalidArgument(f"subnet {subnet} is too small for a gateway and containers")
        self.path = Path(path)
        self.gateway = self.network.network_address + 1
        self._lock = threading.Lock()
        self._by_owner: dict[str, ipaddress.IPv4Address] = {}
        self._load()

    @property
    def prefix_len(self) -> int:
        return self.network.prefixlen

    def _load(self) -> None:
        data = read_json(self.path, default={}) or {}
        saved_subnet = data.get("subnet")
        if saved_subnet and saved_subnet != str(self.network):
            log.warning("address pool %s was for subnet %s, now %s: dropping old allocations",
                        self.path, saved_subnet, self.network)
            return
        for owner, addr in (data.get("allocations") or {}).items():
            ip = ipaddress.IPv4Address(addr)
            if ip in self.network and ip != self.gateway:
                self._by_owner[owner] = ip

    def _save(self) -> None:
        _write_json_replace(self.path, {
            "subnet": str(self.network),
            "allocations": {owner: str(ip) for owner, ip in sorted(self._by_owner.items())},
        })

    def allocate(self, owner: str) -> str:
        """The owner's address (the same one if it already has one)."""
        with self._lock:
            if owner in self._by_owner:
                return str(self._by_owner[owner])
            used = set(self._by_owner.values())
            for ip in self.network.hosts():
                if ip != self.gateway and ip not in used:
                    self._by_owner[owner] = ip
                    self._save()
                    return str(ip)
        raise RuntimeFailure(f"no free address left in {self.network}")

    def release(self, owner: str) -> bool:
        """Give the owner's address back; False if it had none."""
        with self._lock:
            if self._by_owner.pop(owner, None) is None:
                return False
            self._save()
            return True

    def get(self, owner: str) -> str | None:
        with self._lock:
            ip = self._by_owner.get(owner)
            return str(ip) if ip else None

    def owners(self) -> list[str]:
        with self._lock:
            return list(self._by_owner)

    def retain_only(self, owners: Iterable[str]) -> list[str]:
        """Release every allocation whose owner is not in `owners`; return the released owners."""
        keep = set(owners)
        with self._lock:
            dropped = [owner for owner in self._by_owner if owner not in keep]
            for owner in dropped:
                del self._by_owner[owner]
            if dropped:
                self._save()
            return dropped
