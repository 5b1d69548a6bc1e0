"""HostSocket: a host unix socket piped to a guest socket through a real sshd."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading

import pytest

from desktop.host_socket import WARM_CHANNELS, HostSocket, HostSocketError
from desktop.ssh_link import LinkError
from tests.support.waiting import poll


@pytest.fixture
def host_socket(link, far_end, tmp_path):
    hs = HostSocket(tmp_path / "run" / "docker.sock", link, remote_socket=str(far_end.path))
    hs.start()
    yield hs
    hs.stop()


def _connect(hs: HostSocket) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(hs.socket_path))
    return s


def _read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF before {marker!r}; got {data!r}")
        data += chunk
    return data


def _recv_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def _http(hs: HostSocket, raw: bytes) -> bytes:
    with _connect(hs) as s:
        s.sendall(raw)
        return _recv_all(s)


def test_socket_and_directory_are_private(host_socket):
    assert stat.S_IMODE(os.stat(host_socket.socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(host_socket.socket_path.parent).st_mode) == 0o700


def test_plain_request_is_piped(host_socket):
    reply = _http(host_socket, b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\nOK")


def test_hijacked_stream_with_half_close(host_socket):
    with _connect(host_socket) as s:
        s.sendall(b"POST /hijack HTTP/1.1\r\nHost: x\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n")
        head = _read_until(s, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        # Interactive: each write comes back before the next is sent.
        for word in (b"one ", b"two ", b"three"):
            s.sendall(word)
            got = b""
            while len(got) < len(word):
                chunk = s.recv(65536)
                assert chunk, "EOF in the middle of the interactive exchange"
                got += chunk
            assert got == word
        # Half-close: our EOF must reach the far end, its answer must still reach us.
        s.shutdown(socket.SHUT_WR)
        rest = _recv_all(s)
        assert rest.endswith(b"EOF-SEEN:13")
    poll(lambda: host_socket.active_connections == 0, what="the pipe to be released")


def test_many_concurrent_connections(host_socket):
    payload = os.urandom(256 * 1024)
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            body = payload[i:]
            reply = _http(host_socket, b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            if not reply.endswith(b"\r\n\r\n" + body):
                errors.append(f"worker {i}: wrong body ({len(reply)} bytes)")
        except Exception as exc:  # collected and asserted below
            errors.append(f"worker {i}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert host_socket.link.connect_count == 1  # one transport, many channels


def test_docker_cli_through_the_socket(host_socket):
    out = subprocess.run(
        ["docker", "-H", f"unix://{host_socket.socket_path}", "version", "--format", "{{.Server.Version}}"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "far-end-1.0"


def test_connections_take_channels_opened_ahead(host_socket, monkeypatch):
    assert host_socket.warm_channels == 0   # none at start: the guest may still be booting
    assert _http(host_socket, b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"OK")
    poll(lambda: host_socket.warm_channels == WARM_CHANNELS, what="the channels opened ahead")

    def refuse(*_args, **_kwargs):
        raise LinkError("no new channel in this test")

    monkeypatch.setattr(host_socket.link, "open_streamlocal", refuse)
    for _ in range(WARM_CHANNELS):   # served without opening a channel
        assert _http(host_socket, b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"OK")
    reply = _http(host_socket, b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 503"), reply


def test_survives_a_killed_ssh_connection(host_socket, sshd):
    assert _http(host_socket, b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"OK")
    # The channels opened ahead die with the connection: none may be handed out.
    poll(lambda: host_socket.warm_channels == WARM_CHANNELS, what="the channels opened ahead")
    old = host_socket.link.transport()
    sshd.kill_sessions()
    poll(lambda: not old.is_active(), what="the transport to die")
    assert _http(host_socket, b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"OK")
    assert host_socket.link.connect_count == 2


def test_unavailable_engine_answers_503(host_socket):
    host_socket.link.close()
    reply = _http(host_socket, b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 503") and b"unavailable" in reply


def test_stop_cuts_connections_and_removes_socket(host_socket):
    s = _connect(host_socket)
    s.sendall(b"POST /hijack HTTP/1.1\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n")
    _read_until(s, b"\r\n\r\n")
    host_socket.stop()
    assert _recv_all(s) == b""
    s.close()
    assert not host_socket.socket_path.exists()


def test_refuses_to_replace_a_live_socket(host_socket, link):
    other = HostSocket(host_socket.socket_path, link)
    with pytest.raises(HostSocketError, match="already serves"):
        other.start()


def test_replaces_a_stale_socket(link, far_end, tmp_path):
    path = tmp_path / "d" / "docker.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    hs = HostSocket(path, link, remote_socket=str(far_end.path))
    hs.start()
    try:
        assert _http(hs, b"GET /_ping HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"OK")
    finally:
        hs.stop()


def test_connection_opening_while_stopping_does_not_deadlock(link, far_end, tmp_path, monkeypatch):
    """A channel that finishes opening after stop() began must be dropped, not hang stop().

    The open is held back by a gate (the real open follows) to make the
    race deterministic.
    """
    hs = HostSocket(tmp_path / "r" / "docker.sock", link, remote_socket=str(far_end.path))
    hs.start()
    gate, entered = threading.Event(), threading.Event()
    real_open = link.open_streamlocal

    def gated_open(path, *args, **kwargs):
        entered.set()
        gate.wait(30)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(link, "open_streamlocal", gated_open)
    client = _connect(hs)
    assert entered.wait(30)
    stopper = threading.Thread(target=hs.stop)
    stopper.start()
    poll(hs._stopping.is_set, what="stop() to begin")
    gate.set()
    stopper.join(30)
    assert not stopper.is_alive(), "stop() deadlocked with the late connection"
    assert _recv_all(client) == b""
    client.close()
    # The late pipe's clean-up must have released the bookkeeping lock.
    reader = threading.Thread(target=lambda: hs.active_connections)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "the late connection's clean-up deadlocked on the pipes lock"
