"""The SSH link against the real Dockyard guest under QEMU (TCG): marked `vm`, slow.

Uses the session's bare guest (the `vm` fixture, booted with the kernel
arguments the machine manager appends), pins the host key from its ready message, and
drives the real guest sshd and dockyard-agent through SshLink, HostSocket,
PortForwarder and the clock sync.
"""

from __future__ import annotations

import os
import shlex
import socket
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from desktop.clock_discipline import GuestClock
from desktop.clock_sync import ClockSync
from desktop.host_socket import HostSocket
from desktop.ssh_link import HostKeyMismatch, SshLink
from tests.support import qemu_boot
from tests.support.agent import DOCKER_CLI
from tests.support.sshd import _keygen

pytestmark = pytest.mark.vm

AGENT_SOCKET = "/run/dockyard/docker.sock"
GUEST_PING_SCRIPT = """
import socket, statistics, time
PING = b"GET /_ping HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
fresh, kept = [], []
ka = socket.socket(socket.AF_UNIX)
ka.connect("/run/dockyard/docker.sock")
for _ in range(40):
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/dockyard/docker.sock")
    s.sendall(PING.replace(b"\\r\\n\\r\\n", b"\\r\\nConnection: close\\r\\n\\r\\n"))
    while s.recv(65536):
        pass
    s.close()
    t1 = time.perf_counter()
    ka.sendall(PING)
    data = b""
    while not data.endswith(b"OK"):
        data += ka.recv(65536)
    t2 = time.perf_counter()
    fresh.append((t1 - t0) * 1000)
    kept.append((t2 - t1) * 1000)
print(statistics.median(fresh), statistics.median(kept))
"""


class Guest:
    """A booted guest, its pinned host key and a client key."""

    def __init__(self, booted: qemu_boot.BootedGuest, ready: dict, key_path: Path) -> None:
        self.booted = booted
        self.ready = ready
        self.key_path = key_path
        self.host_key = "ssh-ed25519 " + ready["host_keys"]["ssh-ed25519"]

    def link(self) -> SshLink:
        lk = SshLink("127.0.0.1", self.booted.ssh_port, "root", self.key_path, self.host_key)
        lk.connect(timeout=60)
        return lk


@pytest.fixture(scope="module")
def guest(vm):
    return Guest(vm.guest, vm.ready, vm.key_path)


@pytest.fixture
def link(guest):
    lk = guest.link()
    yield lk
    lk.close()


def test_pinned_key_and_exec(guest, link):
    rc, out, _ = link.run("uname -s; id -u")
    assert (rc, out) == (0, b"Linux\n0\n")


def test_wrong_host_key_is_refused(guest, tmp_path):
    other = _keygen(tmp_path / "other")
    lk = SshLink("127.0.0.1", guest.booted.ssh_port, "root", guest.key_path, other)
    with pytest.raises(HostKeyMismatch):
        lk.connect(timeout=60)


def test_agent_ping_over_streamlocal(link):
    status, headers, body = link.request("GET", "/_ping", socket_path=AGENT_SOCKET)
    assert (status, body) == (200, b"OK")
    assert "api-version" in headers


def test_reconnect_after_the_connection_is_cut(link):
    old = link.transport()
    old.sock.shutdown(socket.SHUT_RDWR)
    status, _, _ = link.request("GET", "/_ping", socket_path=AGENT_SOCKET)
    assert status == 200 and link.connect_count == 2


def test_docker_cli_through_the_host_socket(link, tmp_path):
    hs = HostSocket(tmp_path / "run" / "docker.sock", link)
    hs.start()
    try:
        env = dict(os.environ, DOCKER_HOST=f"unix://{hs.socket_path}", DOCKER_CONFIG=str(tmp_path))
        out = subprocess.run([DOCKER_CLI, "version", "--format", "{{.Server.Os}}"], capture_output=True,
                             text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "linux"
    finally:
        hs.stop()


def test_clock_sync_sets_the_guest_clock(link):
    # Put the guest clock a day off, then let the clock sync fix it for real.
    assert link.run(f"date -u -s @{int(time.time()) - 86400}")[0] == 0
    result = ClockSync(link, check_interval_s=3600).sync_now("test")
    assert result.correction.action == "step" and result.offset_s == pytest.approx(-86400, abs=5)
    with GuestClock(link) as clock:
        after = clock.measure()
    assert abs(after.offset_s) <= 0.005 + after.error_s
    rc, out, _ = link.run("date -u +%s.%N")  # and as a guest process sees it, to a command's start time
    assert rc == 0 and abs(float(out) - time.time()) < 5


def test_ping_latency_report(link, tmp_path):
    """Measures (and prints) the link's /_ping round trip; asserts only correctness.

    Fresh connections (one channel each) and a kept-alive connection (what
    the docker CLI does within a command), against the same pings made
    inside the guest, i.e. the agent's own cost.
    """
    hs = HostSocket(tmp_path / "run" / "docker.sock", link)
    hs.start()
    try:
        link.request_server_nodelay()  # normally in the background after connect: make it certain
        fresh, kept, req = [], [], []
        ping = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.socket(socket.AF_UNIX) as ka:
            ka.settimeout(30)
            ka.connect(str(hs.socket_path))
            for i in range(45):
                t0 = time.perf_counter()
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(30)
                    s.connect(str(hs.socket_path))
                    s.sendall(ping.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                assert data.startswith(b"HTTP/1.1 200")
                t1 = time.perf_counter()
                ka.sendall(ping)
                data = b""
                while not data.endswith(b"OK"):
                    chunk = ka.recv(65536)
                    assert chunk, "keep-alive connection closed"
                    data += chunk
                t2 = time.perf_counter()
                assert link.request("GET", "/_ping", socket_path=AGENT_SOCKET)[0] == 200
                t3 = time.perf_counter()
                if i >= 5:  # warm-up
                    fresh.append((t1 - t0) * 1000)
                    kept.append((t2 - t1) * 1000)
                    req.append((t3 - t2) * 1000)
        t0 = time.perf_counter()
        assert link.run("true")[0] == 0
        exec_ms = (time.perf_counter() - t0) * 1000
        rc, out, err = link.run("python3 -c " + shlex.quote(GUEST_PING_SCRIPT), timeout=120)
        assert rc == 0, err
        guest_fresh, guest_kept = (float(x) for x in out.split())
        med = statistics.median
        print(f"\nVM /_ping medians: fresh connection via host socket {med(fresh):.1f} ms "
              f"(in guest {guest_fresh:.1f}); kept-alive {med(kept):.1f} ms (in guest {guest_kept:.1f}); "
              f"SshLink.request {med(req):.1f} ms; exec 'true' {exec_ms:.0f} ms")
    finally:
        hs.stop()


def test_open_tcp_to_a_guest_service(link):
    # A one-shot TCP service in the guest on its loopback (busybox-free: python3 is in the image).
    server = ("import socket;s=socket.create_server(('127.0.0.1',47123));"
              "c,_=s.accept();c.sendall(c.recv(100).upper());c.close()")
    chan = link.open_session()
    chan.exec_command("python3 -c " + shlex.quote(server))
    deadline = time.monotonic() + 60
    while True:
        try:
            tcp = link.open_tcp("127.0.0.1", 47123)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the guest's python3 is still starting (TCG)
    tcp.sendall(b"through direct-tcpip")
    assert tcp.recv(100) == b"THROUGH DIRECT-TCPIP"
    tcp.close()
    chan.close()


def test_sftp_share_in_the_guest(link, tmp_path):
    """The reverse-SFTP fallback mount in the real guest kernel (FUSE).

    The guest image does not ship sshfs yet, so this test side-loads the
    host's Debian sshfs and the libraries the guest lacks (same Debian
    release and architecture) into /tmp over SFTP.
    """
    from desktop.sftp_share import SftpShare

    libs = ["/lib/x86_64-linux-gnu/libfuse3.so.3", "/lib/x86_64-linux-gnu/libglib-2.0.so.0",
            "/lib/x86_64-linux-gnu/libpcre2-8.so.0"]
    side = "/tmp/dy-sshfs"
    assert link.run(f"mkdir -p {side}")[0] == 0
    chan = link.open_session()
    chan.invoke_subsystem("sftp")
    import paramiko

    sftp = paramiko.SFTPClient(chan)
    for local in ["/usr/bin/sshfs", *libs]:
        sftp.put(local, f"{side}/{Path(local).name}")
    sftp.chmod(f"{side}/sshfs", 0o755)
    sftp.close()

    host = tmp_path / "share"
    host.mkdir()
    (host / "hello.txt").write_text("from the host\n")
    guest_path = "/mnt/dy-share"
    share = SftpShare(link, host, guest_path, sshfs_command=f"env LD_LIBRARY_PATH={side} {side}/sshfs",
                      mount_timeout_s=120)
    share.start()
    try:
        rc, out, err = link.run(f"cat {guest_path}/hello.txt && echo from the guest > {guest_path}/back.txt")
        assert rc == 0, err
        assert out == b"from the host\n"
        assert (host / "back.txt").read_text() == "from the guest\n"
    finally:
        share.stop()
    assert link.run(f"mountpoint -q {guest_path}")[0] != 0


def _reverse_forward(link: SshLink, port: int) -> None:
    """Guest 127.0.0.1:port -> host 127.0.0.1:port over the link (tcpip-forward)."""
    from desktop.host_socket import ChannelPipe

    def handler(chan, _origin, _server) -> None:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=30)
        upstream.settimeout(None)  # the pipe blocks on reads for as long as the stream lives
        ChannelPipe(upstream, chan).start()

    link.transport().request_port_forward("127.0.0.1", port, handler)


def test_published_ports_follow_the_real_engine(link, tmp_path, test_images):
    from desktop.port_forward import PortForwarder, PublishedPort

    hs = HostSocket(tmp_path / "run" / "docker.sock", link)
    hs.start()
    udp_calls: list[tuple] = []
    fwd = PortForwarder(link, lambda *a: udp_calls.append(a))
    fwd.start()
    env = dict(os.environ, DOCKER_HOST=f"unix://{hs.socket_path}", DOCKER_CONFIG=str(tmp_path))
    tcp_port, udp_port = qemu_boot.free_tcp_port(), qemu_boot.free_tcp_port()

    def docker(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([DOCKER_CLI, *args], capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr
        return out

    # The test registry listens on the host's 127.0.0.1; make the same
    # address work in the guest with an SSH reverse forward (independent of
    # the guest's loopback-registry mapping).
    registry_port = int(test_images["busybox"].split("/")[0].rsplit(":", 1)[1])
    _reverse_forward(link, registry_port)
    try:
        # Containers inherit the engine's open-files limit, which the guest raises to the
        # kernel's maximum, as Docker Desktop's and Debian's dockerd run with it.
        nofile = docker("run", "--rm", test_images["busybox"], "sh", "-c", "ulimit -Sn; ulimit -Hn").stdout.split()
        assert nofile == ["1048576", "1048576"]
        docker("run", "-d", "--name", "web", "-p", f"{tcp_port}:8080", "-p", f"{udp_port}:53/udp",
               test_images["busybox"], "httpd", "-f", "-p", "8080", "-h", "/etc")
        deadline = time.monotonic() + 120
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{tcp_port}/passwd", timeout=10).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the forwarder learns of the port from /events
        assert b"root:x:0:0" in body
        assert ("udp", udp_port, udp_port, True) in udp_calls
        docker("rm", "-f", "web")
        deadline = time.monotonic() + 60
        while PublishedPort("tcp", tcp_port, tcp_port) in fwd.active:
            assert time.monotonic() < deadline, "the forward outlived its container"
            time.sleep(0.1)
        assert udp_calls[-1] == ("udp", udp_port, udp_port, False)
    finally:
        subprocess.run([DOCKER_CLI, "rm", "-f", "web"], capture_output=True, env=env, timeout=120)
        fwd.stop()
        hs.stop()
