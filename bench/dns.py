"""Resolver-level latency of the embedded DNS server (127.0.0.11), ours and dockerd's.

The query loop is the same for both: a UDP socket created inside a container's
network namespace sends one A query at a time to 127.0.0.11:53 and waits for the
reply; p50/p99 over `--queries` queries. Cases:

* ours, an internal name, one namespace attached;
* ours, an internal name, 200 namespaces attached (queries rotate over all 200);
* ours, a forwarded name (to a minimal upstream on 127.0.0.1 in this process);
* with `--containers N`: a real `dockyard-agent serve` with N busybox containers
  on one user network; queries rotate over every container's name and are sent
  from every container's namespace in turn (the issue's "keeps answering with
  200 containers on the network");
* with `--dockerd`: Debian's dockerd, a container on a user network asking for
  another container's name (the socket joins the container's namespace from
  the host, through /proc/PID/ns/net).

Usage: sudo .venv/bin/python bench/dns.py [--queries N] [--namespaces N] [--containers N] [--dockerd]
Needs root (network namespaces); `--dockerd` also needs Debian's docker.io.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runtime.linux.netns import run_in_netns  # noqa: E402 - needs REPO on sys.path first
from runtime.network import dns_message as msg  # noqa: E402 - needs REPO on sys.path first
from runtime.network.dns_server import DnsServer  # noqa: E402 - needs REPO on sys.path first

CACHE_DIR = Path(os.environ.get("DOCKYARD_TEST_CACHE", Path.home() / ".cache" / "dockyard-tests"))
DOCKERD_ARGS = ["--default-address-pool", "base=10.213.0.0/16,size=24", "--bip", "10.214.0.1/24"]

log = logging.getLogger("bench.dns")


def query_bytes(name: str, ident: int) -> bytes:
    return (struct.pack("!HHHHHH", ident, msg.FLAG_RD, 1, 0, 0, 0) + msg.encode_name(name)
            + struct.pack("!HH", msg.TYPE_A, msg.CLASS_IN))


def socket_in(netns: str | Path) -> socket.socket:
    sock = run_in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.settimeout(5)
    sock.connect(("127.0.0.11", 53))
    return sock


def time_queries(sockets: list[socket.socket], name: str | list[str], count: int) -> list[float]:
    """Milliseconds per query (send to reply), one at a time, rotating over `sockets`
    (and over the names, when given several)."""
    names = [name] if isinstance(name, str) else name
    timings = []
    for i in range(count):
        sock = sockets[i % len(sockets)]
        name = names[i % len(names)]
        query = query_bytes(name, i & 0xFFFF)
        start = time.perf_counter()
        sock.send(query)
        while True:  # skip a late reply to an earlier, timed-out query
            reply = sock.recv(4096)
            if reply[:2] == query[:2]:
                break
        timings.append((time.perf_counter() - start) * 1000)
        if reply[3] & 0xF != msg.RCODE_NOERROR or struct.unpack_from("!H", reply, 6)[0] == 0:
            raise RuntimeError(f"{name}: no answer (rcode {reply[3] & 0xF})")
    return timings


def report(label: str, timings: list[float]) -> float:
    ordered = sorted(timings)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{label:48s} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   max {ordered[-1]:7.3f} ms", flush=True)
    return p50


class Namespaces:
    """`ip netns add` namespaces with loopback up, removed on exit."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self) -> Path:
        name = f"dnsb-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.names.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return Path("/run/netns") / name

    def remove_all(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], check=False)


class TinyUpstream:
    """Answers every A query with 192.0.2.1: the cheapest possible upstream."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
                query = msg.parse_query(data)
            except (OSError, msg.MalformedMessage):
                if self.sock.fileno() < 0:
                    return
                continue
            self.sock.sendto(msg.build_reply(query, [msg.address_record(ipaddress.ip_address("192.0.2.1"))]), peer)


def bench_ours(queries: int, count: int) -> dict[str, float]:
    names = {"target": [ipaddress.ip_address("172.30.0.3")]}
    upstream = TinyUpstream()
    server = DnsServer(lambda key, name: names.get(name), [upstream.address])
    spaces = Namespaces()
    results = {}
    try:
        first = spaces.add()
        server.attach("c0", first)
        sock = socket_in(first)
        time_queries([sock], "target", 50)  # warm-up
        results["one"] = report("ours: internal name, 1 namespace", time_queries([sock], "target", queries))
        report("ours: forwarded name, 1 namespace", time_queries([sock], "outside.example", queries))
        start = time.perf_counter()
        paths = [spaces.add() for _ in range(count - 1)]
        made = time.perf_counter()
        for index, path in enumerate(paths, 1):
            server.attach(f"c{index}", path)
        attached = time.perf_counter()
        print(f"  ({count - 1} more namespaces: created in {made - start:.2f} s, attached in "
              f"{(attached - made) * 1000:.0f} ms = {(attached - made) * 1000 / len(paths):.2f} ms each)")
        sockets = [sock] + [socket_in(p) for p in paths]
        results["many"] = report(f"ours: internal name, {count} namespaces (rotating)",
                                 time_queries(sockets, "target", queries))
        report(f"ours: internal name, {count} attached, from one", time_queries([sock], "target", queries))
        for s in sockets:
            s.close()
    finally:
        server.close()
        spaces.remove_all()
    return results


@contextlib.contextmanager
def engine_with_busybox(kind: str) -> Iterator[tuple[Callable[..., str], str]]:
    """A fresh engine of ours ("dockyard") or Debian's dockerd with busybox pulled and a
    user network "dnsbench": yields (docker CLI runner, image reference)."""
    from tests.support.agent import start_agent
    from tests.support.dockerd import Dockerd
    from tests.support.registry import start_registry
    from tests.support.test_images import push_test_images

    with tempfile.TemporaryDirectory(prefix="dockyard-dnsbench-") as tmp:
        base = Path(tmp)
        registry = start_registry(base / "registry")
        engine: Any = None
        try:
            image = push_test_images(registry, CACHE_DIR, names=["busybox"])["busybox"]
            engine = (start_agent(socket=base / "docker.sock", root=base / "root") if kind == "dockyard"
                      else Dockerd(base / "dockerd", DOCKERD_ARGS))

            def docker(*args: str) -> str:
                result = engine.docker(*args, timeout=120)
                if result.returncode != 0:
                    raise RuntimeError(f"docker {' '.join(args)}: {result.stderr}")
                return str(result.stdout).strip()

            docker("pull", "-q", image)
            docker("network", "create", "dnsbench")
            yield docker, image
        finally:
            if engine is not None:
                engine.stop()
            registry.stop()


def bench_containers(queries: int, count: int) -> float:
    """N real containers of ours on one user network, each asking for the others."""
    with engine_with_busybox("dockyard") as (docker, image):
        names = [f"c{i:03d}" for i in range(count)]
        start = time.perf_counter()
        for name in names:
            docker("run", "-d", "--name", name, "--network", "dnsbench", image, "sleep", "600")
        print(f"  ({count} containers started in {time.perf_counter() - start:.1f} s)")
        pids = docker("inspect", "-f", "{{.State.Pid}}", *names).split()
        sockets = [socket_in(f"/proc/{pid}/ns/net") for pid in pids]
        time_queries(sockets, names, 50)
        p50 = report(f"ours: {count} containers, every name, from each", time_queries(sockets, names, queries))
        for sock in sockets:
            sock.close()
        docker("rm", "-f", *names)
        return p50


def bench_dockerd(queries: int) -> float:
    with engine_with_busybox("dockerd") as (docker, image):
        docker("run", "-d", "--name", "target", "--network", "dnsbench", image, "sleep", "600")
        docker("run", "-d", "--name", "client", "--network", "dnsbench", image, "sleep", "600")
        pid = docker("inspect", "-f", "{{.State.Pid}}", "client")
        sock = socket_in(f"/proc/{pid}/ns/net")
        time_queries([sock], "target", 50)
        p50 = report("dockerd 20.10: internal name, 127.0.0.11", time_queries([sock], "target", queries))
        sock.close()
        docker("rm", "-f", "target", "client")
        return p50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--containers", type=int, default=0,
                        help="also run this many real containers on one network and query among them")
    parser.add_argument("--dockerd", action="store_true", help="also measure dockerd's 127.0.0.11")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ours = bench_ours(args.queries, args.namespaces)
    if args.containers:
        bench_containers(args.queries, args.containers)
    if args.dockerd:
        theirs = bench_dockerd(args.queries)
        print(f"  ratio ours/dockerd at p50: {ours['one'] / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
