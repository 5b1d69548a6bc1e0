"""Keeps the embedded DNS server attached to exactly the namespaces that are on a user network.

The name table says which endpoints exist; this module follows its events: the
first endpoint of a namespace attaches the server there (listening at
127.0.0.11:53 inside it, with the container's `--dns` servers as upstreams), and
the detach that leaves the namespace on no user network detaches the server
again. That happens before the namespace is removed (NetworkManager.detach
unplugs first), so no socket of ours keeps a dead namespace alive.

Keys are namespace owners, as in the name table: a `--network container:X`
joiner is answered through X's attachment.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from .dns_server import HOST_NAME, DnsServer, IPAddress
from .name_table import NameEvent, NameTable
from .resolv_conf import ContainerDns

log = logging.getLogger(__name__)


class EmbeddedDns:
    """The engine's one DNS server, driven by a NameTable; `close()` at engine stop.

    `configure(cid, dns)` is called before the container's networks are plugged
    (start, live connect) so the attachment gets its `--dns` upstreams and ndots
    choice. `host_address` is where `host.docker.internal` points (the user's host
    seen from the VM); natively it is "" and the gateway of the network the
    namespace was first attached on is used, as in the container's /etc/hosts.
    """

    def __init__(self, table: NameTable, host_address: str = "") -> None:
        self._table = table
        self._settings: dict[str, ContainerDns] = {}
        self._gateways: dict[str, IPAddress] = {}
        self._lock = threading.Lock()
        self._host_fixed = bool(host_address)
        self.server = DnsServer(lookup=self._lookup, reverse=table.reverse, host_address=host_address)
        table.subscribe(self._on_event)

    def configure(self, container_id: str, dns: ContainerDns) -> None:
        with self._lock:
            self._settings[container_id] = dns

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._settings.pop(container_id, None)

    def close(self) -> None:
        self.server.close()

    # runs on the DNS server's thread: dictionary reads only
    def _lookup(self, key: str, name: str) -> list[IPAddress] | None:
        found = self._table.resolve(key, name)
        if found is not None:
            return list(found)
        if name == HOST_NAME and not self._host_fixed:
            gateway = self._gateways.get(key)
            return [gateway] if gateway is not None else None
        return None

    # runs in the thread that changed the table
    def _on_event(self, event: NameEvent) -> None:
        cid = event.entry.container_id
        if event.kind == "attach":
            others = [e for e in self._table.networks_of(cid) if e.network_id != event.entry.network_id]
            if others and cid in self.server.attached():
                return
            with self._lock:
                dns = self._settings.get(cid) or ContainerDns()
                if event.entry.gateway:
                    self._gateways[cid] = ipaddress.ip_address(event.entry.gateway)
            self.server.attach(cid, event.netns_path, upstreams=dns.upstreams, ndots_set=dns.ndots_set)
        elif event.kind == "detach" and not self._table.networks_of(cid):
            self.server.detach(cid)
            with self._lock:
                self._gateways.pop(cid, None)
