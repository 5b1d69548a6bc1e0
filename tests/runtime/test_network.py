"""Container networking with real namespaces, veths, a bridge, iptables and published ports.

Each test module run uses its own bridge, subnet and iptables chain so it cannot
disturb an engine (or another test run) using the default dockyard0. Traffic only
goes to 127.0.0.0/8, the bridge gateway and the namespaces created here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from runtime.errors import Conflict, InvalidArgument, NotFound
from runtime.linux.netlink import NetlinkSocket
from runtime.models import NetworkAttachment, PortMapping
from runtime.network import nat_rules
from runtime.network.manager import NetworkManager, mac_for_ip
from runtime.network.resolv_conf import container_etc_files, filtered_resolv_conf
from tests.support.waiting import poll

PY = "/usr/bin/python3"
TAG = os.getpid() % 100000
BRIDGE = f"dyt{TAG}"
CHAIN = f"DYT-{TAG}"
SUBNET = f"10.231.{TAG % 250}.0/24"

# A server run inside a namespace: answers b"pong:" + request, prints "ready" once bound.
SERVER = r"""
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
if proto == "tcp":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen()
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.sendall(b"pong:" + c.recv(1000)); c.close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        d, a = s.recvfrom(65535); s.sendto(b"pong:" + d, a)
"""


def in_ns(path: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={path}", *cmd], capture_output=True, text=True, timeout=60)


class NsServer:
    """SERVER running in a namespace; ready when constructed."""

    def __init__(self, netns_path: str, proto: str, port: int) -> None:
        self.proc = subprocess.Popen(["nsenter", f"--net={netns_path}", PY, "-c", SERVER, proto, str(port)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def tcp_echo(att: NetworkAttachment, payload: bytes) -> bytes:
    """What SERVER, started now on port 8080 in the container, answers through its published port."""
    server = NsServer(att.netns_path, "tcp", 8080)
    try:
        with socket.create_connection(("127.0.0.1", att.ports[0].host_port), timeout=10) as client:
            client.sendall(payload)
            return client.recv(100)
    finally:
        server.stop()


def _cid() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def _link_names() -> set[str]:
    with NetlinkSocket() as nl:
        return {link.name for link in nl.links()}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("network")


@pytest.fixture(scope="module")
def manager(state_dir):
    nm = NetworkManager(state_dir, bridge=BRIDGE, subnet=SUBNET, chain=CHAIN)
    nm.setup()
    yield nm
    nm.teardown_host()


@pytest.fixture
def attached(manager):
    """attach(...) that detaches whatever it attached at the end of the test."""
    ids: list[str] = []

    def attach(mode: str = "bridge", ports: list[PortMapping] | None = None, cid: str | None = None):
        cid = cid or _cid()
        ids.append(cid)
        return cid, manager.attach(cid, mode, ports or [])

    yield attach
    for cid in ids:
        manager.detach(cid)


def test_setup_builds_bridge_forwarding_and_nat_and_is_idempotent(manager):
    manager.setup()
    manager.setup()
    with NetlinkSocket() as nl:
        bridge = nl.link(BRIDGE)
        assert bridge is not None and bridge.kind == "bridge"
        assert nl.addresses(bridge.index) == [(manager.gateway, 24)]
        assert bridge.mac == mac_for_ip(manager.gateway)
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    nat = nat_rules.rules("nat")
    assert nat.count(f"-A {CHAIN} -s {SUBNET} ! -o {BRIDGE} -j MASQUERADE") == 1
    assert nat.count(f"-A POSTROUTING -j {CHAIN}") == 1
    filt = nat_rules.rules("filter")
    assert filt.count(f"-A FORWARD -j {CHAIN}") == 1
    assert filt.count(f"-A {CHAIN} -i {BRIDGE} -j ACCEPT") == 1


def test_bridge_container_reaches_gateway_and_host_server(manager, attached):
    cid, att = attached()
    assert att.mode == "bridge" and att.bridge == BRIDGE
    assert att.gateway == manager.gateway and att.prefix_len == 24
    assert att.mac_address == mac_for_ip(att.ip_address)
    assert Path(att.netns_path) == manager.netns_path(cid)
    links = in_ns(att.netns_path, "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"inet {att.ip_address}/24" in links
    assert "default via " + manager.gateway in in_ns(att.netns_path, "ip", "route").stdout
    assert "lo" in in_ns(att.netns_path, "ip", "-br", "link", "show", "up").stdout

    ping = in_ns(att.netns_path, "busybox", "ping", "-c", "1", "-W", "5", manager.gateway)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    with socket.socket() as server:
        server.bind((manager.gateway, 0))
        server.listen()
        server.settimeout(30)
        port = server.getsockname()[1]
        client = in_ns(att.netns_path, PY, "-c",
                       f"import socket; socket.create_connection(('{manager.gateway}', {port})).sendall(b'hi')")
        assert client.returncode == 0, client.stderr
        conn, (peer_ip, _) = server.accept()
        with conn:
            assert conn.recv(10) == b"hi"
        assert peer_ip == att.ip_address


def test_container_mtu_matches_the_uplink(manager, attached):
    """Behind a small uplink (1400 on this host) a 1500 veth black-holes large packets."""
    route = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    uplink = route[route.index("dev") + 1]
    expected = min(1500, int(Path(f"/sys/class/net/{uplink}/mtu").read_text()))
    _cid_, att = attached()
    # Through netlink in the namespace (its /sys/class/net would still be the host's).
    out = in_ns(att.netns_path, "ip", "-o", "link", "show", "eth0").stdout.split()
    assert int(out[out.index("mtu") + 1]) == expected, out
    host_end = manager.host_veth(_cid_)
    assert int(Path(f"/sys/class/net/{host_end}/mtu").read_text()) == expected


def test_two_containers_reach_each_other(attached):
    _a, att_a = attached()
    _b, att_b = attached()
    assert att_a.ip_address != att_b.ip_address
    server = NsServer(att_b.netns_path, "tcp", 9000)
    try:
        out = in_ns(att_a.netns_path, PY, "-c",
                    f"import socket; s = socket.create_connection(('{att_b.ip_address}', 9000), timeout=10); "
                    "s.sendall(b'from-a'); print(s.recv(100).decode())")
        assert out.stdout.strip() == "pong:from-a", out.stderr
    finally:
        server.stop()


def test_published_tcp_port_reaches_server_started_later(attached):
    _cid_, att = attached(ports=[PortMapping(container_port=8080, protocol="tcp", host_ip="127.0.0.1")])
    [published] = att.ports
    assert published.container_port == 8080 and published.host_port != 0
    # Nothing listens in the container yet: the proxy accepts, then hangs up.
    with socket.create_connection(("127.0.0.1", published.host_port), timeout=10) as early:
        try:
            assert early.recv(10) == b""
        except ConnectionResetError:
            pass
    assert tcp_echo(att, b"hello") == b"pong:hello"


def test_published_udp_port_echoes(attached):
    _cid_, att = attached(ports=[PortMapping(container_port=5353, protocol="udp", host_ip="127.0.0.1")])
    [published] = att.ports
    assert published.protocol == "udp"
    server = NsServer(att.netns_path, "udp", 5353)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            # UDP may drop a datagram: resend, as any UDP client does.
            client.settimeout(0.5)
            for _ in range(20):
                client.sendto(b"ping", ("127.0.0.1", published.host_port))
                try:
                    reply = client.recvfrom(100)[0]
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("no answer through the published UDP port after 20 tries")
            assert reply == b"pong:ping"
    finally:
        server.stop()


def test_taken_port_is_a_conflict_and_leaves_nothing_behind(manager, attached):
    _first, att = attached(ports=[PortMapping(container_port=80)])
    taken = att.ports[0].host_port
    assert att.ports[0].host_ip == "0.0.0.0"
    cid = _cid()
    with pytest.raises(Conflict) as err:
        manager.attach(cid, "bridge", [PortMapping(container_port=80, host_port=taken)])
    assert str(err.value) == f"Bind for 0.0.0.0:{taken} failed: port is already allocated"
    assert not manager.netns_path(cid).exists()
    assert manager.pool.get(cid) is None


def test_detach_removes_everything_and_the_address_is_not_reused_at_once(manager):
    cid = _cid()
    att = manager.attach(cid, "bridge", [PortMapping(container_port=80, host_ip="127.0.0.1")])
    veth = manager.host_veth(cid)
    assert veth in manager.bridge_ports()
    port = att.ports[0].host_port
    manager.detach(cid)
    manager.detach(cid)  # idempotent
    assert not Path(att.netns_path).exists()
    assert manager.pool.get(cid) is None
    poll(lambda: veth not in _link_names(), what="the container's veth to disappear")
    with socket.socket() as probe:  # the published port is free again
        probe.bind(("127.0.0.1", port))
    other = _cid()
    try:
        assert manager.attach(other, "bridge", []).ip_address != att.ip_address
    finally:
        manager.detach(other)


def test_back_to_back_containers_are_reachable_through_their_published_port(manager):
    """The namespace of a removed container dies asynchronously: its successor must
    not inherit its address (and MAC), or the proxy's first packets go to the dying one."""
    for _ in range(40):
        cid = _cid()
        att = manager.attach(cid, "bridge", [PortMapping(container_port=8080, host_ip="127.0.0.1")])
        try:
            assert tcp_echo(att, b"hello") == b"pong:hello"
        finally:
            manager.detach(cid)


def test_none_mode_has_only_loopback_and_host_mode_has_no_namespace(attached):
    _cid_, att = attached(mode="none", ports=[PortMapping(container_port=80)])  # ports dropped, as dockerd
    assert att.mode == "none" and att.ip_address == "" and att.ports == []
    links = in_ns(att.netns_path, "ip", "-o", "link").stdout.splitlines()
    assert len(links) == 1 and ": lo:" in links[0] and "UP" in links[0]
    _cid2, host = attached(mode="host", ports=[PortMapping(container_port=80)])
    assert host == NetworkAttachment(mode="host")
    with pytest.raises(NotFound, match="network overlay not found"):   # a user network's name
        attached(mode="overlay")


def test_state_survives_a_new_manager_and_stale_namespaces_are_dropped(manager, tmp_path):
    # The module's manager has nothing attached now, so a second one on the same bridge
    # and subnet (own state dir) cannot collide with it. shutdown() without detach
    # loses the in-memory state, as an engine crash would.
    crashed = NetworkManager(tmp_path, bridge=BRIDGE, subnet=SUBNET, chain=CHAIN, warm_pool_size=0)
    crashed.setup()
    alive, dead = _cid(), _cid()
    att_alive = crashed.attach(alive, "bridge", [])
    att_dead = crashed.attach(dead, "bridge", [])
    sleeper = subprocess.Popen(["nsenter", f"--net={att_alive.netns_path}", "sleep", "600"])
    crashed.shutdown()
    try:
        # Wait until nsenter has entered the namespace (exec'd sleep).
        poll(lambda: os.readlink(f"/proc/{sleeper.pid}/exe").endswith("sleep"), what="sleep to start")
        restarted = NetworkManager(tmp_path, bridge=BRIDGE, subnet=SUBNET, chain=CHAIN, warm_pool_size=0)
        assert restarted.pool.get(alive) == att_alive.ip_address
        assert restarted.pool.get(dead) == att_dead.ip_address
        restarted.setup()  # `dead` has no process left in its namespace
        assert not Path(att_dead.netns_path).exists()
        assert restarted.pool.get(dead) is None
        assert Path(att_alive.netns_path).exists()
        assert restarted.pool.get(alive) == att_alive.ip_address
        ping = in_ns(att_alive.netns_path, "busybox", "ping", "-c", "1", "-W", "5", manager.gateway)
        assert ping.returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    restarted.detach(alive)
    assert not Path(att_alive.netns_path).exists()
    assert restarted.pool.get(alive) is None
    restarted.shutdown()


def test_etc_files_for_bridge_and_host_modes(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch example.org\noptions edns0\n")
    att = NetworkAttachment(mode="bridge", ip_address="172.29.0.5", gateway="172.29.0.1", prefix_len=16)
    files = container_etc_files("abc123def4567890", "web", att, ["db:10.1.2.3", "gw:host-gateway"],
                                host_resolv_conf=resolv)
    assert files["/etc/hostname"] == b"web\n"
    hosts = files["/etc/hosts"].decode()
    assert "127.0.0.1\tlocalhost\n" in hosts
    assert "10.1.2.3\tdb\n" in hosts and "172.29.0.1\tgw\n" in hosts
    assert hosts.endswith("172.29.0.5\tweb\n")
    conf = files["/etc/resolv.conf"].decode()
    assert "127.0.0.53" not in conf and "nameserver 10.0.0.2" in conf and "search example.org" in conf
    assert filtered_resolv_conf("nameserver 127.0.0.1\nnameserver ::1\n") == "nameserver 8.8.8.8\n"
    host_files = container_etc_files("abc123def4567890", "", NetworkAttachment(mode="host"), [],
                                     host_resolv_conf=resolv, host_hosts=tmp_path / "missing")
    assert host_files["/etc/resolv.conf"] == resolv.read_bytes()
    assert host_files["/etc/hostname"] == b"abc123def456\n"
    with pytest.raises(InvalidArgument):
        container_etc_files("x", "h", att, ["bad:not-an-ip"], host_resolv_conf=resolv)


def test_host_docker_internal_names_the_users_host(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.2\n")
    bridge = NetworkAttachment(mode="bridge", ip_address="172.29.0.5", gateway="172.29.0.1", prefix_len=16)
    native = container_etc_files("c1", "web", bridge, [], host_resolv_conf=resolv)["/etc/hosts"].decode()
    assert "172.29.0.1\thost.docker.internal\n" in native
    # Inside the VM the host's loopback is the user-mode gateway; host-gateway follows it.
    in_vm = container_etc_files("c1", "web", bridge, ["h:host-gateway"], host_loopback="10.0.2.2",
                                host_resolv_conf=resolv)["/etc/hosts"].decode()
    assert "10.0.2.2\thost.docker.internal\n" in in_vm and "10.0.2.2\th\n" in in_vm
    none = container_etc_files("c1", "web", NetworkAttachment(mode="none"), [],
                               host_resolv_conf=resolv)["/etc/hosts"].decode()
    assert "host.docker.internal" not in none


def test_concurrent_attaches_get_distinct_addresses(manager):
    ids = [_cid() for _ in range(6)]
    results: dict[str, NetworkAttachment] = {}

    def work(cid: str) -> None:
        results[cid] = manager.attach(cid, "bridge", [])

    threads = [threading.Thread(target=work, args=(cid,)) for cid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len({att.ip_address for att in results.values()}) == len(ids)
        for att in results.values():
            assert in_ns(att.netns_path, "busybox", "ping", "-c", "1", "-W", "5", manager.gateway).returncode == 0
    finally:
        for cid in ids:
            manager.detach(cid)


def test_shutdown_frees_ports_and_setup_again_works(manager, tmp_path):
    # Own state dir on the module's bridge: the module manager has nothing attached now.
    nm = NetworkManager(tmp_path, bridge=BRIDGE, subnet=SUBNET, chain=CHAIN, warm_pool_size=1)
    nm.setup()
    first, second = _cid(), _cid()
    att = nm.attach(first, "bridge", [PortMapping(container_port=80, host_ip="127.0.0.1")])
    nm.shutdown()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", att.ports[0].host_port))
    nm.setup()
    assert Path(att.netns_path).exists()  # attached before the stop: not stale
    att2 = nm.attach(second, "bridge", [PortMapping(container_port=8080, protocol="tcp", host_ip="127.0.0.1")])
    try:
        assert tcp_echo(att2, b"back") == b"pong:back"
    finally:
        nm.detach(first)
        nm.detach(second)
        nm.shutdown()
    assert not any(tmp_path.joinpath("netns").iterdir())


def test_setup_after_the_bridge_was_deleted_rebuilds_it(manager, attached):
    with NetlinkSocket() as nl:
        nl.delete_link(name=BRIDGE)
    manager.setup()
    _cid_, att = attached()
    assert in_ns(att.netns_path, "busybox", "ping", "-c", "1", "-W", "5", manager.gateway).returncode == 0
    assert manager.host_veth(_cid_) in manager.bridge_ports()
    assert nat_rules.rules("nat").count(f"-A POSTROUTING -j {CHAIN}") == 1


def test_concurrent_rule_installs_leave_one_jump():
    chain, bridge = f"DYC-{TAG}", f"dyc{TAG}"
    threads = [threading.Thread(target=nat_rules.install, args=(chain, bridge, "10.230.0.0/24")) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert nat_rules.rules("filter").count(f"-A FORWARD -j {chain}") == 1
        assert nat_rules.rules("nat").count(f"-A POSTROUTING -j {chain}") == 1
    finally:
        nat_rules.uninstall(chain)
    assert not any(chain in rule for rule in nat_rules.rules("nat") + nat_rules.rules("filter"))


def test_validate_mac():
    from runtime.network.manager import validate_mac

    assert validate_mac("02:42:AC:11:00:99") == "02:42:ac:11:00:99"
    for bad in ("zz", "02:42:ac:11:00", "02:42:ac:11:00:9", "02-42-ac-11-00-99", "01:00:5e:00:00:01"):
        with pytest.raises(InvalidArgument, match="invalid MAC address"):
            validate_mac(bad)
