"""Run `dockyard-agent serve` as a real subprocess for tests, and talk to it.

`start_agent(socket, root)` starts the agent from the project's venv, waits
until `GET /_ping` answers (polling with a deadline) and returns a
`RunningAgent` that runs the real docker CLI or docker-py against it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The docker CLI on PATH (Debian's docker.io puts it at /usr/bin/docker; the set-up installs it).
DOCKER_CLI = os.environ.get("DOCKYARD_TEST_DOCKER") or shutil.which("docker") or "docker"
START_TIMEOUT = 30.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (tests talk raw HTTP to the agent with it)."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def http_request(sock_path: str | Path, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    conn = UnixHTTPConnection(sock_path, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def _agent_executable() -> str:
    # The tests run in the project's venv, so its console script sits next to the interpreter.
    candidate = Path(sys.executable).parent / "dockyard-agent"
    if candidate.exists():
        return str(candidate)
    return str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "dockyard-agent")


@dataclass
class RunningAgent:
    """A live agent process, its socket and root, and helpers to drive it."""

    process: subprocess.Popen
    socket: Path
    root: Path
    log_path: Path
    docker_config: Path
    _clients: list[Any] = field(default_factory=list)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def docker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DOCKER_HOST=self.docker_host, DOCKER_CONFIG=str(self.docker_config),
                   DOCKER_CLI_HINTS="false")
        env.pop("DOCKER_CONTEXT", None)
        env.pop("DOCKER_TLS_VERIFY", None)
        return env

    def docker(self, *args: str, input: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the real docker CLI against this agent; output captured as text."""
        return subprocess.run([DOCKER_CLI, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, env=self.docker_env())

    def docker_through(self, socket_path: Path, *args: str, input: str | None = None,
                       timeout: float = 120) -> subprocess.CompletedProcess:
        """The docker CLI reaching this agent through another socket (a host socket over a link)."""
        env = dict(self.docker_env(), DOCKER_HOST=f"unix://{socket_path}")
        return subprocess.run([DOCKER_CLI, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, env=env)

    def client(self):
        """A docker-py client bound to this agent."""
        import docker

        c = docker.DockerClient(base_url=self.docker_host, timeout=120)
        self._clients.append(c)
        return c

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.socket, method, path, body, headers)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait for exit, and require exit code 0."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"agent did not exit within {timeout}s of SIGTERM\n"
                                     f"{self.log_text()[-4000:]}") from None
        code = self.process.returncode
        if code != 0:
            raise AssertionError(f"agent exited with {code}\n{self.log_text()[-4000:]}")
        return code


def wait_for_ping(sock_path: Path, process: subprocess.Popen, log_path: Path,
                  timeout: float = START_TIMEOUT) -> None:
    """Poll GET /_ping until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockyard-agent exited with {process.returncode} during start:\n"
                               f"{log_path.read_text(errors='replace')[-4000:]}")
        if sock_path.exists():
            try:
                status, _, _ = http_request(sock_path, "GET", "/_ping", timeout=5)
                if status == 200:
                    return
            except OSError as err:
                last_error = err
        time.sleep(0.05)  # polling interval of a condition with a deadline, not synchronisation
    process.kill()
    process.wait()
    raise RuntimeError(f"dockyard-agent did not answer /_ping within {timeout}s ({last_error}):\n"
                       f"{log_path.read_text(errors='replace')[-4000:]}")


def start_agent(socket: Path, root: Path, extra_args: Sequence[str] = (),
                log_level: str = "debug") -> RunningAgent:
    """Start `dockyard-agent serve --socket SOCKET --root ROOT` and wait until it answers."""
    socket, root = Path(socket), Path(root)
    # Log and CLI config live next to the root: the socket's directory is the agent's to create.
    base = root.parent
    base.mkdir(parents=True, exist_ok=True)
    log_path = base / f"agent-{root.name}.log"
    docker_config = base / f"docker-config-{root.name}"
    docker_config.mkdir(exist_ok=True)
    (docker_config / "config.json").write_text(json.dumps({"auths": {}}))
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [_agent_executable(), "serve", "--socket", str(socket), "--root", str(root),
             "--log-level", log_level, *extra_args],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for_ping(socket, process, log_path)
    return RunningAgent(process=process, socket=socket, root=root, log_path=log_path,
                        docker_config=docker_config)


@contextlib.contextmanager
def agent_in(base: Path) -> Iterator[RunningAgent]:
    """An agent with its socket and root under `base`, stopped on exit if it still runs."""
    running = start_agent(socket=base / "docker.sock", root=base / "root")
    try:
        yield running
    finally:
        if running.alive():
            running.stop()
