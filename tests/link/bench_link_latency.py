"""Extra latency the SSH link adds to a `GET /_ping` round trip.

Run: .venv/bin/python -m tests.link.bench_link_latency [--agent] [-n 300]

Starts a real sshd on 127.0.0.1, a far end (the plain test HTTP server, or
the real dockyard-agent with --agent) and a HostSocket, then times a fresh
connection + `GET /_ping` directly on the far-end socket, through the host
socket (unix -> SSH channel -> unix) and with SshLink.request. Reports
medians and p90; compare within one run only (the machine is shared).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

from desktop.host_socket import HostSocket
from desktop.ssh_link import SshLink
from tests.link.sshd_env import start_link_sshd

PING = b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _ping_unix(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(PING)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]


class _KeptAlive:
    """One connection reused for every ping, as the docker CLI does within a command."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))

    def ping(self) -> None:
        self.sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"OK"):
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk

    def close(self) -> None:
        self.sock.close()


def _time(fn, n: int) -> list[float]:
    for _ in range(10):  # warm up: imports, first channel, caches
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def _report(name: str, samples: list[float], base: float | None = None) -> float:
    med = statistics.median(samples)
    p90 = statistics.quantiles(samples, n=10)[-1]
    extra = f"  (+{med - base:.2f} ms over direct)" if base is not None else ""
    print(f"{name:<34} median {med:6.2f} ms   p90 {p90:6.2f} ms{extra}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", action="store_true", help="use the real dockyard-agent as far end")
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        sshd = start_link_sshd(base / "sshd")
        stop_far = None
        if args.agent:
            from tests.support.agent import start_agent

            running = start_agent(base / "agent" / "docker.sock", base / "agent" / "root")
            far_path, stop_far = running.socket, running.stop
        else:
            from tests.link.far_end import FarEnd

            far = FarEnd(base / "far.sock")
            far_path, stop_far = far.path, far.stop
        link = SshLink(sshd.host, sshd.port, "root", sshd.client_key_path, sshd.host_key_line)
        link.connect()
        hs = HostSocket(base / "host" / "docker.sock", link, remote_socket=str(far_path))
        hs.start()
        try:
            print(f"GET /_ping, fresh connection each, n={args.n}, far end: "
                  f"{'dockyard-agent' if args.agent else 'test HTTP server'}")
            direct = _report("direct on the far-end socket", _time(lambda: _ping_unix(far_path), args.n))
            _report("through HostSocket + SSH channel", _time(lambda: _ping_unix(hs.socket_path), args.n), direct)
            kept_direct = _KeptAlive(far_path)
            kept_link = _KeptAlive(hs.socket_path)
            kd = _report("kept-alive, direct", _time(kept_direct.ping, args.n))
            _report("kept-alive, through HostSocket", _time(kept_link.ping, args.n), kd)
            kept_direct.close()
            kept_link.close()
            _report("SshLink.request", _time(
                lambda: link.request("GET", "/_ping", socket_path=str(far_path)), args.n), direct)
            chan_open = _time(lambda: link.open_streamlocal(str(far_path)).close(), args.n)
            _report("streamlocal channel open+close", chan_open)
        finally:
            hs.stop()
            link.close()
            stop_far()
            sshd.stop()


if __name__ == "__main__":
    main()
