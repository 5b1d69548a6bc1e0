"""Container networking: the default bridge, per-container namespaces, NAT, published ports.

CONTRACT STUB — owned by the networking work; the engine relies on these names.
"""

from __future__ import annotations

from pathlib import Path

from .models import NetworkAttachment, PortMapping


class NetworkManager:
    """Owns the `dockyard0` bridge, its address pool and the port proxies."""

    def __init__(self, state_dir: Path, bridge: str = "dockyard0",
                 subnet: str = "172.29.0.0/16") -> None:
        raise NotImplementedError

    def setup(self) -> None:
        """Idempotent host setup at engine start: bridge, ip_forward, NAT; drop stale leftovers."""
        raise NotImplementedError

    def attach(self, container_id: str, mode: str, ports: list[PortMapping]) -> NetworkAttachment:
        """Prepare networking for a container about to start.

        mode "bridge": a new net namespace (bind-mounted at a path) with lo up and a veth on
        the bridge, an address from the pool, default route via the bridge; "none": a new
        namespace with only lo; "host": nothing (netns_path None).
        Published ports are listened on at once (host_port 0 picks a free port) and forwarded
        to the container's address; the returned attachment has the real host ports.
        """
        raise NotImplementedError

    def detach(self, container_id: str) -> None:
        """Stop the port forwarders, delete the namespace and veth, release the address. Idempotent."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop every forwarder (engine stopping); leaves the bridge."""
        raise NotImplementedError
