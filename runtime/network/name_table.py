"""Which names each container's network namespace can resolve: the embedded DNS server's view.

A container on user networks sees, per network it is on, every running endpoint of
that network under its container name, its short id and its network aliases (compose
service names arrive as aliases). Names on the default bridge are not resolvable, as
in Docker. The table is keyed by the namespace owner: the container whose network
namespace it is (a `--network container:X` joiner queries with X's id).

    table.lookup(netns_id, "db")  -> ["10.213.1.3", ...]   # [] when the name is unknown
    table.resolve / table.reverse  # the same as dns_server's Lookup and Reverse callables
    table.subscribe(callback)      # callback(NameEvent) after every attach and detach

The DNS server follows the table's events (embedded_dns.py): attached at a namespace's
first endpoint, detached when it has none left.

Lookups are case-insensitive, like DNS. Thread-safe; callbacks run in the thread that
changed the table and must not block.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NameEntry:
    """One endpoint: a container on a network, with the names it answers to there."""

    network_id: str
    network_name: str
    container_id: str
    ip: str
    names: tuple[str, ...]
    internal: bool = False
    gateway: str = ""           # the network's gateway as the container reaches it ("" if internal)


@dataclass(frozen=True)
class NameEvent:
    """`kind` is "attach" or "detach"; `netns_path` is where the namespace is pinned."""

    kind: str
    entry: NameEntry
    netns_path: str = ""


@dataclass
class NameTable:
    """Endpoints of running containers on user networks, and who sees whom."""

    _entries: dict[tuple[str, str], NameEntry] = field(default_factory=dict)  # (network, container)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listeners: list[Callable[[NameEvent], None]] = field(default_factory=list)

    def subscribe(self, callback: Callable[[NameEvent], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def _notify(self, event: NameEvent) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(event)
            except Exception:   # noqa: BLE001 - a listener's bug must not break networking
                log.exception("name table listener failed")

    def attach(self, entry: NameEntry, netns_path: str = "") -> None:
        with self._lock:
            self._entries[(entry.network_id, entry.container_id)] = entry
        self._notify(NameEvent("attach", entry, netns_path))

    def detach(self, network_id: str, container_id: str, netns_path: str = "") -> None:
        with self._lock:
            entry = self._entries.pop((network_id, container_id), None)
        if entry is not None:
            self._notify(NameEvent("detach", entry, netns_path))

    def networks_of(self, netns_id: str) -> list[NameEntry]:
        """The endpoints of one namespace owner (one per network it is on)."""
        with self._lock:
            return [e for (_, cid), e in self._entries.items() if cid == netns_id]

    def entries_on(self, network_id: str) -> list[NameEntry]:
        with self._lock:
            return [e for (nid, _), e in self._entries.items() if nid == network_id]

    def lookup(self, netns_id: str, name: str) -> list[str]:
        """Addresses `name` has on the networks `netns_id` is on (sorted; [] if none)."""
        wanted = name.rstrip(".").lower()
        with self._lock:
            mine = {nid for (nid, cid) in self._entries if cid == netns_id}
            found = {e.ip for (nid, _), e in self._entries.items()
                     if nid in mine and wanted in (n.lower() for n in e.names)}
        return sorted(found)

    def resolve(self, netns_id: str, name: str) -> list[ipaddress.IPv4Address] | None:
        """dns_server's `Lookup`: the addresses, or None when the name is not an endpoint's
        on the namespace's networks (the server then forwards it upstream)."""
        found = self.lookup(netns_id, name)
        return [ipaddress.IPv4Address(ip) for ip in found] if found else None

    def reverse(self, netns_id: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """dns_server's `Reverse`: the container name behind an address on the namespace's
        networks, qualified with the network's name as Docker answers PTR queries."""
        with self._lock:
            mine = {nid for (nid, cid) in self._entries if cid == netns_id}
            for (nid, _), e in self._entries.items():
                if nid in mine and e.ip == str(address) and e.names:
                    return f"{e.names[0]}.{e.network_name}"
        return None

    def is_internal_only(self, netns_id: str) -> bool:
        """True when every network of the namespace is --internal (no forwarding upstream)."""
        entries = self.networks_of(netns_id)
        return bool(entries) and all(e.internal for e in entries)
