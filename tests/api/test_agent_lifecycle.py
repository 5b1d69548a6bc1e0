"""The agent process itself: socket handling, SIGTERM shutdown, and state across restarts."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import uuid
from pathlib import Path

from tests.support.agent import http_request, start_agent
from tests.support.waiting import poll


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
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", "container process survived shutdown"

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


class _WatchedEvent(threading.Event):
    """An Event that tells when somebody started waiting on it while it was clear."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_on = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set():
            self.waited_on.set()
        return super().wait(timeout)


class _GatedNetwork:
    """The real NetworkManager whose setup() only runs once the test opens `gate`."""

    def __init__(self, real) -> None:
        self._real = real
        self.gate = threading.Event()

    def setup(self) -> None:
        assert self.gate.wait(60), "test never opened the network gate"
        self._real.setup()

    def __getattr__(self, name: str):
        return getattr(self._real, name)


def test_start_up_serves_ping_at_once_and_container_requests_wait_for_recovery_and_network(
        tmp_path, test_images, serve_router):
    """The agent's start-up order, in process so each phase can be held open without sleeps:
    _ping answers while network set-up has not run; a container start issued during state
    recovery waits for it (finding the recovered container), then for the network, then works."""
    from guest_agent.app import build_router
    from guest_agent.cli import StartupRouter
    from guest_agent.http_server import Router
    from guest_agent.routes_system import register_startup_routes
    from runtime.engine.facade import Engine
    from runtime.network.manager import NetworkManager

    root = tmp_path / "root"
    name = f"recovered-{uuid.uuid4().hex[:6]}"
    first = Engine(root)
    first.start()
    try:
        first.images.pull(test_images["busybox"])
        cid = first.containers.create(name, {"Image": test_images["busybox"], "Cmd": ["sleep", "1000"],
                                            "StopTimeout": 0}, {"NetworkMode": "none"}).id
    finally:
        first.shutdown()

    network = _GatedNetwork(NetworkManager(root / "network"))
    engine = Engine(root, network=network)
    recovery_gate = threading.Event()
    real_load_all = engine.store.load_all

    def gated_load_all():
        assert recovery_gate.wait(60), "test never opened the recovery gate"
        return real_load_all()

    engine.store.load_all = gated_load_all
    engine.registry._recovered = recovered = _WatchedEvent()
    engine.networks._ready = network_ready = _WatchedEvent()

    early = Router()
    register_startup_routes(early)
    router = StartupRouter(early)
    sock = serve_router(router)
    try:
        engine.start(background=True)
        router.set_full(build_router(engine, str(root)))
        # Neither recovery nor network set-up has run: _ping and version answer anyway.
        assert http_request(sock, "GET", "/_ping")[0] == 200
        assert http_request(sock, "HEAD", "/_ping")[0] == 200
        status, _, body = http_request(sock, "GET", "/v1.45/version")
        assert status == 200 and json.loads(body)["ApiVersion"] == "1.45"

        result: dict[str, int] = {}
        starter = threading.Thread(
            target=lambda: result.update(status=http_request(sock, "POST", f"/containers/{name}/start",
                                                             timeout=60)[0]))
        starter.start()
        assert recovered.waited_on.wait(30), "the start request did not wait for recovery"
        assert starter.is_alive() and "status" not in result
        recovery_gate.set()
        # Recovered: the container is known (not 404) and the start now waits for the network.
        assert network_ready.waited_on.wait(30), "the start request did not wait for the network"
        status, _, body = http_request(sock, "GET", f"/containers/{name}/json")
        assert status == 200 and json.loads(body)["State"]["Status"] == "created"
        assert starter.is_alive() and "status" not in result
        network.gate.set()
        starter.join(60)
        assert result.get("status") == 204, result
        assert engine.containers.inspect(cid).state.running
    finally:
        recovery_gate.set()
        network.gate.set()
        try:
            engine.containers.remove(cid, force=True)
        finally:
            engine.shutdown()


def test_requests_waiting_for_an_engine_that_failed_to_start_get_500(serve_router):
    from guest_agent.cli import StartupRouter
    from guest_agent.http_server import Router
    from guest_agent.routes_system import register_startup_routes

    early = Router()
    register_startup_routes(early)
    router = StartupRouter(early)
    sock = serve_router(router)
    result: dict[str, tuple] = {}
    waiter = threading.Thread(target=lambda: result.update(r=http_request(sock, "GET", "/containers/json")))
    waiter.start()
    assert http_request(sock, "GET", "/_ping")[0] == 200
    router.fail("cannot load state")
    waiter.join(30)
    status, _, body = result["r"]
    assert status == 500 and "cannot load state" in json.loads(body)["message"]
