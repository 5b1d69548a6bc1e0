"""Fixtures for the real-VM machine tests: libvirt daemons, a guest image, the dockyard CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def libvirt_daemons():
    """virtlogd + libvirtd (no systemd here, REFERENCE.md), started the way the CLI starts them.

    Goes through the backend's own check, so a stale socket file left by a
    killed daemon (seen on CI) is handled here exactly as users get it.
    """
    from desktop.machine.libvirt_backend import SYSTEM_SOCKET, ensure_system_daemons, socket_is_live

    ensure_system_daemons()
    assert socket_is_live(SYSTEM_SOCKET), "libvirtd is not listening"
    yield


@pytest.fixture(scope="session")
def guest_image_env(tmp_path_factory) -> dict[str, str]:
    """Environment for the CLI so that it boots a guest image built from committed code.

    In a clean checkout (CI) the CLI builds the image from the tree itself. While
    other engineers edit vmimage/, runtime/ or guest_agent/ in this shared tree,
    their half-done work must not break these tests: the image is then built
    from a `git archive HEAD` snapshot and pinned with DOCKYARD_GUEST_IMAGE.
    """
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "vmimage", "runtime",
                            "guest_agent"], capture_output=True, text=True).stdout.strip()
    if os.environ.get("DOCKYARD_GUEST_IMAGE"):
        return {}  # the caller pinned an image; make_machine passes the environment on
    if not dirty or os.environ.get("DOCKYARD_TEST_IMAGE_FROM_TREE"):
        return {}
    snap = tmp_path_factory.mktemp("snapshot")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
    out = subprocess.run([sys.executable, "-m", "vmimage", "build"], cwd=snap, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(snap)), timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    image = json.loads(out.stdout[out.stdout.index("{"):])
    return {"DOCKYARD_GUEST_IMAGE": str(Path(image["kernel"]).parent)}


@dataclass
class CliMachine:
    """A machine driven through the real `dockyard` CLI in an isolated DOCKYARD_HOME."""

    name: str
    env: dict[str, str]
    home: Path

    def dockyard(self, *args: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "desktop.cli", "machine", *args, "--name", self.name]
                              if args and args[0] != "ssh" else
                              [sys.executable, "-m", "desktop.cli", "machine", "ssh", "--name", self.name, *args[1:]],
                              capture_output=True, text=True, env=self.env, cwd=REPO, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"dockyard {' '.join(args)}: {proc.stderr}"
        return proc

    def status(self) -> dict:
        return json.loads(self.dockyard("status", "--json").stdout)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.home / 'run' / self.name / 'docker.sock'}"

    @property
    def domain_name(self) -> str:
        """The VM's name in libvirt (or QEMU's -name): the machine name tagged with its home."""
        from desktop.paths import home_id

        return f"dockyard-{self.name}-{home_id(self.home.resolve())}"

    def client(self):
        """docker-py through the machine's host socket (desktop.engine_client, as the desktop app uses)."""
        from desktop.engine_client import client_for_socket

        return client_for_socket(self.home / "run" / self.name / "docker.sock")

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, DOCKER_HOST=self.docker_host))
        if check:
            assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
        return proc


def make_machine(name: str, tmp_path_factory, image_env: dict[str, str]) -> CliMachine:
    from tests.support.guest_vm import IMAGE_CACHE

    home = tmp_path_factory.mktemp(f"dy-{name}")
    # DOCKYARD_HOME relocates the guest image cache too: share the session's
    # (the `guest_image` fixture's) instead of building an image per home.
    env = dict(os.environ, DOCKYARD_HOME=str(home), DOCKYARD_IMAGE_CACHE=str(IMAGE_CACHE), **image_env)
    env.pop("DOCKER_HOST", None)
    return CliMachine(name=name, env=env, home=home)
