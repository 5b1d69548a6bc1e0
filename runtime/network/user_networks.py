"""User-defined bridge networks: their bridges, addresses, iptables chains and endpoints.

Each network has its own Linux bridge (`br-<id12>`, or the name given with
`com.docker.network.bridge.name`), a subnet from Docker's default pools unless one is
given, an address pool under `<state>/networks/<id>/`, and iptables chains
`DOCKYARD-<id12>` (nat and filter) that give Docker's isolation between networks
(user_bridges.py makes the bridge and the chains real).

Containers' wishes (which networks, aliases, a fixed address) are kept per container
in `<state>/endpoints.json`, so they survive restarts of the container and the engine;
the live side (a veth per network in the container's namespace: eth0, eth1, …) exists
only while the container runs. connect()/disconnect() on a running container add or
remove that veth at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_file import read_json_not_durable, write_json_atomic
from ..errors import Conflict, DockyardError, InvalidArgument, NotFound
from ..linux import netns
from ..linux.netlink import NetlinkError, NetlinkSocket
from ..timestamps import now_rfc3339
from . import subnet_pools, user_bridges
from .ip_pool import IPPool
from .name_table import NameEntry, NameTable
from .network_store import NetworkRecord, NetworkStore, validate_name

log = logging.getLogger(__name__)

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
SUPPORTED_OPTIONS = (OPT_BRIDGE_NAME, OPT_MTU, OPT_ICC, OPT_MASQUERADE)
# Docker's bridge driver knows these too; Dockyard cannot honour them, so they are refused.
SUPPORTED_ENDPOINT_KEYS = ("Aliases", "IPAMConfig", "Links", "MacAddress", "DriverOpts", "NetworkID",
                           "EndpointID", "Gateway", "IPAddress", "IPPrefixLen", "IPv6Gateway",
                           "GlobalIPv6Address", "GlobalIPv6PrefixLen", "DNSNames")


def _bool_option(key: str, value: str) -> bool:
    if value.lower() in ("true", "1", "t"):
        return True
    if value.lower() in ("false", "0", "f"):
        return False
    raise InvalidArgument(f'failed to parse {key} value "{value}": invalid syntax')


@dataclass
class EndpointWish:
    """What a container asked for on one network (NetworkingConfig.EndpointsConfig entry)."""

    aliases: list[str] = field(default_factory=list)
    ipv4: str = ""
    mac: str = ""
    links: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] | None = None
    ipam: dict[str, str] | None = None      # IPAMConfig as sent (null and {} differ in inspect)

    @staticmethod
    def from_json(config: Any) -> EndpointWish:
        config = config if isinstance(config, dict) else {}
        ipam = config.get("IPAMConfig") or {}
        if not isinstance(ipam, dict):
            raise InvalidArgument("invalid IPAMConfig: an object is expected")
        if ipam.get("IPv6Address"):
            raise InvalidArgument("IPv6 addresses (--ip6) are not supported by Dockyard")
        if ipam.get("LinkLocalIPs"):
            raise InvalidArgument("link-local addresses (--link-local-ip) are not supported by Dockyard")
        ipv4 = ipam.get("IPv4Address") or ""
        if ipv4:
            try:
                ipaddress.IPv4Address(ipv4)
            except ValueError:
                raise InvalidArgument(f"invalid IPv4 address: {ipv4}") from None
        opts = config.get("DriverOpts") or {}
        if opts:
            raise InvalidArgument(f"endpoint driver options are not supported by Dockyard: "
                                  f"{', '.join(sorted(opts))}")
        raw_ipam = config.get("IPAMConfig")
        return EndpointWish(aliases=[str(a) for a in (config.get("Aliases") or [])], ipv4=ipv4,
                            ipam=None if raw_ipam is None else {str(k): str(v) for k, v in raw_ipam.items() if v},
                            mac=str(config.get("MacAddress") or ""),
                            links=[str(x) for x in (config.get("Links") or [])],
                            driver_opts=None if config.get("DriverOpts") is None else {})


@dataclass
class LiveEndpoint:
    """A container's veth on one network while it runs."""

    endpoint_id: str
    ifname: str
    host_veth: str
    ip: str
    mac: str
    prefix_len: int
    gateway: str


class UserNetworks:
    """The network records plus everything that makes user networks real on this machine."""

    def __init__(self, state_dir: Path, default_bridge: str, default_subnet: str, mtu: Callable[[], int]) -> None:
        self.state_dir = Path(state_dir)
        self.store = NetworkStore(self.state_dir / "networks")
        self.names = NameTable()
        self.default_bridge = default_bridge
        self.default_subnet = ipaddress.IPv4Network(default_subnet)
        self._mtu = mtu
        self._lock = threading.RLock()
        self._pools: dict[str, IPPool] = {}
        self._wishes_path = self.state_dir / "endpoints.json"
        self._wishes: dict[str, dict[str, Any]] = read_json_not_durable(self._wishes_path, default=None) or {}
        self._live: dict[tuple[str, str], LiveEndpoint] = {}    # (network id, container id)
        self._plugging: dict[tuple[str, str], str] = {}         # the same, being plugged -> ifname
        self._netns: dict[str, str] = {}                        # container id -> pinned path

    # records ------------------------------------------------------------------------
    def find(self, ref: str) -> NetworkRecord:
        return self.store.find(ref)

    def is_user_network(self, mode: str) -> bool:
        return mode not in ("bridge", "host", "none", "default") and not mode.startswith("container:")

    def _pool(self, record: NetworkRecord) -> IPPool:
        pool = self._pools.get(record.id)
        if pool is None:
            (self.state_dir / "networks" / record.id).mkdir(parents=True, exist_ok=True)
            pool = IPPool(self.state_dir / "networks" / record.id / "ipam.json", record.subnet,
                          gateway=record.gateway, ip_range=record.ip_range)
            self._pools[record.id] = pool
        return pool

    def _taken_subnets(self) -> dict[str, ipaddress.IPv4Network]:
        taken = {"bridge": self.default_subnet}
        for n in self.store.user_networks():
            taken[n.name] = ipaddress.IPv4Network(n.subnet)
        return taken

    def create(self, name: str, driver: str = "bridge", *, subnet: str = "", gateway: str = "",
               ip_range: str = "", internal: bool = False, attachable: bool = False,
               labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
               ipam_options: dict[str, str] | None = None, enable_ipv6: bool = False) -> NetworkRecord:
        validate_name(name)
        if driver not in ("bridge", ""):
            if driver in ("host", "null"):
                raise InvalidArgument(f'only one instance of "{driver}" network is allowed')
            raise NotFound(f"plugin \"{driver}\" not found")
        if enable_ipv6:
            raise InvalidArgument("IPv6 networks (--ipv6) are not supported by Dockyard")
        options = dict(options or {})
        unknown = sorted(set(options) - set(SUPPORTED_OPTIONS))
        if unknown:
            raise InvalidArgument(f"network driver options not supported by Dockyard: {', '.join(unknown)}")
        if ipam_options:
            raise InvalidArgument(f"IPAM driver options are not supported by Dockyard: "
                                  f"{', '.join(sorted(ipam_options))}")
        with self._lock:
            try:
                existing = self.store.find(name)
            except NotFound:
                existing = None
            if existing is not None and existing.name == name:
                raise Conflict(f"network with name {name} already exists")
            nid = os.urandom(32).hex()
            taken = self._taken_subnets()
            if subnet:
                net, gw, rng = subnet_pools.check_requested(subnet, gateway, ip_range, taken)
            else:
                if gateway or ip_range:
                    raise InvalidArgument("a gateway or an ip range needs a subnet (--subnet)")
                net = subnet_pools.choose_subnet(taken.values())
                gw, rng = str(net.network_address + 1), ""
            bridge = options.get(OPT_BRIDGE_NAME) or f"br-{nid[:12]}"
            if len(bridge) > 15 or "/" in bridge or not bridge.isprintable() or " " in bridge:
                raise InvalidArgument(f"invalid bridge name {bridge!r}")
            if any(n.bridge == bridge for n in self.store.user_networks()) or bridge == self.default_bridge:
                raise Conflict(f"bridge name {bridge} is already in use")
            mtu = 0
            if OPT_MTU in options:
                try:
                    mtu = int(options[OPT_MTU])
                except ValueError:
                    raise InvalidArgument(f'invalid MTU "{options[OPT_MTU]}"') from None
                if not 68 <= mtu <= 65535:
                    raise InvalidArgument(f"invalid MTU number: {mtu}")
            record = NetworkRecord(
                id=nid, name=name, driver="bridge", created=now_rfc3339(), subnet=str(net),
                gateway=gw, ip_range=rng, internal=internal, attachable=attachable,
                labels=dict(labels or {}), options=options, bridge=bridge, mtu=mtu,
                icc=_bool_option(OPT_ICC, options[OPT_ICC]) if OPT_ICC in options else True,
                masquerade=(_bool_option(OPT_MASQUERADE, options[OPT_MASQUERADE])
                            if OPT_MASQUERADE in options else True),
                user_subnet=bool(subnet))
            if not record.icc:
                user_bridges.bridge_traffic_through_iptables(OPT_ICC)
            try:
                user_bridges.realise(record, self.default_bridge)
                self.store.add(record)
            except BaseException:
                user_bridges.unrealise(record)
                raise
            return record

    def setup(self) -> None:
        """At engine start: every user network's bridge and chains; stale endpoints dropped."""
        for record in self.store.user_networks():
            try:
                user_bridges.realise(record, self.default_bridge)
            except DockyardError as err:
                log.error("cannot set up network %s: %s", record.name, err)
            # Nothing runs after an engine start: containers are restarted afresh.
            self._pool(record).retain_only([])

    def active_endpoints(self, network_id: str) -> list[str]:
        with self._lock:
            return [cid for (nid, cid) in self._live if nid == network_id]

    def remove(self, ref: str) -> NetworkRecord:
        record = self.store.find(ref)
        if record.builtin:
            raise InvalidArgument(f"{record.name} is a pre-defined network and cannot be removed")
        with self._lock:
            if self.active_endpoints(record.id):
                raise Conflict(f"error while removing network: network {record.name} id {record.id} "
                               f"has active endpoints")
            user_bridges.unrealise(record)
            self.store.remove(record.id)
            self._pools.pop(record.id, None)
            shutil.rmtree(self.state_dir / "networks" / record.id, ignore_errors=True)
        return record

    # container wishes -------------------------------------------------------------------
    def _save_wishes(self) -> None:
        write_json_atomic(self._wishes_path, obj=self._wishes, durable=False)

    def register(self, container_id: str, container_name: str, mode: str,
                 endpoints_config: dict[str, Any] | None) -> str:
        """At container create: check the networks asked for and keep the wishes.

        Returns the NetworkMode to store (a user network by its name)."""
        endpoints_config = endpoints_config or {}
        networks: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        primary = None
        if self.is_user_network(mode):
            primary = self.store.find(mode)
        for ref, config in endpoints_config.items():
            wish = EndpointWish.from_json(config)
            if ref == mode or (primary is not None and ref in (primary.id, primary.name)):
                record = primary
            elif ref in ("bridge", "default", "host", "none"):
                record = None
            else:
                record = self.store.find(ref)
            if record is None or record.builtin:
                if wish.ipv4:
                    raise InvalidArgument("user specified IP address is supported on user defined "
                                          "networks only")
                if wish.aliases:
                    raise InvalidArgument("network-scoped alias is supported only for containers "
                                          "in user defined networks")
                continue
            self._check_wish(record, wish)
            # Aliases are checked when the endpoint goes live (plug), not here: Compose v2
            # recreates a service by creating the new container, aliased with the old one's
            # name, while the old one still runs, and renames it once the old one is gone.
            networks[record.id] = wish.__dict__
            order.append(record.id)
        if primary is not None and primary.id not in networks:
            networks[primary.id] = EndpointWish().__dict__
            order.insert(0, primary.id)
        elif primary is not None:
            order.remove(primary.id)
            order.insert(0, primary.id)
        if networks:
            # Only containers on user networks are written down: a container on the default
            # bridge costs no write at create and none at removal.
            with self._lock:
                self._wishes[container_id] = {"name": container_name, "networks": networks, "order": order}
                self._save_wishes()
        return primary.name if primary is not None else mode

    def _check_wish(self, record: NetworkRecord, wish: EndpointWish) -> None:
        if wish.ipv4:
            if not record.user_subnet:
                raise InvalidArgument("user specified IP address is supported only when connecting "
                                      "to networks with user configured subnets")
            if ipaddress.IPv4Address(wish.ipv4) not in ipaddress.IPv4Network(record.subnet):
                raise InvalidArgument(f"Invalid address {wish.ipv4}: It does not belong to any of this "
                                      f"network's subnets")

    def forget(self, container_id: str) -> None:
        """The container is removed. Best effort: a removal must not fail on a full disk,
        and a leftover entry only names networks for an id that never comes back."""
        with self._lock:
            if self._wishes.pop(container_id, None) is not None:
                try:
                    self._save_wishes()
                except OSError as err:
                    log.warning("cannot record the removal of %s from its networks: %s", container_id[:12], err)

    def rename(self, container_id: str, new_name: str) -> None:
        with self._lock:
            if container_id in self._wishes:
                self._wishes[container_id]["name"] = new_name
                self._save_wishes()

    def wished_networks(self, container_id: str) -> list[tuple[NetworkRecord, EndpointWish]]:
        """The user networks a container is connected to, primary first (vanished ones skipped)."""
        with self._lock:
            entry = self._wishes.get(container_id) or {}
            result = []
            for nid in entry.get("order") or []:
                try:
                    record = self.store.find(nid)
                except NotFound:
                    continue
                result.append((record, EndpointWish(**entry["networks"][nid])))
            return result

    def container_name(self, container_id: str) -> str:
        with self._lock:
            return str((self._wishes.get(container_id) or {}).get("name") or "")

    def live_endpoint(self, network_id: str, container_id: str) -> LiveEndpoint | None:
        with self._lock:
            return self._live.get((network_id, container_id))

    def containers_on(self, network_id: str) -> list[tuple[str, LiveEndpoint]]:
        with self._lock:
            return [(cid, ep) for (nid, cid), ep in self._live.items() if nid == network_id]

    # live endpoints ---------------------------------------------------------------------
    def plug(self, container_id: str, netns_path: str, record: NetworkRecord, wish: EndpointWish,
             *, mac: str = "", default_route: bool = False, fresh_namespace: bool = False) -> LiveEndpoint:
        """Add a veth on the network's bridge into the container's namespace, with an address.

        `fresh_namespace`: the namespace was just made with only lo (no default-bridge eth0
        to step around). The lock covers the bookkeeping only, not the netlink work, so
        containers starting together on one network do not wait for each other's veths.
        """
        has_default_bridge = not fresh_namespace and self._has_default_bridge(netns_path)
        with self._lock:
            if (record.id, container_id) in self._live or (record.id, container_id) in self._plugging:
                raise Conflict(f"endpoint with name {self.container_name(container_id)} already "
                               f"exists in network {record.name}")
            self._check_aliases(record, container_id, wish.aliases)
            pool = self._pool(record)
            ip = pool.allocate(container_id, wish.ipv4)
            used = {ep.ifname for (nid, cid), ep in self._live.items() if cid == container_id}
            used |= {ifname for (nid, cid), ifname in self._plugging.items() if cid == container_id}
            used |= {"eth0"} if has_default_bridge else set()
            ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in used)
            self._plugging[(record.id, container_id)] = ifname
        mac = mac or wish.mac or user_bridges.mac_for_ip(ip)
        host_veth = "dy" + hashlib.sha256(f"{record.id}/{container_id}".encode()).hexdigest()[:10]
        mtu = record.mtu or self._mtu()
        try:
            with NetlinkSocket() as nl:
                nl.delete_link(name=host_veth)   # left by a crash in the middle of a plug
                bridge = nl.link(record.bridge)
                if bridge is None:
                    raise NotFound(f"network {record.name} has no bridge {record.bridge}")
                fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    nl.create_veth(host_veth, ifname, peer_netns_fd=fd, master=bridge.index,
                                   up=True, mtu=mtu)
                finally:
                    os.close(fd)
            route = record.gateway if default_route and not record.internal else ""
            netns.run_in_netns(netns_path, lambda: _configure_inside(ifname, ip, record, mac, route))
        except BaseException:
            with NetlinkSocket() as nl:
                nl.delete_link(name=host_veth)
            with self._lock:
                del self._plugging[(record.id, container_id)]
                pool.release(container_id)
            raise
        endpoint = LiveEndpoint(endpoint_id=os.urandom(32).hex(), ifname=ifname, host_veth=host_veth,
                                ip=ip, mac=mac, prefix_len=ipaddress.IPv4Network(record.subnet).prefixlen,
                                gateway=record.gateway)
        with self._lock:
            del self._plugging[(record.id, container_id)]
            self._live[(record.id, container_id)] = endpoint
            self._netns[container_id] = netns_path
        name = self.container_name(container_id)
        # Name and short id first (_check_aliases relies on it), then the aliases.
        names = tuple(dict.fromkeys(n for n in (name or container_id[:12], container_id[:12],
                                                *wish.aliases) if n))
        self.names.attach(NameEntry(record.id, record.name, container_id, ip, names, record.internal,
                                    "" if record.internal else record.gateway), netns_path)
        return endpoint

    @staticmethod
    def _has_default_bridge(netns_path: str) -> bool:
        """True when eth0 in the namespace is on the default bridge (a warm-pool namespace)."""
        def probe() -> bool:
            with NetlinkSocket() as nl:
                return nl.link("eth0") is not None
        return netns.run_in_netns(netns_path, probe)

    def _check_aliases(self, record: NetworkRecord, container_id: str, aliases: list[str]) -> None:
        """An alias may be shared (DNS answers all its containers, as compose's replicas of
        one service), but it may not be another container's name or id on the network:
        that name would stop naming that container."""
        if not aliases:
            return
        identities = {}
        for entry in self.names.entries_on(record.id):
            if entry.container_id != container_id:
                for name in entry.names[:2]:    # container name and short id come first
                    identities[name.lower()] = name
        for alias in aliases:
            if alias.lower() in identities:
                raise Conflict(f"alias {alias} is already in use in network {record.name}: it names "
                               f"container {identities[alias.lower()]}")

    def unplug(self, container_id: str, record: NetworkRecord) -> bool:
        """Remove the container's veth from one network (it is running); False if not there."""
        with self._lock:
            endpoint = self._live.pop((record.id, container_id), None)
            if endpoint is None:
                return False
            with NetlinkSocket() as nl:
                nl.delete_link(name=endpoint.host_veth)
            self._pool(record).release(container_id)
            path = self._netns.get(container_id, "")
        self.names.detach(record.id, container_id, path)
        return True

    def unplug_all(self, container_id: str) -> None:
        """The container stopped: its namespace (and so its veths) is gone or going."""
        with self._lock:
            gone = [(nid, ep) for (nid, cid), ep in self._live.items() if cid == container_id]
            for nid, endpoint in gone:
                del self._live[(nid, container_id)]
                try:
                    self._pool(self.store.find(nid)).release(container_id)
                except NotFound:
                    pass
                try:
                    with NetlinkSocket() as nl:
                        nl.delete_link(name=endpoint.host_veth)
                except NetlinkError:
                    pass
            path = self._netns.pop(container_id, "")
        for nid, _ in gone:
            self.names.detach(nid, container_id, path)

    def connect_wish(self, container_id: str, container_name: str, record: NetworkRecord,
                     wish: EndpointWish) -> None:
        """Record that a container is on `record` (docker network connect)."""
        self._check_wish(record, wish)
        self._check_aliases(record, container_id, wish.aliases)
        with self._lock:
            entry = self._wishes.setdefault(container_id, {"name": container_name, "networks": {}, "order": []})
            if record.id in entry["networks"]:
                raise Conflict(f"endpoint with name {entry['name']} already exists in network {record.name}")
            entry["networks"][record.id] = wish.__dict__
            entry["order"].append(record.id)
            self._save_wishes()

    def disconnect_wish(self, container_id: str, record: NetworkRecord) -> bool:
        with self._lock:
            entry = self._wishes.get(container_id)
            if not entry or record.id not in entry["networks"]:
                return False
            del entry["networks"][record.id]
            entry["order"].remove(record.id)
            self._save_wishes()
            return True


def _configure_inside(ifname: str, ip: str, record: NetworkRecord, mac: str, gateway: str) -> None:
    prefix = ipaddress.IPv4Network(record.subnet).prefixlen
    with NetlinkSocket() as nl:
        link = nl.link(ifname)
        if link is None:
            raise NotFound(f"{ifname} did not appear in the container's namespace")
        requests = [nl.set_link_msg(link.index, up=True, mac=mac),
                    nl.add_address_msg(link.index, ip, prefix)]
        if gateway:
            requests.append(nl.default_route_msg(gateway, link.index))
        nl.batch(requests)
