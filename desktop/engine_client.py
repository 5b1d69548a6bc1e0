"""The host's Docker API client: docker-py over a machine's host socket.

The `dockyard` CLI, the tests and the coming desktop app talk to the engine
through this, as any Docker tool would. The only exceptions are in
desktop.http_over_channel (the SSH link's own calls, and the CLI's
boot-critical `_ping`, where importing docker-py would cost ~0.37 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker


def client_for_socket(socket_path: Path, timeout: float = 60.0) -> docker.DockerClient:
    """docker-py on the engine behind `socket_path` (imports docker-py on first use)."""
    import docker

    return docker.DockerClient(base_url=f"unix://{socket_path}", timeout=int(timeout))


def machine_client(name: str = "default", timeout: float = 60.0) -> docker.DockerClient:
    """docker-py on machine `name` of the current Dockyard home (it must be running)."""
    from desktop.machine.instance import Machine

    return client_for_socket(Machine(name).host_socket, timeout)


def client_for_host(host: str | None, machine: str = "default", timeout: float = 600.0) -> docker.DockerClient:
    """docker-py on `host` (a DOCKER_HOST URL), else $DOCKER_HOST, else machine `machine`'s socket."""
    import os

    import docker

    from runtime.errors import RuntimeFailure

    url = host or os.environ.get("DOCKER_HOST")
    try:
        if url:
            return docker.DockerClient(base_url=url, timeout=int(timeout))
        return machine_client(machine, timeout)
    except docker.errors.DockerException as err:
        where = url or f"machine {machine!r} (is it running? `dockyard machine start`)"
        raise RuntimeFailure(f"cannot reach the engine at {where}: {err}") from None
