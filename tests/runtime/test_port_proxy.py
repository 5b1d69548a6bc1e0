"""The userland port forwarders, against real TCP/UDP servers on 127.0.0.1 (no namespaces needed)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from runtime.errors import Conflict
from runtime.network.port_proxy import PortProxy
from tests.support.processes import free_port


@pytest.fixture
def proxy():
    p = PortProxy(udp_idle_timeout=0.3)
    yield p
    p.close()



class TcpEcho:
    """A threaded TCP server that echoes everything until the client half-closes, then closes."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_tcp_roundtrip_with_large_payload_and_half_close(proxy):
    echo = TcpEcho()
    try:
        fwd = proxy.add("c1", "tcp", "127.0.0.1", 0, "127.0.0.1", echo.port)
        assert fwd.host_port != 0
        payload = bytes(range(256)) * 8192  # 2 MiB: exercises the buffers and backpressure
        with socket.create_connection(("127.0.0.1", fwd.host_port), timeout=10) as client:
            sender = threading.Thread(target=lambda: (client.sendall(payload), client.shutdown(socket.SHUT_WR)))
            sender.start()
            received = _recv_all(client)
            sender.join()
        assert received == payload
    finally:
        echo.close()


def test_client_accepted_before_server_listens_is_closed_when_refused(proxy):
    port = free_port()
    fwd = proxy.add("c1", "tcp", "127.0.0.1", 0, "127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", fwd.host_port), timeout=10) as client:
        # Accepted by the proxy; the refused backend connection makes it hang up.
        try:
            assert client.recv(10) == b""
        except ConnectionResetError:
            pass
    echo = TcpEcho(port)
    try:
        with socket.create_connection(("127.0.0.1", fwd.host_port), timeout=10) as client:
            client.sendall(b"hello")
            client.shutdown(socket.SHUT_WR)
            assert _recv_all(client) == b"hello"
    finally:
        echo.close()


def test_taken_port_raises_docker_conflict(proxy):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Conflict) as err:
            proxy.add("c1", "tcp", "", port, "127.0.0.1", 80)
        assert str(err.value) == f"Bind for 0.0.0.0:{port} failed: port is already allocated"


def test_remove_frees_the_port_and_drops_connections(proxy):
    echo = TcpEcho()
    try:
        fwd = proxy.add("c1", "tcp", "127.0.0.1", 0, "127.0.0.1", echo.port)
        client = socket.create_connection(("127.0.0.1", fwd.host_port), timeout=10)
        client.sendall(b"x")
        assert client.recv(1) == b"x"
        proxy.remove("c1")
        proxy.remove("c1")  # idempotent
        try:
            assert client.recv(1) == b""
        except ConnectionResetError:
            pass
        client.close()
        assert proxy.forwards("c1") == []
        again = proxy.add("c2", "tcp", "127.0.0.1", fwd.host_port, "127.0.0.1", echo.port)
        assert again.host_port == fwd.host_port
    finally:
        echo.close()


def test_udp_echo_per_client_sessions_expire_when_idle(proxy):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                data, addr = server.recvfrom(65535)
            except TimeoutError:
                continue
            server.sendto(b"echo:" + data, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        fwd = proxy.add("u1", "udp", "127.0.0.1", 0, "127.0.0.1", server.getsockname()[1])
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        for i, client in enumerate(clients):
            client.settimeout(10)
            client.sendto(f"hi{i}".encode(), ("127.0.0.1", fwd.host_port))
        for i, client in enumerate(clients):
            assert client.recvfrom(100)[0] == f"echo:hi{i}".encode()
        listener = proxy._listeners["u1"][0]
        assert len(listener.sessions) == 2
        deadline = time.monotonic() + 10
        while listener.sessions and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the idle expiry, not synchronising on it
        assert not listener.sessions
        clients[0].sendto(b"again", ("127.0.0.1", fwd.host_port))
        assert clients[0].recvfrom(100)[0] == b"echo:again"
        for client in clients:
            client.close()
    finally:
        stop.set()
        thread.join()
        server.close()


def test_proxy_is_usable_again_after_close(proxy):
    echo = TcpEcho()
    try:
        proxy.add("c1", "tcp", "127.0.0.1", 0, "127.0.0.1", echo.port)
        proxy.close()
        assert proxy.forwards("c1") == []
        fwd = proxy.add("c1", "tcp", "127.0.0.1", 0, "127.0.0.1", echo.port)
        with socket.create_connection(("127.0.0.1", fwd.host_port), timeout=10) as client:
            client.sendall(b"again")
            client.shutdown(socket.SHUT_WR)
            assert _recv_all(client) == b"again"
    finally:
        echo.close()
