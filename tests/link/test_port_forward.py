"""PortForwarder: events from a far-end engine socket, TCP over direct-tcpip via a real sshd.

The sshd runs on this machine, so "the guest's 127.0.0.1" is ours too: the
host side binds 127.0.0.2 (also loopback) to avoid colliding with the
service it forwards to.
"""

from __future__ import annotations

import socket
import threading

import pytest

from desktop.port_forward import PortForwarder, PublishedPort, published_ports
from tests.support.waiting import poll

HOST_BIND = "127.0.0.2"


class EchoService:
    """A 'guest' TCP service: upper-cases everything until EOF, then says BYE."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())
            conn.sendall(b"BYE")

    def close(self) -> None:
        self.sock.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _container(cid: str, tcp: int | None = None, udp: int | None = None) -> dict:
    ports = []
    if tcp:
        ports += [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": tcp, "Type": "tcp"},
                  {"IP": "::", "PrivatePort": 80, "PublicPort": tcp, "Type": "tcp"}]
    if udp:
        ports.append({"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": udp, "Type": "udp"})
    ports.append({"PrivatePort": 9999, "Type": "tcp"})  # exposed, not published
    return {"Id": cid, "Ports": ports}


def _connectable(port: int) -> bool:
    try:
        socket.create_connection((HOST_BIND, port), timeout=2).close()
        return True
    except OSError:
        return False


def _roundtrip(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST_BIND, port), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture
def service():
    svc = EchoService()
    yield svc
    svc.close()


def test_published_ports_parsing():
    got = published_ports([_container("a", tcp=8080, udp=5353), {"Id": "b", "Ports": None}])
    assert got == {PublishedPort("tcp", 8080, 8080), PublishedPort("udp", 5353, 5353)}


def test_forwards_follow_container_events(link, far_end, service):
    udp_calls: list[tuple] = []
    udp_port = _free_udp_port()
    far_end.state.containers = [_container("c1", tcp=service.port, udp=udp_port)]
    fwd = PortForwarder(link, lambda *a: udp_calls.append(a), bind_address=HOST_BIND,
                        socket_path=str(far_end.path))
    fwd.start()
    try:
        # Containers already running when the forwarder starts are picked up.
        poll(lambda: _connectable(service.port), what="the TCP forward")
        assert _roundtrip(service.port, b"hello through ssh") == b"HELLO THROUGH SSHBYE"
        assert udp_calls == [("udp", udp_port, udp_port, True)]

        # The container dies: forwards go away.
        far_end.state.containers = []
        far_end.state.publish({"Type": "container", "Action": "die", "Actor": {"ID": "c1"}})
        poll(lambda: not fwd.active, what="the forwards to be removed")
        assert not _connectable(service.port)
        assert udp_calls[-1] == ("udp", udp_port, udp_port, False)

        # Exec events do not cause a reconcile.
        before = fwd.reconcile_count
        far_end.state.publish({"Type": "container", "Action": "exec_start: sh", "Actor": {"ID": "c1"}})
        far_end.state.containers = [_container("c2", tcp=service.port)]
        far_end.state.publish({"Type": "container", "Action": "start", "Actor": {"ID": "c2"}})
        poll(lambda: _connectable(service.port), what="the forward for c2")
        assert fwd.reconcile_count == before + 1
    finally:
        fwd.stop()
    assert not _connectable(service.port)


def test_resubscribes_after_the_link_dies(link, far_end, service, sshd):
    fwd = PortForwarder(link, bind_address=HOST_BIND, socket_path=str(far_end.path), retry_s=0.1)
    fwd.start()
    try:
        poll(lambda: fwd.reconcile_count == 1, what="the first reconcile")
        old = link.transport()
        sshd.kill_sessions()
        poll(lambda: not old.is_active(), what="the transport to die")
        # The event stream broke; the forwarder reconnects and reconciles again.
        poll(lambda: fwd.reconcile_count >= 2, what="a reconcile after reconnect")
        far_end.state.containers = [_container("c3", tcp=service.port)]
        far_end.state.publish({"Type": "container", "Action": "start", "Actor": {"ID": "c3"}})
        poll(lambda: _connectable(service.port), what="the forward after reconnect")
        assert _roundtrip(service.port, b"x") == b"XBYE"
    finally:
        fwd.stop()


def test_busy_host_port_is_reported_not_fatal(link, far_end, service):
    blocker = socket.create_server((HOST_BIND, service.port))
    far_end.state.containers = [_container("c1", tcp=service.port)]
    fwd = PortForwarder(link, bind_address=HOST_BIND, socket_path=str(far_end.path))
    fwd.start()
    try:
        poll(lambda: fwd.failed, what="the failure to be recorded")
        assert "in use" in fwd.failed[PublishedPort("tcp", service.port, service.port)]
        assert fwd.active == set()
    finally:
        fwd.stop()
        blocker.close()


def test_failing_udp_callback_is_reported_not_fatal(link, far_end, service):
    udp_port = _free_udp_port()
    far_end.state.containers = [_container("c1", tcp=service.port, udp=udp_port)]

    def broken_backend(*_args):
        raise RuntimeError("QEMU monitor unavailable")

    fwd = PortForwarder(link, broken_backend, bind_address=HOST_BIND, socket_path=str(far_end.path))
    fwd.start()
    try:
        poll(lambda: fwd.failed and _connectable(service.port), what="tcp up, udp failure recorded")
        assert "QEMU monitor unavailable" in fwd.failed[PublishedPort("udp", udp_port, udp_port)]
        # The forwarder keeps following events.
        far_end.state.containers = []
        far_end.state.publish({"Type": "container", "Action": "die", "Actor": {"ID": "c1"}})
        poll(lambda: not fwd.active and not fwd.failed, what="the forwards to be removed")
    finally:
        fwd.stop()
