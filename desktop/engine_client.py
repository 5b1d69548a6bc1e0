"""The host's Docker API client: docker-py over a machine's host socket.

The `dockyard` CLI, the tests and the coming desktop app talk to the engine
through this, as any Docker tool would. The only exceptions are in
desktop.http_over_channel (the SSH link's own calls, and the CLI's
boot-critical `_ping`, where importing docker-py would cost ~0.37 s).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker


def load_docker(ssh: bool = False) -> ModuleType:
    """docker-py, imported without its ssh:// transport unless `ssh` is asked for.

    docker-py imports paramiko (and with it cryptography) whenever it is installed,
    only to offer ssh:// hosts: 28 MB of resident memory in a process that talks to
    a unix socket, a quarter of the desktop app's budget. A `None` in sys.modules is
    Python's own way to make an optional import fail; docker-py then leaves the ssh
    adapter out, and paramiko stays importable for our own SSH link afterwards.
    """
    if "docker" in sys.modules or ssh or "paramiko" in sys.modules:
        import docker

        return docker
    sys.modules["paramiko"] = None  # type: ignore[assignment]  # makes `import paramiko` raise ImportError
    try:
        import docker

        return docker
    finally:
        del sys.modules["paramiko"]


def client_for_socket(socket_path: Path, timeout: float = 60.0) -> docker.DockerClient:
    """docker-py on the engine behind `socket_path` (imports docker-py on first use)."""
    docker = load_docker()
    return docker.DockerClient(base_url=f"unix://{socket_path}", timeout=int(timeout))


def machine_client(name: str = "default", timeout: float = 60.0) -> docker.DockerClient:
    """docker-py on machine `name` of the current Dockyard home (it must be running)."""
    from desktop.machine.instance import Machine

    return client_for_socket(Machine(name).host_socket, timeout)


def client_for_host(host: str | None, machine: str = "default", timeout: float = 600.0) -> docker.DockerClient:
    """docker-py on `host` (a DOCKER_HOST URL), else $DOCKER_HOST, else machine `machine`'s socket."""
    import os

    from runtime.errors import RuntimeFailure

    url = host or os.environ.get("DOCKER_HOST")
    docker = load_docker(ssh=bool(url and url.startswith("ssh://")))
    try:
        if url:
            return docker.DockerClient(base_url=url, timeout=int(timeout))
        return machine_client(machine, timeout)
    except docker.errors.DockerException as err:
        where = url or f"machine {machine!r} (is it running? `dockyard machine start`)"
        raise RuntimeFailure(f"cannot reach the engine at {where}: {err}") from None
