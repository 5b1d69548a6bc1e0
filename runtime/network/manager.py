"""Container networking: the default bridge, per-container namespaces, NAT, published ports.

Speed comes from a small warm pool: a background thread keeps a few namespaces
ready, each with lo up and a veth pair already made (host end up on the bridge,
container end named eth0 but down). attach() then only sends one batch of netlink
messages (MAC + up, address, default route) through a socket that was opened inside
that namespace, and bind-mounts the namespace at <state_dir>/netns/<id>.

Pool namespaces are held only by file descriptors, so if the engine dies they die
with it (and their veths with them); attached ones are pinned by their bind mount
and are reconciled by setup() at the next start.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Conflict, InvalidArgument, NotFound, RuntimeFailure
from ..linux import netns
from ..linux.netlink import NetlinkSocket
from ..models import NetworkAttachment, PortMapping
from . import nat_rules
from .ip_pool import IPPool
from .port_proxy import DEFAULT_UDP_IDLE_TIMEOUT, PortProxy
from .user_networks import EndpointWish, UserNetworks

log = logging.getLogger(__name__)

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# Address leases shared by every engine on a bridge (tmpfs: cleared with the namespaces at reboot).
LEASE_ROOT = Path("/run/dockyard/ipam")


DEFAULT_MTU = 1500
ROUTE_TABLE = Path("/proc/net/route")


def uplink_mtu(route_table: Path = ROUTE_TABLE, sys_class_net: Path = Path("/sys/class/net")) -> int:
    """The MTU of the interface with the IPv4 default route, at most 1500 (1500 if none).

    Docker uses 1500 whatever the uplink; behind a smaller uplink (1400 on this
    cloud host, 1450 on VXLAN overlays) containers then send packets that are
    dropped without a trace and large downloads stall. Matching it avoids that.
    """
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return DEFAULT_MTU
    for line in lines:
        fields = line.split()
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            try:
                mtu = int((sys_class_net / fields[0] / "mtu").read_text())
            except (OSError, ValueError):
                continue
            return max(576, min(mtu, DEFAULT_MTU))
    return DEFAULT_MTU


def mac_for_ip(ip: str) -> str:
    """Docker's scheme: 02:42 followed by the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def validate_mac(mac: str) -> str:
    """A MAC address a container's eth0 can take (unicast, 6 bytes), normalised to
    lower case; InvalidArgument with dockerd's words otherwise."""
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in p)
                                  for p in parts):
        raise InvalidArgument(f"address {mac}: invalid MAC address")
    if int(parts[0], 16) & 1:
        # The kernel refuses a multicast address on an interface (dockerd fails at start).
        raise InvalidArgument(f"address {mac}: invalid MAC address (a multicast address)")
    return mac.lower()


def _lease_alive(pool_path: str, owner: str) -> bool:
    """Another engine's address is in use while the owner's namespace is pinned next to its pool."""
    return netns.is_pinned(Path(pool_path).parent / "netns" / owner)


@dataclass
class _WarmNetns:
    """A ready namespace: fd on it, a netlink socket inside it, its eth0 and our veth end."""

    fd: int
    nl: NetlinkSocket
    eth0_index: int
    host_veth: str

    def close(self) -> None:
        self.nl.close()
        os.close(self.fd)


def _open_inside() -> NetlinkSocket:
    """Runs inside a new namespace: the socket stays bound to it; lo comes up."""
    nl = NetlinkSocket()
    nl.set_link(1, up=True)  # lo is always ifindex 1 in a fresh namespace
    return nl


class NetworkManager:
    """Owns the `dockyard0` bridge, its address pool and the port proxies."""

    def __init__(self, state_dir: Path, bridge: str = "dockyard0",
                 subnet: str = "172.29.0.0/16", *, chain: str = "DOCKYARD",
                 warm_pool_size: int = 3,
                 udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
                 lease_root: Path | None = LEASE_ROOT) -> None:
        if not bridge or len(bridge) > 15:
            raise InvalidArgument(f"invalid bridge name {bridge!r} (1 to 15 characters)")
        self.state_dir = Path(state_dir)
        self.bridge = bridge
        self.chain = chain
        self.netns_dir = self.state_dir / "netns"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lease_dir = Path(lease_root) / bridge if lease_root is not None else None
        self.pool = IPPool(self.state_dir / "ipam.json", subnet, lease_dir=self._lease_dir,
                           lease_alive=_lease_alive)
        self.subnet = str(self.pool.network)
        self.gateway = str(self.pool.gateway)
        self.proxy = PortProxy(udp_idle_timeout=udp_idle_timeout)
        self._warm_target = warm_pool_size
        self._warm: list[_WarmNetns] = []
        self._cond = threading.Condition()
        self._filler: threading.Thread | None = None
        self._stopping = False
        self._host_nl: NetlinkSocket | None = None
        self._bridge_index = 0
        self._lock = threading.Lock()
        self._host_veths: dict[str, str] = {}
        self._attached: set[str] = set()   # by this instance: not stale even without processes yet
        self.mtu = DEFAULT_MTU                 # of the veths; matched to the uplink by setup()
        self.user = UserNetworks(self.state_dir, bridge, self.subnet, lambda: self.mtu)
        self.names = self.user.names           # the embedded DNS server's view (name_table.py)

    # paths -----------------------------------------------------------------------
    def netns_path(self, container_id: str) -> Path:
        if not container_id or "/" in container_id or container_id.startswith("."):
            raise InvalidArgument(f"invalid container id {container_id!r}")
        return self.netns_dir / container_id

    # host setup --------------------------------------------------------------------
    def setup(self) -> None:
        """Idempotent host setup at engine start: bridge, ip_forward, NAT; drop stale leftovers."""
        with self._lock:
            self.netns_dir.mkdir(parents=True, exist_ok=True)
            if self._host_nl is None:
                self._host_nl = NetlinkSocket()
            nl = self._host_nl
            nl.create_bridge(self.bridge)
            link = nl.link(self.bridge)
            if link is None or link.kind != "bridge":
                raise RuntimeFailure(f"{self.bridge} exists but is not a bridge")
            if self._bridge_index and self._bridge_index != link.index:
                # The bridge was deleted and made anew: ready veths point at the old one.
                with self._cond:
                    stale, self._warm = self._warm, []
                    self._cond.notify_all()
                for entry in stale:
                    entry.close()
            self._bridge_index = link.index
            self.mtu = uplink_mtu()
            # A fixed MAC, or the bridge takes the lowest MAC of its ports and changes with them.
            nl.batch([nl.set_link_msg(link.index, mac=mac_for_ip(self.gateway))])
            nl.add_address(link.index, self.gateway, self.pool.prefix_len, exist_ok=True)
            nl.set_link(link.index, up=True)
            try:
                IP_FORWARD.write_text("1\n")
            except OSError as err:
                raise RuntimeFailure(f"cannot enable IP forwarding: {err}") from err
            nat_rules.install(self.chain, self.bridge, self.subnet)
            self._drop_stale()
            self.user.setup()
            self._start_filler()

    def _drop_stale(self) -> None:
        """After a crash: namespaces no process lives in are removed, the pool follows."""
        alive = []
        for entry in os.scandir(self.netns_dir):
            path = Path(entry.path)
            if entry.name in self._attached or (netns.is_pinned(path) and netns.netns_has_processes(path)):
                alive.append(entry.name)
                continue
            log.info("removing stale network namespace %s", path)
            netns.remove_netns(path)
        for owner in self.pool.retain_only(alive):
            log.info("released address of %s (no namespace left)", owner)

    # warm pool ---------------------------------------------------------------------
    def _start_filler(self) -> None:
        if self._filler is None and self._warm_target > 0:
            self._stopping = False
            self._filler = threading.Thread(target=self._fill_loop, name="netns-warm-pool", daemon=True)
            self._filler.start()

    def _fill_loop(self) -> None:
        while self._wait_until_needed():
            try:
                warm = self._make_warm()
            except Exception:
                log.exception("could not prepare a network namespace; retrying on next use")
                with self._cond:
                    self._cond.wait()  # woken by the next take; avoids spinning on a broken host
                continue
            with self._cond:
                if self._stopping:
                    warm.close()
                    return
                self._warm.append(warm)

    def _wait_until_needed(self) -> bool:
        """Block until the warm pool is below its target; False once the manager stops.

        A method of its own because, inline, mypy kept `_stopping` narrowed to False for
        the rest of the loop and called the stop check after `_make_warm` unreachable;
        stop() sets it from another thread while the namespace is being made.
        """
        with self._cond:
            while not self._stopping and len(self._warm) >= self._warm_target:
                self._cond.wait()
            return not self._stopping

    def _make_warm(self) -> _WarmNetns:
        if self._host_nl is None:
            raise RuntimeFailure("NetworkManager.setup() has not been called")
        fd, nl = netns.new_netns(_open_inside)
        assert nl is not None
        host_veth = "dy" + secrets.token_hex(5)
        try:
            self._host_nl.create_veth(host_veth, "eth0", peer_netns_fd=fd,
                                      master=self._bridge_index, up=True, mtu=self.mtu)
            eth0 = nl.link("eth0")
            if eth0 is None:
                raise RuntimeFailure("veth peer eth0 did not appear in the new namespace")
        except BaseException:
            nl.close()
            os.close(fd)
            raise
        return _WarmNetns(fd, nl, eth0.index, host_veth)

    def _take_warm(self) -> _WarmNetns:
        with self._cond:
            warm = self._warm.pop() if self._warm else None
        return warm if warm is not None else self._make_warm()

    def _refill(self) -> None:
        # Called once attach() is done, so refilling does not compete with it for CPU and rtnl.
        with self._cond:
            self._cond.notify_all()

    # containers ----------------------------------------------------------------------
    def attach(self, container_id: str, mode: str, ports: list[PortMapping],
               mac_address: str = "") -> NetworkAttachment:
        """Prepare networking for a container about to start.

        mode "bridge": a new net namespace (bind-mounted at a path) with lo up and a veth on
        the bridge, an address from the pool, default route via the bridge; "none": a new
        namespace with only lo; "host": nothing (netns_path None).
        `mac_address` (bridge only) replaces the address-derived 02:42:… MAC of eth0.
        Published ports are listened on at once (host_port 0 picks a free port) and forwarded
        to the container's address; the returned attachment has the real host ports.
        """
        path = self.netns_path(container_id)
        if mode.startswith("container:"):
            donor = self.netns_path(mode[len("container:"):])
            if not netns.is_pinned(donor):
                raise Conflict(f"cannot join network of a non running container: {mode[10:]}")
            return NetworkAttachment(mode="container", netns_path=str(donor))
        user_network = self.user.is_user_network(mode)
        if ports and mode != "bridge" and not user_network:
            # As dockerd: published ports mean nothing without a bridge; they are dropped.
            log.warning("published ports are discarded when using %s network mode", mode)
        if mode == "host":
            return NetworkAttachment(mode="host")
        if netns.is_pinned(path) or self.proxy.forwards(container_id):
            log.warning("container %s was still attached; detaching first", container_id)
            self.detach(container_id)
        if mode == "none":
            self._new_pinned_namespace(container_id, path)
            return NetworkAttachment(mode="none", netns_path=str(path))
        if user_network:
            self.user.find(mode)   # NotFound("network X not found") as dockerd says it
            return self._attach_user(container_id, path, ports, mac_address)
        attachment = self._attach_bridge(container_id, path, ports, mac_address)
        try:
            for record, wish in self.user.wished_networks(container_id):
                self.user.plug(container_id, str(path), record, wish)
        except BaseException:
            self.detach(container_id)
            raise
        return attachment

    def _new_pinned_namespace(self, container_id: str, path: Path) -> None:
        """A new network namespace with lo up, pinned at `path` and counted as attached."""
        fd, nl = netns.new_netns(_open_inside)
        try:
            netns.pin_netns(fd, path)
        finally:
            assert nl is not None
            nl.close()
            os.close(fd)
        self._attached.add(container_id)

    def _attach_user(self, container_id: str, path: Path, ports: list[PortMapping],
                     mac_address: str) -> NetworkAttachment:
        """A fresh namespace with one veth per user network: eth0 on the primary, which has
        the default route (none if it is internal), eth1… on the others."""
        wished = self.user.wished_networks(container_id)
        if not wished:
            raise NotFound(f"network of container {container_id[:12]} not found")
        self._new_pinned_namespace(container_id, path)
        try:
            primary = None
            for i, (record, wish) in enumerate(wished):
                endpoint = self.user.plug(container_id, str(path), record, wish,
                                          mac=mac_address if i == 0 else "", default_route=i == 0,
                                          fresh_namespace=True)
                primary = primary or (record, endpoint)
            assert primary is not None
            record, endpoint = primary
            attachment = NetworkAttachment(mode="bridge", netns_path=str(path), ip_address=endpoint.ip,
                                           prefix_len=endpoint.prefix_len,
                                           gateway="" if record.internal else endpoint.gateway,
                                           mac_address=endpoint.mac, bridge=record.bridge,
                                           user_network=record.name)
            attachment.ports = self.publish(container_id, endpoint.ip, ports)
        except BaseException:
            self.detach(container_id)
            raise
        return attachment

    # user networks: live connect and disconnect ------------------------------------------
    def connect(self, container_id: str, container_name: str, running: bool, network_ref: str,
                config: Any) -> None:
        """`docker network connect`: remembered for the next starts, plugged now if running."""
        record = self.user.find(network_ref)
        wish = EndpointWish.from_json(config)
        if record.builtin:
            raise InvalidArgument(f"connecting containers to the built-in {record.name} network "
                                  f"is not supported by Dockyard")
        path = self.netns_path(container_id)
        if running and not netns.is_pinned(path):
            raise InvalidArgument("container sharing network namespace with another container or "
                                  "host cannot be connected to any other network")
        self.user.connect_wish(container_id, container_name, record, wish)
        if running:
            try:
                self.user.plug(container_id, str(path), record, wish)
            except BaseException:
                self.user.disconnect_wish(container_id, record)
                raise

    def disconnect(self, container_id: str, network_ref: str) -> None:
        """`docker network disconnect`: unplugged at once, forgotten for later starts."""
        record = self.user.find(network_ref)
        if record.builtin:
            raise InvalidArgument(f"disconnecting containers from the built-in {record.name} network "
                                  f"is not supported by Dockyard")
        wished = self.user.disconnect_wish(container_id, record)
        plugged = self.user.unplug(container_id, record)
        if not (wished or plugged):
            raise InvalidArgument(f"container {container_id} is not connected to network {record.name}")

    def _attach_bridge(self, container_id: str, path: Path, ports: list[PortMapping],
                       mac_address: str = "") -> NetworkAttachment:
        warm = self._take_warm()
        try:
            ip = self.pool.allocate(container_id)
            mac = validate_mac(mac_address) if mac_address else mac_for_ip(ip)
            nl = warm.nl
            nl.batch([
                nl.set_link_msg(warm.eth0_index, up=True, mac=mac),
                nl.add_address_msg(warm.eth0_index, ip, self.pool.prefix_len),
                nl.default_route_msg(self.gateway, warm.eth0_index),
            ])
            netns.pin_netns(warm.fd, path)
        except BaseException:
            self.pool.release(container_id)
            raise
        finally:
            warm.close()
            self._refill()
        self._host_veths[container_id] = warm.host_veth
        self._attached.add(container_id)
        attachment = NetworkAttachment(mode="bridge", netns_path=str(path), ip_address=ip,
                                       prefix_len=self.pool.prefix_len, gateway=self.gateway,
                                       mac_address=mac, bridge=self.bridge)
        try:
            attachment.ports = self.publish(container_id, ip, ports)
        except BaseException:
            self.detach(container_id)
            raise
        return attachment

    def publish(self, container_id: str, container_ip: str, ports: list[PortMapping]) -> list[PortMapping]:
        """Start forwarders for `ports` (also used to restore them after an engine restart)."""
        published = []
        try:
            for mapping in ports:
                fwd = self.proxy.add(container_id, mapping.protocol.lower(), mapping.host_ip,
                                     mapping.host_port, container_ip, mapping.container_port)
                published.append(PortMapping(container_port=mapping.container_port,
                                             protocol=mapping.protocol.lower(),
                                             host_ip=mapping.host_ip or "0.0.0.0",
                                             host_port=fwd.host_port))
        except BaseException:
            self.proxy.remove(container_id)
            raise
        return published

    def detach(self, container_id: str) -> None:
        """Stop the port forwarders, delete the namespace and veth, release the address. Idempotent."""
        path = self.netns_path(container_id)
        self.proxy.remove(container_id)
        self.user.unplug_all(container_id)
        # Unpinning drops the last reference: the kernel destroys the namespace and with it
        # both veth ends. Deleting the veth ourselves would cost ~20 ms of rtnl time per container.
        netns.remove_netns(path)
        self._host_veths.pop(container_id, None)
        self._attached.discard(container_id)
        self.pool.release(container_id)

    def host_veth(self, container_id: str) -> str | None:
        """The bridge-side veth of an attached container (known until the engine restarts)."""
        return self._host_veths.get(container_id)

    def shutdown(self) -> None:
        """Stop every forwarder (engine stopping); leaves the bridge."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._filler is not None:
            self._filler.join()
            self._filler = None
        with self._cond:
            warm, self._warm = self._warm, []
        for entry in warm:
            entry.close()
        self.proxy.close()
        if self._host_nl is not None:
            self._host_nl.close()
            self._host_nl = None

    # inspection (tests, `docker network inspect`) -----------------------------------
    def bridge_ports(self) -> list[str]:
        """Names of the interfaces currently enslaved to our bridge."""
        with NetlinkSocket() as nl:
            bridge = nl.link(self.bridge)
            if bridge is None:
                return []
            return [link.name for link in nl.links() if link.master == bridge.index]

    def teardown_host(self) -> None:
        """Remove the bridge and our iptables chains (uninstall; not part of a normal stop)."""
        self.shutdown()
        nat_rules.uninstall(self.chain)
        with NetlinkSocket() as nl:
            link = nl.link(self.bridge)
            if link is not None:
                nl.delete_link(link.index)
        if self._lease_dir is not None:
            try:
                if {p.name for p in self._lease_dir.iterdir()} <= {".lock"}:
                    (self._lease_dir / ".lock").unlink(missing_ok=True)
                    self._lease_dir.rmdir()
            except OSError:
                pass  # gone already, or another engine just took a lease on this bridge
