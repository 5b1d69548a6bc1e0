"""The embedded DNS server with real network namespaces, real sockets and real queries.

Queries are sent from inside a namespace: through a socket created there by a
thread that joined it, or through libc's resolver in `ip netns exec` (which
bind-mounts /etc/netns/NAME/resolv.conf, pointing at 127.0.0.11, over
/etc/resolv.conf). The upstream is a small DNS server of the test's own on
127.0.0.1 in the host namespace, or on a veth inside a namespace.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.linux.netns import run_in_netns
from runtime.network import dns_message as msg
from runtime.network.dns_forward import Upstream, upstreams_from_resolv_conf
from runtime.network.dns_server import DnsServer
from runtime.network.resolv_conf import ContainerDns

NETNS_DIR = Path("/run/netns")
IP = ipaddress.ip_address


# ---- helpers ---------------------------------------------------------------------------------

def make_query(name: str, qtype: int = msg.TYPE_A, ident: int = 0x1234, edns: int = 0) -> bytes:
    additional = b""
    if edns:
        additional = b"\x00" + struct.pack("!HHIH", msg.TYPE_OPT, edns, 0, 0)
    header = struct.pack("!HHHHHH", ident, msg.FLAG_RD, 1, 0, 0, 1 if edns else 0)
    return header + msg.encode_name(name) + struct.pack("!HH", qtype, msg.CLASS_IN) + additional


def parse_answers(data: bytes) -> tuple[int, int, list[tuple[int, int, bytes]]]:
    """(flags, rcode, [(type, ttl, rdata)]) of a reply."""
    ident, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", data)
    offset = 12
    for _ in range(qd):
        _, offset = msg._read_name(data, offset)
        offset += 4
    answers = []
    for _ in range(an):
        _, offset = msg._read_name(data, offset)
        rtype, _, ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        answers.append((rtype, ttl, data[offset:offset + rdlength]))
        offset += rdlength
    return flags, flags & 0xF, answers


def addresses(data: bytes) -> list[str]:
    return [str(ipaddress.ip_address(rdata)) for rtype, _, rdata in parse_answers(data)[2]
            if rtype in (msg.TYPE_A, msg.TYPE_AAAA)]


class Netns:
    """A namespace made with `ip netns add`, loopback up; removed at the end."""

    def __init__(self, prefix: str = "dnst") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self.path = NETNS_DIR / self.name

    def socket(self, kind: int = socket.SOCK_DGRAM, family: int = socket.AF_INET) -> socket.socket:
        """A socket that lives in this namespace."""
        sock = run_in_netns(self.path, lambda: socket.socket(family, kind))
        sock.settimeout(10)
        return sock

    def ask(self, query: bytes, address: str = "127.0.0.11", port: int = 53) -> bytes:
        with self.socket() as sock:
            sock.sendto(query, (address, port))
            return sock.recv(65535)

    def ask_tcp(self, query: bytes) -> bytes:
        with self.socket(socket.SOCK_STREAM) as sock:
            sock.connect(("127.0.0.11", 53))
            sock.sendall(struct.pack("!H", len(query)) + query)
            length = struct.unpack("!H", recv_exact(sock, 2))[0]
            return recv_exact(sock, length)

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(Path("/etc/netns") / self.name, ignore_errors=True)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        assert chunk, "connection closed early"
        out += chunk
    return out


class FakeUpstream:
    """A tiny authoritative DNS server with a fixed zone: A records, NXDOMAIN for the rest.

    `big.example` has enough records to be truncated over UDP; `fail.example` gets SERVFAIL.
    """

    ZONE = {"outside.example": ["203.0.113.7"],
            "big.example": [f"198.51.100.{i}" for i in range(1, 61)]}

    def __init__(self, address: str = "127.0.0.1", netns: Netns | None = None) -> None:
        def make() -> tuple[socket.socket, socket.socket]:
            for _ in range(50):  # the UDP port the kernel picks may be taken for TCP
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.bind((address, 0))
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    tcp.bind((address, udp.getsockname()[1]))
                except OSError:
                    udp.close()
                    tcp.close()
                    continue
                tcp.listen(8)
                return udp, tcp
            raise AssertionError("no port free for both UDP and TCP")

        self._netns = netns
        self.udp, self.tcp = run_in_netns(netns.path, make) if netns else make()
        self.address = f"{address}:{self.udp.getsockname()[1]}"
        self.queries: list[tuple[str, str]] = []  # (transport, name)
        self._stop = False
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for thread in self._threads:
            thread.start()

    def answer(self, data: bytes, tcp: bool) -> bytes:
        query = msg.parse_query(data)
        self.queries.append(("tcp" if tcp else "udp", query.name))
        if query.name == "fail.example":
            return msg.build_reply(query, rcode=msg.RCODE_SERVFAIL)
        found = self.ZONE.get(query.name)
        if found is None:
            reply = bytearray(msg.build_reply(query, rcode=msg.RCODE_NXDOMAIN))
            reply[2] |= msg.FLAG_AA >> 8
            return bytes(reply)
        records = [msg.address_record(IP(a)) for a in found] if query.qtype == msg.TYPE_A else []
        return msg.build_reply(query, records, ttl=30, max_size=65535 if tcp else 512)

    def _serve_udp(self) -> None:
        while not self._stop:
            try:
                data, peer = self.udp.recvfrom(65535)
                if self._stop:
                    return
                self.udp.sendto(self.answer(data, False), peer)
            except OSError:
                return

    def _serve_tcp(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                length = struct.unpack("!H", recv_exact(conn, 2))[0]
                reply = self.answer(recv_exact(conn, length), True)
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def close(self) -> None:
        # Wake the threads and wait for them before closing: a thread still about to
        # call recvfrom on a closed fd number could steal a datagram from a new socket.
        self._stop = True
        def make() -> socket.socket:
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        with (run_in_netns(self._netns.path, make) if self._netns else make()) as poke:
            poke.sendto(b"", self.udp.getsockname())
        self.tcp.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)
        self.udp.close()
        self.tcp.close()


class Directory:
    """The engine's side, as a test stands it in: names per attachment key."""

    def __init__(self) -> None:
        self.names: dict[str, dict[str, list[str]]] = {}
        self.ptr: dict[str, str] = {}

    def lookup(self, key: str, name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None:
        found = self.names.get(key, {}).get(name)
        return [IP(a) for a in found] if found is not None else None

    def reverse(self, key: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        return self.ptr.get(str(address))


@pytest.fixture
def netns_factory() -> Iterator:
    made: list[Netns] = []

    def make(prefix: str = "dnst") -> Netns:
        made.append(Netns(prefix))
        return made[-1]

    yield make
    for ns in made:
        ns.remove()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture
def directory() -> Directory:
    d = Directory()
    d.names["web"] = {"db": ["172.30.0.3"], "cache": ["172.30.0.4", "172.30.0.5", "172.30.0.6"],
                      "app.project_default": ["172.30.0.7"]}
    d.ptr["172.30.0.3"] = "db.project_default"
    return d


@pytest.fixture
def server(directory: Directory, upstream: FakeUpstream) -> Iterator[DnsServer]:
    srv = DnsServer(directory.lookup, [upstream.address], reverse=directory.reverse,
                    host_address="192.168.65.254", timeout=2.0)
    yield srv
    srv.close()


# ---- internal names ----------------------------------------------------------------------------

def test_internal_name_answers_with_ttl_600(server: DnsServer, netns_factory, upstream: FakeUpstream) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    flags, rcode, answers = parse_answers(ns.ask(make_query("db")))
    assert rcode == msg.RCODE_NOERROR and flags & msg.FLAG_QR and flags & msg.FLAG_RA
    assert answers == [(msg.TYPE_A, 600, IP("172.30.0.3").packed)]
    assert upstream.queries == []  # answered without leaving the agent


def test_names_are_case_insensitive_through_libc(server: DnsServer, netns_factory) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    conf = Path("/etc/netns") / ns.name / "resolv.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("nameserver 127.0.0.11\noptions ndots:0\n")
    out = subprocess.run(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c",
         "import socket; print(sorted({a[4][0] for a in socket.getaddrinfo('DB', 80, socket.AF_INET)}))"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['172.30.0.3']"
    assert addresses(ns.ask(make_query("App.Project_Default"))) == ["172.30.0.7"]


def test_several_addresses_come_in_random_order(server: DnsServer, netns_factory) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    orders = set()
    for _ in range(200):  # 6 orders, each with p=1/6: all-equal in 200 tries has p < 1e-150
        got = addresses(ns.ask(make_query("cache")))
        assert sorted(got) == ["172.30.0.4", "172.30.0.5", "172.30.0.6"]
        orders.add(tuple(got))
        if len(orders) > 1:
            break
    assert len(orders) > 1


def test_aaaa_for_a_v4_only_name_is_empty_noerror(server: DnsServer, netns_factory, upstream) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    _, rcode, answers = parse_answers(ns.ask(make_query("db", msg.TYPE_AAAA)))
    assert (rcode, answers) == (msg.RCODE_NOERROR, [])
    _, rcode, answers = parse_answers(ns.ask(make_query("db", msg.TYPE_MX)))
    assert (rcode, answers) == (msg.RCODE_NOERROR, [])
    assert upstream.queries == []


def test_names_are_per_attachment(server: DnsServer, directory: Directory, netns_factory) -> None:
    web, other = netns_factory(), netns_factory()
    directory.names["other"] = {"db": ["10.9.0.2"]}
    server.attach("web", web.path)
    server.attach("other", other.path)
    assert addresses(web.ask(make_query("db"))) == ["172.30.0.3"]
    assert addresses(other.ask(make_query("db"))) == ["10.9.0.2"]


def test_host_docker_internal_is_the_host(server: DnsServer, netns_factory, upstream) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    assert addresses(ns.ask(make_query("host.docker.internal"))) == ["192.168.65.254"]
    assert upstream.queries == []


def test_ptr_for_a_container_address(server: DnsServer, netns_factory) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    _, rcode, answers = parse_answers(ns.ask(make_query("3.0.30.172.in-addr.arpa", msg.TYPE_PTR)))
    assert rcode == msg.RCODE_NOERROR
    assert answers == [(msg.TYPE_PTR, 600, msg.encode_name("db.project_default"))]


def test_tcp_query(server: DnsServer, netns_factory) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    assert addresses(ns.ask_tcp(make_query("db"))) == ["172.30.0.3"]
    # Two queries on one connection, as resolvers do for A and AAAA.
    with ns.socket(socket.SOCK_STREAM) as sock:
        sock.connect(("127.0.0.11", 53))
        q1, q2 = make_query("db", ident=1), make_query("app.project_default", ident=2)
        sock.sendall(struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2)
        replies = {}
        for _ in range(2):
            data = recv_exact(sock, struct.unpack("!H", recv_exact(sock, 2))[0])
            replies[struct.unpack_from("!H", data)[0]] = addresses(data)
    assert replies == {1: ["172.30.0.3"], 2: ["172.30.0.7"]}


def test_tcp_pipelined_queries_read_late_all_answered(server: DnsServer, netns_factory) -> None:
    """2,500 queries sent before any reply is read; others are answered meanwhile."""
    ns = netns_factory()
    server.attach("web", ns.path)
    count = 2500
    with ns.socket(socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.11", 53))
        query = make_query("cache")
        sock.sendall((struct.pack("!H", len(query)) + query) * count)
        assert addresses(ns.ask(make_query("db"))) == ["172.30.0.3"]
        got = 0
        for _ in range(count):
            data = recv_exact(sock, struct.unpack("!H", recv_exact(sock, 2))[0])
            got += len(addresses(data)) == 3
    assert got == count


# ---- forwarding ------------------------------------------------------------------------------

def test_unknown_names_are_forwarded(server: DnsServer, netns_factory, upstream: FakeUpstream) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    reply = ns.ask(make_query("outside.example", ident=0x4242))
    assert reply[:2] == b"\x42\x42"
    assert addresses(reply) == ["203.0.113.7"]
    assert parse_answers(reply)[2][0][1] == 30  # the upstream's TTL, passed through
    assert upstream.queries == [("udp", "outside.example")]


def test_nxdomain_passes_through(server: DnsServer, netns_factory, upstream: FakeUpstream) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    _, rcode, answers = parse_answers(ns.ask(make_query("nowhere.example")))
    assert (rcode, answers) == (msg.RCODE_NXDOMAIN, [])


def test_servfail_when_no_upstream_helps(server: DnsServer, netns_factory) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    assert parse_answers(ns.ask(make_query("fail.example")))[1] == msg.RCODE_SERVFAIL


def test_truncated_udp_reply_is_retried_over_tcp(server: DnsServer, netns_factory, upstream) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    # With a big EDNS buffer the full TCP answer fits the client's UDP reply.
    reply = ns.ask(make_query("big.example", edns=4096))
    assert len(addresses(reply)) == 60 and not parse_answers(reply)[0] & msg.FLAG_TC
    assert upstream.queries == [("udp", "big.example"), ("tcp", "big.example")]
    # A plain 512-byte client gets the truncated reply, and then asks over TCP itself.
    reply = ns.ask(make_query("big.example"))
    assert parse_answers(reply)[0] & msg.FLAG_TC
    assert len(addresses(ns.ask_tcp(make_query("big.example")))) == 60


def test_per_container_upstreams_are_asked_from_its_namespace(directory, netns_factory, upstream) -> None:
    """`--dns`: a non-loopback upstream is reached from inside the container's namespace."""
    ns = netns_factory()
    subprocess.run(["ip", "-n", ns.name, "link", "add", "up0", "type", "veth", "peer", "name", "up1"], check=True)
    subprocess.run(["ip", "-n", ns.name, "addr", "add", "10.77.0.1/24", "dev", "up0"], check=True)
    subprocess.run(["ip", "-n", ns.name, "link", "set", "up0", "up"], check=True)
    inside = FakeUpstream("10.77.0.1", netns=ns)  # unreachable from the host namespace
    srv = DnsServer(directory.lookup, [upstream.address], timeout=2.0)
    try:
        srv.attach("web", ns.path, upstreams=[inside.address])
        assert addresses(ns.ask(make_query("outside.example"))) == ["203.0.113.7"]
        assert inside.queries == [("udp", "outside.example")] and upstream.queries == []
    finally:
        srv.close()
        inside.close()


def test_per_container_loopback_upstream_is_inside_the_container(directory, netns_factory, upstream) -> None:
    """`--dns 127.0.0.1` names a server in the container itself, not the engine's loopback."""
    ns = netns_factory()
    inside = FakeUpstream("127.0.0.1", netns=ns)
    srv = DnsServer(directory.lookup, [upstream.address], timeout=2.0)
    try:
        srv.attach("web", ns.path, upstreams=[inside.address])
        assert addresses(ns.ask(make_query("outside.example"))) == ["203.0.113.7"]
        assert inside.queries == [("udp", "outside.example")] and upstream.queries == []
    finally:
        srv.close()
        inside.close()


def test_ndots_option_keeps_single_labels_local(directory, netns_factory, upstream) -> None:
    ns = netns_factory()
    srv = DnsServer(directory.lookup, [upstream.address], timeout=2.0)
    try:
        srv.attach("web", ns.path, ndots_set=True)
        _, rcode, answers = parse_answers(ns.ask(make_query("nosuchhost")))
        assert (rcode, answers) == (msg.RCODE_NOERROR, [])
        assert upstream.queries == []
        assert addresses(ns.ask(make_query("outside.example"))) == ["203.0.113.7"]
    finally:
        srv.close()


# ---- robustness and lifecycle --------------------------------------------------------------------

def test_malformed_packets_do_not_stop_the_server(server: DnsServer, netns_factory) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    garbage = [b"", b"\x00", b"\x12\x34" + b"\xff" * 10,
               struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01",  # pointer loop
               struct.pack("!HHHHHH", 8, 0, 1, 0, 0, 0) + b"\x3fabc",  # label past the end
               struct.pack("!HHHHHH", 9, 0, 2, 0, 0, 0) + msg.encode_name("db") + b"\x00\x01\x00\x01",
               struct.pack("!HHHHHH", 10, 0x8000, 1, 0, 0, 0) + msg.encode_name("db") + b"\x00\x01\x00\x01",
               b"\x55\x55\x85" + bytes(range(256)) * 2]  # a "response" of junk
    with ns.socket() as sock:
        for data in garbage:
            sock.sendto(data, ("127.0.0.11", 53))
        sock.settimeout(10)
        # Readable headers of queries get FORMERR; responses and runts get nothing.
        replies = {}
        for _ in range(3):
            data = sock.recv(65535)
            replies[struct.unpack_from("!H", data)[0]] = data[3] & 0xF
    assert {replies[7], replies[8], replies[9]} == {msg.RCODE_FORMERR}
    with ns.socket(socket.SOCK_STREAM) as sock:  # garbage over TCP, then a hang-up
        sock.connect(("127.0.0.11", 53))
        sock.sendall(b"\x00\x03abc\x00")
    assert addresses(ns.ask(make_query("db"))) == ["172.30.0.3"]
    assert addresses(ns.ask_tcp(make_query("db"))) == ["172.30.0.3"]


def test_lookup_errors_give_servfail_and_the_server_goes_on(netns_factory, upstream) -> None:
    def lookup(key: str, name: str):
        if name == "boom":
            raise RuntimeError("engine bug")
        return [IP("172.30.0.9")] if name == "ok" else None

    ns = netns_factory()
    srv = DnsServer(lookup, [upstream.address], timeout=2.0)
    try:
        srv.attach("web", ns.path)
        assert parse_answers(ns.ask(make_query("boom")))[1] == msg.RCODE_SERVFAIL
        assert addresses(ns.ask(make_query("ok"))) == ["172.30.0.9"]
    finally:
        srv.close()


def listening_sockets(ns: Netns) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns.name, "ss", "-Hlnut", "src", "127.0.0.11"],
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_detach_closes_the_sockets(server: DnsServer, netns_factory) -> None:
    ns = netns_factory()
    server.attach("web", ns.path)
    with ns.socket(socket.SOCK_STREAM) as conn:
        conn.connect(("127.0.0.11", 53))  # an open TCP client connection is closed too
        assert listening_sockets(ns).count("127.0.0.11:53") == 2
        assert server.detach("web") is True
        assert listening_sockets(ns) == ""
        assert conn.recv(1) == b""
    with ns.socket(socket.SOCK_STREAM) as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.11", 53))
    assert server.detach("web") is False
    server.attach("web", ns.path)  # and the address is free again
    assert addresses(ns.ask(make_query("db"))) == ["172.30.0.3"]


def test_two_hundred_namespaces_attached_all_answer(directory: Directory, netns_factory, upstream) -> None:
    srv = DnsServer(directory.lookup, [upstream.address], timeout=2.0)
    spaces = [netns_factory("dns200") for _ in range(200)]
    try:
        for index, ns in enumerate(spaces):
            directory.names[f"c{index}"] = {"self": [f"10.200.{index // 250}.{index % 250 + 1}"]}
            srv.attach(f"c{index}", ns.path)
        assert len(srv.attached()) == 200
        for index, ns in enumerate(spaces):
            assert addresses(ns.ask(make_query("self"))) == [f"10.200.{index // 250}.{index % 250 + 1}"]
        assert addresses(spaces[123].ask(make_query("outside.example"))) == ["203.0.113.7"]
    finally:
        srv.close()
    assert srv.attached() == []


def test_close_detaches_everything(directory: Directory, netns_factory, upstream) -> None:
    srv = DnsServer(directory.lookup, [upstream.address], timeout=2.0)
    ns = netns_factory()
    srv.attach("web", ns.path)
    srv.close()
    assert listening_sockets(ns) == ""
    srv.close()  # idempotent


# ---- configuration -------------------------------------------------------------------------------

def test_upstreams_from_resolv_conf() -> None:
    text = "search example.org\nnameserver 10.0.2.3\nnameserver ::1\nnameserver bogus\n"
    # The engine's loopback resolver is asked from the agent's namespace, where it listens.
    assert upstreams_from_resolv_conf(text) == [Upstream("10.0.2.3"), Upstream("::1", 53, from_host=True)]
    assert upstreams_from_resolv_conf("") == [Upstream("8.8.8.8"), Upstream("8.8.4.4")]
    assert Upstream.parse("[::1]:5353") == Upstream("::1", 5353)
    assert Upstream.parse("127.0.0.1:5300", engine_side=True).from_host
    assert not Upstream.parse("127.0.0.1:5300").from_host and not Upstream.parse("10.0.2.3").from_host


@pytest.mark.parametrize("options", [
    [],
    ["--dns", "1.2.3.4", "--dns", "9.9.9.9"],
    ["--dns-search", "foo.com", "--dns-search", "bar.org"],
    ["--dns-option", "ndots:2", "--dns-option", "timeout:3"],
    ["--dns-option", "timeout:3"],
    ["--dns", "9.9.9.9", "--dns-search", "x.y", "--dns-option", "ndots:1"],
    ["--dns-search", "."],
])
def test_resolv_conf_on_a_user_network_matches_dockerd(dockerd, test_images, options: list[str]) -> None:
    image = test_images["busybox"]
    assert dockerd.docker("pull", "-q", image).returncode == 0
    network = f"dns-{uuid.uuid4().hex[:8]}"
    assert dockerd.docker("network", "create", network).returncode == 0
    try:
        theirs = dockerd.docker("run", "--rm", "--network", network, *options, image, "cat", "/etc/resolv.conf")
    finally:
        dockerd.docker("network", "rm", network)
    assert theirs.returncode == 0, theirs.stderr
    given: dict[str, list[str]] = {"--dns": [], "--dns-search": [], "--dns-option": []}
    for flag, value in zip(options[::2], options[1::2], strict=True):
        given[flag].append(value)
    ours = ContainerDns(tuple(given["--dns"]), tuple(given["--dns-search"]), tuple(given["--dns-option"]))
    assert ours.resolv_conf(Path("/etc/resolv.conf").read_text()) == theirs.stdout
    assert ours.upstreams == (given["--dns"] or None)
    assert ours.ndots_set == any(o.startswith("ndots:") for o in given["--dns-option"])


def test_resolv_conf_inherits_the_engines_search_and_options() -> None:
    engine = "search corp.example\nnameserver 10.0.2.3\noptions ndots:3 edns0\n"
    assert ContainerDns().resolv_conf(engine) == "search corp.example\nnameserver 127.0.0.11\noptions edns0 ndots:0\n"
    with pytest.raises(Exception, match="not an IP address"):
        ContainerDns(servers=("dns.example",))
