"""SshLink against a real OpenSSH sshd: pinning, channels, exec, reconnect."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading

import paramiko
import pytest

from desktop.ssh_link import ChannelOpenRefused, HostKeyMismatch, LinkError, SshLink
from tests.support.sshd import _keygen
from tests.support.waiting import poll


def test_connect_run_and_exit_status(link):
    assert link.is_connected
    rc, out, err = link.run("echo out; echo err >&2; exit 3")
    assert (rc, out, err) == (3, b"out\n", b"err\n")


def test_run_large_output_on_both_streams(link):
    rc, out, err = link.run("head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2")
    assert rc == 0 and len(out) == 3000000 and len(err) == 3000000


def test_host_key_mismatch_is_refused(sshd, tmp_path):
    other = _keygen(tmp_path / "other_host_key")
    lk = SshLink(sshd.host, sshd.port, "root", sshd.client_key_path, other)
    with pytest.raises(HostKeyMismatch) as info:
        lk.connect(timeout=10)
    assert "not the pinned" in str(info.value)
    assert not lk.is_connected


def test_unknown_client_key_is_refused(sshd, tmp_path):
    _keygen(tmp_path / "stranger")
    lk = SshLink(sshd.host, sshd.port, "root", tmp_path / "stranger", sshd.host_key_line)
    with pytest.raises(LinkError, match="refused key"):
        lk.connect(timeout=10)


def test_request_over_streamlocal(link, far_end):
    status, headers, body = link.request("GET", "/_ping", socket_path=str(far_end.path))
    assert (status, body) == (200, b"OK")
    assert headers["api-version"] == "1.45"
    payload = bytes(range(256)) * 4000
    status, _, body = link.request("POST", "/echo", payload, socket_path=str(far_end.path))
    assert status == 200 and body == payload


def test_large_download_over_streamlocal(link, far_end):
    status, _, body = link.request("GET", f"/big/{64 * 1024 * 1024}", socket_path=str(far_end.path))
    assert status == 200 and len(body) == 64 * 1024 * 1024
    assert body[:512] == bytes(range(256)) * 2


def test_streamlocal_to_missing_socket_is_clear(link, tmp_path):
    with pytest.raises(ChannelOpenRefused, match="nothing.sock"):
        link.open_streamlocal(str(tmp_path / "nothing.sock"))
    # The transport survives a refused channel.
    assert link.is_connected and link.connect_count == 1


def test_open_tcp_reaches_a_guest_port(link):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.sendall(conn.recv(100).upper())
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    chan = link.open_tcp("127.0.0.1", port)
    chan.sendall(b"hello")
    assert chan.recv(100) == b"HELLO"
    chan.close()
    srv.close()


def test_stream_yields_lines_as_they_come(link, far_end):
    lines = link.stream("/events", socket_path=str(far_end.path))
    far_end.state.publish({"Action": "start", "id": "a"})
    assert json.loads(next(lines)) == {"Action": "start", "id": "a"}
    far_end.state.publish({"Action": "die", "id": "a"})
    assert json.loads(next(lines))["Action"] == "die"
    lines.close()


def test_killed_connection_reconnects_transparently(link, sshd, far_end):
    reconnects = []
    link.add_reconnect_listener(lambda: reconnects.append(True))
    assert link.request("GET", "/_ping", socket_path=str(far_end.path))[0] == 200
    old = link.transport()
    # Kill the server side of the TCP connection for real.
    assert sshd.kill_sessions() >= 1
    poll(lambda: not old.is_active(), what="the transport to notice the dead connection")
    status, _, body = link.request("GET", "/_ping", socket_path=str(far_end.path))
    assert (status, body) == (200, b"OK")
    assert link.connect_count == 2 and reconnects == [True]
    assert link.transport() is not old


def test_socket_closed_under_the_transport_reconnects(link, far_end):
    old = link.transport()
    # Close the TCP socket underneath paramiko, as a network drop would.
    old.sock.shutdown(socket.SHUT_RDWR)
    rc, out, _ = link.run("echo back")
    assert (rc, out) == (0, b"back\n")
    assert link.connect_count == 2


def test_closed_link_does_not_reconnect(link):
    link.close()
    with pytest.raises(LinkError, match="closed"):
        link.run("true")


def test_tcp_nodelay_and_window(link):
    t = link.transport()
    assert t.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    # Quick ACKs after each read defeat the 40 ms Nagle/delayed-ACK stall
    # (sshd leaves Nagle on for non-pty channels); measured by bench_link_latency.
    assert type(t.sock).__name__ == "_QuickAckSocket"
    chan = link.open_session()
    assert chan.in_window_size >= 16 * 1024 * 1024
    chan.close()


def test_full_backlog_is_retried_not_failed(link, tmp_path):
    """sshd connects without blocking: a full listen backlog must not fail the open."""
    path = tmp_path / "slow.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(0)  # backlog of one: the next connect gets EAGAIN until we accept
    first = link.open_streamlocal(str(path))
    accepted = []

    def accept_later():
        # Started once the second open has been refused: drain the backlog.
        conn, _ = srv.accept()
        accepted.append(conn)
        conn2, _ = srv.accept()
        accepted.append(conn2)

    refused_before = []
    original = link._open

    def counting_open(opener, what):
        try:
            return original(opener, what)
        except ChannelOpenRefused:
            refused_before.append(True)
            if len(refused_before) == 1:
                threading.Thread(target=accept_later, daemon=True).start()
            raise

    link._open = counting_open
    second = link.open_streamlocal(str(path), retry_s=10)
    assert refused_before, "the backlog never filled: the test proves nothing"
    first.close()
    second.close()
    for conn in accepted:
        conn.close()
    srv.close()


def test_frozen_server_is_detected_and_replaced(sshd):
    """A server that stops answering but keeps TCP up (SIGSTOP): the link reconnects."""
    lk = SshLink(sshd.host, sshd.port, "root", sshd.client_key_path, sshd.host_key_line,
                 channel_timeout=2, probe_timeout=2)
    lk.connect(timeout=10)
    frozen = sshd.session_pids()
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        old = lk.transport()
        rc, out, _ = lk.run("echo fresh")
        assert (rc, out) == (0, b"fresh\n")
        assert lk.transport() is not old and lk.connect_count == 2
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        lk.close()


def test_live_server_keeps_its_transport_when_an_open_fails(link, monkeypatch):
    """An open that fails for another reason must not cut the streams of a live transport.

    A responsive sshd that times out a channel open cannot be produced for
    real, so the failure is injected; the liveness probe runs against the
    real server.
    """
    old = link.transport()
    real = link.transport().open_session

    def failing_open(*args, **kwargs):
        raise paramiko.SSHException("simulated open timeout")

    monkeypatch.setattr(old, "open_session", failing_open)
    with pytest.raises(LinkError, match="simulated open timeout"):
        link.open_session()
    assert link.transport() is old and old.is_active()
    monkeypatch.setattr(old, "open_session", real)
    assert link.run("true")[0] == 0


def test_server_nodelay_session_runs(link, sshd):
    # The pty session that makes sshd set TCP_NODELAY on its socket works
    # against the real sshd (its effect is measured in the VM latency test).
    assert link.request_server_nodelay() == 0
