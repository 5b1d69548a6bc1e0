"""The host's engine clients: docker-py over the socket, and the CLI's own boot-critical `_ping`."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from desktop.engine_client import client_for_socket
from desktop.http_over_channel import ping, unix_request


def test_docker_py_and_the_boot_ping_reach_the_same_engine(agent):
    client = client_for_socket(agent.socket)
    try:
        assert client.ping() is True
        assert client.version()["Os"] == "linux"
    finally:
        client.close()
    assert ping(agent.socket) is None
    status, body = unix_request(agent.socket, "GET", "/_ping")
    assert (status, body) == (200, b"OK")


class OneReplyServer:
    """A unix socket that answers every connection with the same raw bytes."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


def test_ping_says_why_the_engine_does_not_answer(tmp_path):
    missing = tmp_path / "missing.sock"
    assert ping(missing) == f"{missing}: No such file or directory"
    cases = [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom", "/_ping answered 500: boom"),
        (b"SSH-2.0-OpenSSH\r\n", "bad HTTP reply (bad HTTP status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", None),
    ]
    for i, (reply, expected) in enumerate(cases):
        path = tmp_path / f"s{i}.sock"
        server = OneReplyServer(path, reply)
        try:
            reason = ping(path, timeout=10)
        finally:
            server.close()
        if expected is None:
            assert reason is None
        else:
            assert reason is not None and expected in reason, reason


def _in_fresh_python(code: str) -> str:
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                          env=dict(os.environ, PYTHONPATH=str(repo)), check=True)
    return proc.stdout.strip().splitlines()[-1]


def test_a_socket_client_leaves_paramiko_out_and_importable(agent):
    # paramiko and cryptography are 28 MB of the desktop app's resident memory.
    code = ("import sys\nfrom pathlib import Path\nfrom desktop.engine_client import client_for_socket\n"
            f"c = client_for_socket(Path({str(agent.socket)!r}))\nassert c.ping()\n"
            "loaded = 'paramiko' in sys.modules\nimport paramiko\nprint(loaded, paramiko.Transport.__name__)")
    assert _in_fresh_python(code) == "False Transport"


def test_an_ssh_host_still_gets_docker_pys_ssh_transport():
    code = ("import sys\nfrom desktop.engine_client import load_docker\nload_docker(ssh=True)\n"
            "import docker.api.client as c\nprint(hasattr(c, 'SSHHTTPAdapter'))")
    assert _in_fresh_python(code) == "True"
