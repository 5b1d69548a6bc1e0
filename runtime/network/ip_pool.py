"""IPv4 address allocation for one subnet, persisted atomically as JSON.

The gateway (first host) is never handed out. Addresses are handed out in turn,
from just after the last one given, wrapping around at the end of the subnet: a
released address is not reused at once, because the namespace that had it dies
asynchronously and, with Docker's MAC-from-IP scheme, its lingering veth would
still draw the new container's first packets (the proxy then saw connections
reset, ~6% of the time on immediate reuse). The file maps owner (container id)
to address, and keeps the position, so an engine restart finds the same state.

Several engines (state dirs) may share one bridge, e.g. test runs side by side. With
a `lease_dir` (per bridge, on tmpfs like /run, which a reboot clears together with
every namespace) each address is also claimed by creating a file named after it with
O_EXCL, so two pools never hand out the same address. A lease whose pool no longer
lists it (its engine crashed, its directory was deleted) is reclaimed.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..atomic_file import read_json_not_durable, write_json_atomic
from ..errors import Conflict, InvalidArgument, RuntimeFailure

log = logging.getLogger(__name__)


# A lease younger than this is never reclaimed: its pool may not have saved it yet.
_LEASE_GRACE_SECONDS = 5.0


class _Leases:
    """Cross-process address claims: one file per address in a shared directory."""

    def __init__(self, directory: Path, pool_path: Path,
                 alive: Callable[[str, str], bool] | None = None) -> None:
        self.alive = alive
        self.dir = directory
        self.pool_path = str(pool_path.resolve())
        self.dir.mkdir(parents=True, exist_ok=True)

    def _record(self, owner: str) -> bytes:
        return json.dumps({"pool": self.pool_path, "owner": owner}).encode()

    def _create(self, path: Path, owner: str) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._record(owner))
        return True

    def take(self, ip: str, owner: str, mine: dict[str, str]) -> bool:
        """Claim `ip` for `owner`; `mine` is this pool's owner→address map (for stale checks)."""
        path = self.dir / ip
        if self._create(path, owner):
            return True
        if self._read(path) == (self.pool_path, owner):
            return True  # already ours (a restart re-taking its own allocations)
        # Reclaiming is rare and racy, so it is serialised across processes.
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._stale(path, ip, mine):
                return False
            log.info("reclaiming stale address lease %s", path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return self._create(path, owner)

    def drop(self, ip: str, owner: str) -> None:
        path = self.dir / ip
        if self._read(path) == (self.pool_path, owner):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    @staticmethod
    def _read(path: Path) -> tuple[str, str] | None:
        try:
            data = json.loads(path.read_bytes())
            return str(data["pool"]), str(data["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _stale(self, path: Path, ip: str, mine: dict[str, str]) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        record = self._read(path)
        if record is None:
            return age > _LEASE_GRACE_SECONDS
        pool, owner = record
        if pool == self.pool_path:
            return mine.get(owner) != ip
        if age <= _LEASE_GRACE_SECONDS:
            return False
        if self.alive is not None and not self.alive(pool, owner):
            return True
        other = read_json_not_durable(Path(pool), default=None) if os.path.exists(pool) else None
        try:
            return other is None or other.get("allocations", {}).get(owner) != ip
        except AttributeError:
            return True


class IPPool:
    """Addresses of `subnet` handed to owners; every change is written before it is returned."""

    def __init__(self, path: Path, subnet: str, lease_dir: Path | None = None,
                 lease_alive: Callable[[str, str], bool] | None = None,
                 gateway: str = "", ip_range: str = "") -> None:
        """`lease_alive(pool_path, owner)`: False once another pool's owner surely has no use
        for its address any more (e.g. its namespace is gone), so its lease can be reclaimed.
        `gateway` defaults to the first host; `ip_range` (a sub-network of `subnet`) limits
        the addresses handed out without a request, as Docker's --ip-range."""
        try:
            self.network = ipaddress.IPv4Network(subnet)
        except ValueError as err:
            raise InvalidArgument(f"invalid subnet {subnet!r}: {err}") from err
        if self.network.num_addresses < 4:
            raise InvalidArgument(f"subnet {subnet} is too small for a gateway and containers")
        self.path = Path(path)
        self.gateway = ipaddress.IPv4Address(gateway) if gateway else self.network.network_address + 1
        self.range = ipaddress.IPv4Network(ip_range) if ip_range else self.network
        self._lock = threading.Lock()
        self._by_owner: dict[str, ipaddress.IPv4Address] = {}
        self._next = 0   # index among the host addresses where the next search starts
        self._leases = _Leases(Path(lease_dir), self.path, lease_alive) if lease_dir is not None else None
        self._load()

    @property
    def prefix_len(self) -> int:
        return self.network.prefixlen

    def _load(self) -> None:
        data = read_json_not_durable(self.path, default={}) or {}
        saved_subnet = data.get("subnet")
        if saved_subnet and saved_subnet != str(self.network):
            log.warning("address pool %s was for subnet %s, now %s: dropping old allocations",
                        self.path, saved_subnet, self.network)
            return
        self._next = int(data.get("next") or 0) % max(1, self.range.num_addresses - 2)
        for owner, addr in (data.get("allocations") or {}).items():
            ip = ipaddress.IPv4Address(addr)
            if ip in self.network and ip != self.gateway:
                self._by_owner[owner] = ip
        if self._leases is not None:
            for owner, ip in list(self._by_owner.items()):
                if not self._leases.take(str(ip), owner, self._mine()):
                    log.warning("address %s of %s is now leased by another engine", ip, owner)

    def _mine(self) -> dict[str, str]:
        return {owner: str(ip) for owner, ip in self._by_owner.items()}

    def _save(self) -> None:
        # Not durable: the allocations only matter while their namespaces exist, and
        # namespaces do not survive a reboot (setup() then releases everything); the
        # fsync would cost ~1.7 ms of every container start.
        write_json_atomic(self.path, durable=False, obj={
            "subnet": str(self.network),
            "next": self._next,
            "allocations": {owner: str(ip) for owner, ip in sorted(self._by_owner.items())},
        })

    def allocate(self, owner: str, want: str = "") -> str:
        """The owner's address (the same one if it already has one); `want` asks for one
        address of the subnet (Conflict if another owner has it)."""
        with self._lock:
            if owner in self._by_owner:
                return str(self._by_owner[owner])
            used = set(self._by_owner.values())
            if want:
                ip = ipaddress.IPv4Address(want)
                if ip not in self.network or ip in (self.network.network_address,
                                                    self.network.broadcast_address):
                    raise InvalidArgument(f"no available IPv4 address on this network's address "
                                          f"pools: {want} is not in {self.network}")
                if ip == self.gateway or ip in used:
                    raise Conflict("Address already in use")
                self._by_owner[owner] = ip
                try:
                    self._save()
                except BaseException:
                    del self._by_owner[owner]
                    raise
                return want
            first = int(self.range.network_address) + (1 if self.range == self.network else 0)
            count = self.range.num_addresses - (2 if self.range == self.network else 0)
            count = max(count, 1)
            for k in range(count):
                index = (self._next + k) % count
                ip = ipaddress.IPv4Address(first + index)
                if (ip == self.gateway or ip in used or ip == self.network.network_address
                        or ip == self.network.broadcast_address):
                    continue
                if self._leases is not None and not self._leases.take(str(ip), owner, self._mine()):
                    continue  # another engine on the same bridge holds it
                self._by_owner[owner] = ip
                previous_next, self._next = self._next, (index + 1) % count
                try:
                    self._save()
                except BaseException:
                    del self._by_owner[owner]
                    self._next = previous_next
                    if self._leases is not None:
                        self._leases.drop(str(ip), owner)
                    raise
                return str(ip)
        raise RuntimeFailure(f"no available IPv4 address on this network's address pools: "
                             f"{self.range}")

    def release(self, owner: str) -> bool:
        """Give the owner's address back; False if it had none."""
        with self._lock:
            ip = self._by_owner.pop(owner, None)
            if ip is None:
                return False
            self._save()
            if self._leases is not None:
                self._leases.drop(str(ip), owner)
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
            dropped = {owner: ip for owner, ip in self._by_owner.items() if owner not in keep}
            for owner in dropped:
                del self._by_owner[owner]
            if dropped:
                self._save()
            if self._leases is not None:
                for owner, ip in dropped.items():
                    self._leases.drop(str(ip), owner)
            return list(dropped)
