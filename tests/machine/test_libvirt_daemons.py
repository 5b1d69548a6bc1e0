"""The libvirt daemon check must tell a listening socket from a stale socket file."""

from __future__ import annotations

import socket
from pathlib import Path

from desktop.machine.libvirt_backend import socket_is_live


def test_a_listening_socket_is_live(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        assert socket_is_live(path)
    finally:
        server.close()


def test_a_socket_file_left_by_a_dead_daemon_is_not_live(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.close()  # the file stays, as after a killed libvirtd
    assert path.exists()
    assert not socket_is_live(path)


def test_a_missing_socket_is_not_live(tmp_path: Path) -> None:
    assert not socket_is_live(tmp_path / "absent.sock")
