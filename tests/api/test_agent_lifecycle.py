"""The agent process itself: socket handling, SIGTERM shutdown, and state across restarts."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import uuid

from tests.support.agent import start_agent

from .waiting import poll


def _inspect(agent, name: str) -> dict:
    result = agent.docker("inspect", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def test_socket_is_0600_in_a_0700_parent_and_stale_sockets_are_replaced(tmp_path):
    sock_dir = tmp_path / "run" / "dockyard"
    sock = sock_dir / "docker.sock"
    sock_dir.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # a socket file nobody listens on, as a crashed agent leaves it
    agent = start_agent(sock, tmp_path / "root")
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert agent.request("GET", "/_ping")[0] == 200
        # A second agent on a live socket refuses instead of stealing it.
        second = subprocess.run([str(agent.process.args[0]), "serve", "--socket", str(sock),
                                 "--root", str(tmp_path / "root2")],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "already serving" in second.stderr
    finally:
        agent.stop()
    assert not sock.exists()


def test_parent_directory_is_created_private(tmp_path):
    sock = tmp_path / "new" / "dir" / "docker.sock"
    agent = start_agent(sock, tmp_path / "root")
    try:
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    finally:
        agent.stop()


def test_ping_headers(agent):
    status, headers, body = agent.request("HEAD", "/_ping")
    assert status == 200 and body == b""
    assert headers["api-version"] == "1.45"
    assert headers["docker-experimental"] == "false"
    assert headers["ostype"] == "linux"
    assert headers["builder-version"] == "1"
    assert "no-cache" in headers["cache-control"]
    status, _, body = agent.request("GET", "/v1.45/_ping")
    assert status == 200 and body == b"OK"


def test_sigterm_stops_containers_and_a_new_agent_restores_state(tmp_path, test_images):
    sock, root = tmp_path / "life.sock", tmp_path / "root"
    busybox = test_images["busybox"]
    plain, always = f"plain-{uuid.uuid4().hex[:6]}", f"always-{uuid.uuid4().hex[:6]}"
    agent = start_agent(sock, root)
    try:
        for name, extra in ((plain, []), (always, ["--restart", "always"])):
            result = agent.docker("run", "-d", "--name", name, *extra, busybox, "sleep", "1000",
                                  timeout=180)
            assert result.returncode == 0, result.stderr
        pid = _inspect(agent, plain)["State"]["Pid"]
        assert pid > 0 and os.path.exists(f"/proc/{pid}")
    except BaseException:
        agent.stop()
        raise
    assert agent.stop() == 0
    assert not os.path.exists(f"/proc/{pid}") or \
        open(f"/proc/{pid}/stat").read().split()[2] == "Z", "container process survived shutdown"

    agent = start_agent(sock, root)
    try:
        state = _inspect(agent, plain)["State"]
        assert state["Status"] == "exited" and not state["Running"]
        poll(lambda: _inspect(agent, always)["State"]["Running"], timeout=60,
             what="restart-always container running again")
        result = agent.docker("rm", "-f", plain, always)
        assert result.returncode == 0, result.stderr
    finally:
        agent.stop()
