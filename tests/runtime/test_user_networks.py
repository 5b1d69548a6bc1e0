"""User-defined networks in the runtime: subnets, address pools, the name table, and real
bridges, veths and iptables chains driven through NetworkManager without containers.

The manager here has a default bridge, subnet and chain of its own (as test_network.py)
and its user networks take addresses from 10.232.x.0/24, so nothing meets an engine.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from runtime.errors import Conflict, InvalidArgument, NotFound
from runtime.models import NetworkAttachment
from runtime.network import subnet_pools
from runtime.network.ip_pool import IPPool
from runtime.network.manager import NetworkManager
from runtime.network.name_table import NameEntry, NameEvent, NameTable
from runtime.network.resolv_conf import container_etc_files, embedded_dns_resolv_conf
from tests.support.waiting import poll

TAG = os.getpid() % 100000
BRIDGE = f"dyu{TAG}"
CHAIN = f"DYU-{TAG}"
SUBNET = f"10.233.{TAG % 250}.0/24"


def _cid() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


# --------------------------------------------------------------------------- pure parts


def test_default_pools_are_dockers_and_skip_what_is_taken():
    first = list(subnet_pools.candidates())[:3]
    assert [str(n) for n in first] == ["172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16"]
    slices = [n for n in subnet_pools.candidates() if n.network_address.packed[0] == 192]
    assert str(slices[0]) == "192.168.0.0/20" and str(slices[-1]) == "192.168.240.0/20"
    taken = [ipaddress.IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
    chosen = subnet_pools.choose_subnet(taken)
    assert chosen.subnet_of(ipaddress.IPv4Network("192.168.0.0/16"))
    # The machine's own routes are never handed out.
    for route in subnet_pools.host_routes():
        assert not chosen.overlaps(route)
    with pytest.raises(InvalidArgument, match="non-overlapping"):
        subnet_pools.choose_subnet([ipaddress.IPv4Network("0.0.0.0/0")])


def test_requested_subnets_are_checked_as_dockerd_does():
    taken = {"a": ipaddress.IPv4Network("10.1.0.0/16")}
    assert subnet_pools.check_requested("10.2.0.0/24", "", "", taken) == (
        ipaddress.IPv4Network("10.2.0.0/24"), "10.2.0.1", "")
    with pytest.raises(Conflict, match="Pool overlaps"):
        subnet_pools.check_requested("10.1.5.0/24", "", "", taken)
    with pytest.raises(InvalidArgument, match="no matching subnet for gateway"):
        subnet_pools.check_requested("10.2.0.0/24", "10.3.0.1", "", taken)
    with pytest.raises(InvalidArgument, match="no matching subnet for range"):
        subnet_pools.check_requested("10.2.0.0/24", "", "10.2.1.0/25", taken)


def test_ip_range_and_requested_addresses(tmp_path):
    pool = IPPool(tmp_path / "p.json", "10.9.0.0/24", gateway="10.9.0.254", ip_range="10.9.0.128/30")
    got = [pool.allocate(f"c{i}") for i in range(4)]
    assert sorted(got) == ["10.9.0.128", "10.9.0.129", "10.9.0.130", "10.9.0.131"]
    assert pool.allocate("fixed", "10.9.0.7") == "10.9.0.7"
    with pytest.raises(Conflict, match="Address already in use"):
        pool.allocate("other", "10.9.0.7")
    with pytest.raises(Conflict):
        pool.allocate("other", "10.9.0.254")   # the gateway
    with pytest.raises(InvalidArgument):
        pool.allocate("other", "10.10.0.1")
    reloaded = IPPool(tmp_path / "p.json", "10.9.0.0/24", gateway="10.9.0.254", ip_range="10.9.0.128/30")
    assert reloaded.get("fixed") == "10.9.0.7"


def test_name_table_answers_per_namespace_and_notifies():
    table = NameTable()
    events: list[NameEvent] = []
    table.subscribe(events.append)
    table.attach(NameEntry("netA", "a", "c1", "10.0.0.2", ("web", "c1short", "api")), "/ns/c1")
    table.attach(NameEntry("netA", "a", "c2", "10.0.0.3", ("db", "c2short", "api")), "/ns/c2")
    table.attach(NameEntry("netB", "b", "c3", "10.1.0.2", ("cache", "c3short")), "/ns/c3")
    assert table.lookup("c1", "DB.") == ["10.0.0.3"]
    assert table.lookup("c1", "api") == ["10.0.0.2", "10.0.0.3"]     # a shared alias: both
    assert table.lookup("c1", "cache") == []                          # another network
    assert table.lookup("c3", "web") == []
    assert table.resolve("c1", "db") == [ipaddress.IPv4Address("10.0.0.3")]
    assert table.resolve("c1", "cache") is None                       # forwarded upstream
    assert table.reverse("c1", ipaddress.IPv4Address("10.0.0.3")) == "db.a"
    assert table.reverse("c3", ipaddress.IPv4Address("10.0.0.3")) is None
    table.detach("netA", "c2")
    assert table.lookup("c1", "db") == []
    assert [(e.kind, e.entry.container_id) for e in events] == [
        ("attach", "c1"), ("attach", "c2"), ("attach", "c3"), ("detach", "c2")]
    assert events[0].netns_path == "/ns/c1"


def test_resolv_conf_on_a_user_network_points_at_the_embedded_server(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("search corp.example\nnameserver 10.0.0.53\noptions ndots:2 timeout:1\n")
    assert embedded_dns_resolv_conf(host.read_text()) == (
        "search corp.example\nnameserver 127.0.0.11\noptions timeout:1 ndots:0\n")
    att = NetworkAttachment(mode="bridge", ip_address="10.5.0.2", gateway="10.5.0.1", user_network="n")
    files = container_etc_files("c" * 64, "h", att, [], host_resolv_conf=host)
    assert b"nameserver 127.0.0.11\n" in files["/etc/resolv.conf"]
    plain = container_etc_files("c" * 64, "h", NetworkAttachment(mode="bridge", ip_address="10.5.0.2",
                                                                  gateway="10.5.0.1"), [], host_resolv_conf=host)
    assert b"nameserver 10.0.0.53" in plain["/etc/resolv.conf"]


# --------------------------------------------------------------------------- real bridges


@pytest.fixture
def manager(tmp_path):
    m = NetworkManager(tmp_path / "net", bridge=BRIDGE, subnet=SUBNET, chain=CHAIN, warm_pool_size=0,
                       lease_root=None)
    m.setup()
    yield m
    for record in m.user.store.user_networks():
        for cid, _ in m.user.containers_on(record.id):
            m.detach(cid)
        m.user.remove(record.id)
    m.teardown_host()


def pings(netns_path: str, ip: str) -> bool:
    return subprocess.run(["nsenter", f"--net={netns_path}", "busybox", "ping", "-c1", "-W1", ip],
                          capture_output=True).returncode == 0


def comes_through(netns_path: str, ip: str) -> bool:
    """A fresh veth takes a moment to get its carrier: poll, with a deadline."""
    return bool(poll(lambda: pings(netns_path, ip), timeout=10, what=f"ping {ip}"))


def traces(ids: list[str]) -> tuple[list[str], list[str]]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    rules = "".join(subprocess.run(["iptables", "-t", t, "-S"], capture_output=True, text=True).stdout
                    for t in ("filter", "nat"))
    return ([i for i in ids if f"br-{i}" in links], [line for line in rules.splitlines()
                                                     if any(i in line for i in ids)])


def test_isolation_live_connect_disconnect_and_cleanup(manager, tmp_path):
    a = manager.user.create("a", subnet=f"10.232.{TAG % 250}.0/26")
    b = manager.user.create("b", subnet=f"10.232.{TAG % 250}.64/26")
    ids = [a.id[:12], b.id[:12]]
    ca, cb, cab = _cid(), _cid(), _cid()
    manager.user.register(ca, "ca", "a", None)
    manager.user.register(cb, "cb", "b", None)
    manager.user.register(cab, "cab", "a", {"b": {"Aliases": ["both"]}})
    att_a = manager.attach(ca, "a", [])
    att_b = manager.attach(cb, "b", [])
    att_ab = manager.attach(cab, "a", [])
    assert att_a.user_network == "a" and att_b.user_network == "b"
    ip_b = manager.user.live_endpoint(b.id, cb).ip
    assert comes_through(att_ab.netns_path, att_a.ip_address) and comes_through(att_ab.netns_path, ip_b)
    assert not pings(att_a.netns_path, ip_b)
    assert not pings(att_b.netns_path, att_a.ip_address)
    assert manager.names.lookup(ca, "cab") == [att_ab.ip_address]
    assert manager.names.lookup(cb, "both") == [manager.user.live_endpoint(b.id, cab).ip]
    assert manager.names.lookup(ca, "cb") == []
    # Live: disconnect cuts the path, connect opens one.
    manager.disconnect(cab, "b")
    assert not pings(att_ab.netns_path, ip_b)
    assert not pings(att_b.netns_path, att_ab.ip_address)
    assert manager.names.lookup(cb, "both") == []
    manager.connect(ca, "ca", True, "b", {"IPAMConfig": {"IPv4Address": f"10.232.{TAG % 250}.100"}})
    assert comes_through(att_a.netns_path, ip_b)
    assert manager.user.live_endpoint(b.id, ca).ip == f"10.232.{TAG % 250}.100"
    assert manager.names.lookup(cb, "ca") == [f"10.232.{TAG % 250}.100"]
    with pytest.raises(Conflict, match="active endpoints"):
        manager.user.remove("b")
    assert traces(ids)[0] == ids
    for cid in (ca, cb, cab):
        manager.detach(cid)
        manager.user.forget(cid)
    manager.user.remove("a")
    manager.user.remove("b")
    assert traces(ids) == ([], [])
    assert os.listdir(manager.netns_dir) == []


def test_networks_come_back_after_a_restart_of_the_manager(manager, tmp_path):
    n = manager.user.create("keep", subnet=f"10.232.{TAG % 250}.128/26", labels={"k": "v"})
    manager.shutdown()
    subprocess.run(["ip", "link", "del", n.bridge], check=True)   # as after a reboot
    again = NetworkManager(tmp_path / "net", bridge=BRIDGE, subnet=SUBNET, chain=CHAIN, warm_pool_size=0,
                           lease_root=None)
    again.setup()
    try:
        back = again.user.find("keep")
        assert (back.id, back.subnet, back.labels) == (n.id, n.subnet, {"k": "v"})
        assert again.user.find(n.id[:8]).name == "keep"
        assert len(again.user.store.builtin_id("bridge")) == 64
        assert poll(lambda: Path(f"/sys/class/net/{n.bridge}").exists(), timeout=5, what="bridge back")
        with pytest.raises(NotFound, match="network nope not found"):
            again.user.find("nope")
    finally:
        again.user.remove("keep")
        again.shutdown()
