"""The embedded DNS server at 127.0.0.11 on user networks, through the real docker CLI.

Names, aliases and Compose-style service aliases resolve per network; other names are
forwarded to the container's `--dns` server (a tiny one the test runs, no internet
here); `host.docker.internal` resolves; live connect and disconnect change what a
container resolves; and the server lets go of a namespace with its last user network.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from runtime.network import dns_message as msg
from tests.support.agent import agent_in
from tests.support.waiting import poll

PREFIX = "dydns"
OUTSIDE_NAME = "outside.dockyard.test"
OUTSIDE_ADDRESS = "203.0.113.7"


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    with agent_in(tmp_path_factory.mktemp("dnsagent")) as running:
        yield running


@pytest.fixture(scope="module")
def image(ours, test_images) -> str:
    ref = test_images["busybox"]
    pulled = ours.docker("pull", "-q", ref, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    return ref


@pytest.fixture
def clean(ours, image) -> Iterator[Any]:
    yield ours
    names = [n for n in ours.docker("ps", "-a", "--format", "{{.Names}}").stdout.split() if n.startswith(PREFIX)]
    if names:
        ours.docker("rm", "-f", *names)
    nets = [n for n in ours.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith(PREFIX)]
    if nets:
        ours.docker("network", "rm", *nets)


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def resolved(engine: Any, container: str, name: str) -> list[str]:
    """The addresses 127.0.0.11 gives `name` inside `container` ([] when it does not resolve)."""
    out = engine.docker("exec", container, "nslookup", "-type=a", name, "127.0.0.11").stdout
    answers = out.split(f"Name:\t{name}", 1)[1] if f"Name:\t{name}" in out else ""
    return re.findall(r"Address: (\d+\.\d+\.\d+\.\d+)", answers)


def run_on(engine: Any, image: str, name: str, network: str, *args: str) -> None:
    ok(engine.docker("run", "-d", "--name", f"{PREFIX}-{name}", "--network", network, *args,
                     image, "sleep", "300"))


def ip_on(engine: Any, container: str, network: str) -> str:
    return ok(engine.docker("inspect", "--format",
                            f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                            container)).strip()


def test_names_and_aliases_resolve_per_network(clean, image):
    ours = clean
    for n in ("a", "b"):
        ok(ours.docker("network", "create", f"{PREFIX}-{n}"))
    run_on(ours, image, "web", f"{PREFIX}-a", "--network-alias", "frontend")
    run_on(ours, image, "db", f"{PREFIX}-b")
    # What Compose sends for a service: the service name as an alias on the project network.
    ok(ours.docker("create", "--name", f"{PREFIX}-proj-cache-1", "--network", f"{PREFIX}-a",
                   "--network-alias", "cache", image, "sleep", "300"))
    ok(ours.docker("start", f"{PREFIX}-proj-cache-1"))
    web_ip = ip_on(ours, f"{PREFIX}-web", f"{PREFIX}-a")
    cache_ip = ip_on(ours, f"{PREFIX}-proj-cache-1", f"{PREFIX}-a")
    web_id = ok(ours.docker("inspect", "--format", "{{.Id}}", f"{PREFIX}-web")).strip()
    client = f"{PREFIX}-proj-cache-1"
    assert resolved(ours, client, f"{PREFIX}-web") == [web_ip]
    assert resolved(ours, client, "frontend") == [web_ip]
    assert resolved(ours, client, web_id[:12]) == [web_ip]
    assert resolved(ours, f"{PREFIX}-web", "cache") == [cache_ip]
    # Network b's names are not network a's.
    assert resolved(ours, client, f"{PREFIX}-db") == []
    assert resolved(ours, f"{PREFIX}-db", "frontend") == []
    # Through the container's resolv.conf too (it names only 127.0.0.11).
    assert re.findall(r"nameserver (\S+)", ok(ours.docker("exec", client, "cat", "/etc/resolv.conf"))) \
        == ["127.0.0.11"]
    assert web_ip in ok(ours.docker("exec", client, "nslookup", "frontend"))
    # A container in web's namespace (--network container:) resolves as web does.
    joiner = ok(ours.docker("run", "--rm", "--network", f"container:{PREFIX}-web", image,
                            "sh", "-c", "cat /etc/resolv.conf; nslookup cache"))
    assert re.findall(r"nameserver (\S+)", joiner) == ["127.0.0.11"]
    assert cache_ip in joiner


class FakeUpstream:
    """A DNS server on the host that answers every A query with OUTSIDE_ADDRESS."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.asked: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = msg.parse_query(data)
            self.asked.append(query.name)
            if query.name == OUTSIDE_NAME and query.qtype == msg.TYPE_A:
                reply = msg.build_reply(query, [msg.address_record(ipaddress.ip_address(OUTSIDE_ADDRESS))],
                                        ttl=60)
            else:
                reply = msg.build_reply(query, rcode=msg.RCODE_NXDOMAIN)
            self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.sock.close()


def test_unknown_names_are_forwarded_to_the_containers_dns(clean, image):
    ours = clean
    ok(ours.docker("network", "create", f"{PREFIX}-fwd"))
    gateway = ok(ours.docker("network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}",
                             f"{PREFIX}-fwd")).strip()
    upstream = FakeUpstream(gateway)
    try:
        run_on(ours, image, "asker", f"{PREFIX}-fwd", "--dns", gateway)
        resolv = ok(ours.docker("exec", f"{PREFIX}-asker", "cat", "/etc/resolv.conf"))
        assert re.findall(r"nameserver (\S+)", resolv) == ["127.0.0.11"]
        assert resolved(ours, f"{PREFIX}-asker", OUTSIDE_NAME) == [OUTSIDE_ADDRESS]
        assert OUTSIDE_NAME in upstream.asked
        # The container's own name never leaves the engine.
        asked = len(upstream.asked)
        assert resolved(ours, f"{PREFIX}-asker", f"{PREFIX}-asker")
        assert len(upstream.asked) == asked
    finally:
        upstream.close()


def test_bad_dns_server_is_refused_at_create(clean, image):
    ours = clean
    ok(ours.docker("network", "create", f"{PREFIX}-bad"))
    body = {"Image": image, "HostConfig": {"NetworkMode": f"{PREFIX}-bad", "Dns": ["not-an-ip"]}}
    status, _, answer = ours.request("POST", f"/v1.45/containers/create?name={PREFIX}-bad",
                                     json.dumps(body).encode())
    assert status == 400, answer
    assert b"not an IP address" in answer


def test_host_docker_internal_resolves(clean, image):
    ours = clean
    ok(ours.docker("network", "create", f"{PREFIX}-host"))
    run_on(ours, image, "h", f"{PREFIX}-host")
    gateway = ok(ours.docker("network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}",
                             f"{PREFIX}-host")).strip()
    assert resolved(ours, f"{PREFIX}-h", "host.docker.internal") == [gateway]


def _netns_inode(engine: Any, container: str) -> int:
    pid = int(ok(engine.docker("inspect", "--format", "{{.State.Pid}}", container)).strip())
    return os.stat(f"/proc/{pid}/ns/net").st_ino


NSFS_DEV = os.stat("/proc/self/ns/net").st_dev


def _agent_holds_netns(engine: Any, inode: int) -> bool:
    fd_dir = f"/proc/{engine.process.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            st = os.stat(f"{fd_dir}/{fd}")   # an fd on the namespace's bind mount reads as its path
        except OSError:
            continue
        if st.st_ino == inode and st.st_dev == NSFS_DEV:
            return True
    return False


def _listens_on_embedded_dns(engine: Any, container: str) -> bool:
    """127.0.0.11:53 among the namespace's UDP sockets (/proc/net/udp is per namespace)."""
    table = ok(engine.docker("exec", container, "cat", "/proc/net/udp"))
    return " 0B00007F:0035 " in table


def test_live_connect_and_disconnect_change_what_resolves(clean, image):
    ours = clean
    ok(ours.docker("network", "create", f"{PREFIX}-live"))
    run_on(ours, image, "target", f"{PREFIX}-live")
    # On the default bridge: no embedded DNS at all.
    run_on(ours, image, "mover", "bridge")
    mover = f"{PREFIX}-mover"
    assert not _listens_on_embedded_dns(ours, mover)
    ok(ours.docker("network", "connect", "--alias", "moved", f"{PREFIX}-live", mover))
    target_ip = ip_on(ours, f"{PREFIX}-target", f"{PREFIX}-live")
    assert resolved(ours, mover, f"{PREFIX}-target") == [target_ip]
    assert resolved(ours, f"{PREFIX}-target", "moved") == [ip_on(ours, mover, f"{PREFIX}-live")]
    # As dockerd: its resolv.conf now names the embedded server, so plain lookups work.
    assert "nameserver 127.0.0.11" in ok(ours.docker("exec", mover, "cat", "/etc/resolv.conf"))
    assert target_ip in ok(ours.docker("exec", mover, "nslookup", f"{PREFIX}-target"))
    ok(ours.docker("restart", "-t", "0", mover))
    assert "nameserver 127.0.0.11" in ok(ours.docker("exec", mover, "cat", "/etc/resolv.conf"))
    # The last user network goes: the names go, and so do the server's sockets.
    ok(ours.docker("network", "disconnect", f"{PREFIX}-live", mover))
    assert resolved(ours, f"{PREFIX}-target", "moved") == []
    assert poll(lambda: not _listens_on_embedded_dns(ours, mover), timeout=10, what="server detached")
    assert not _agent_holds_netns(ours, _netns_inode(ours, mover))


def test_server_lets_go_of_a_stopped_containers_namespace(clean, image):
    ours = clean
    ok(ours.docker("network", "create", f"{PREFIX}-stop"))
    run_on(ours, image, "s", f"{PREFIX}-stop")
    inode = _netns_inode(ours, f"{PREFIX}-s")
    assert _listens_on_embedded_dns(ours, f"{PREFIX}-s")
    assert _agent_holds_netns(ours, inode)
    ok(ours.docker("stop", "-t", "0", f"{PREFIX}-s"))
    assert not _agent_holds_netns(ours, inode)
