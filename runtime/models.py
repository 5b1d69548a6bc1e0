"""The engine's records: containers, their state, execs, volumes, events.

Containers keep Docker's own `Config` and `HostConfig` JSON (as dockerd keeps
them in config.v2.json), so inspect shows exactly what was asked for, with the
image's defaults merged in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ContainerState:
    """Docker's State object. `status`: created|running|paused|restarting|removing|exited|dead."""

    status: str = "created"
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    # Docker's State.Health {Status, FailingStreak, Log}; None when the container has no probe.
    health: dict[str, Any] | None = None


@dataclass
class PortMapping:
    """One published port: container_port/protocol on host_ip:host_port."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = "0.0.0.0"
    host_port: int = 0  # 0 = pick a free one


@dataclass
class NetworkAttachment:
    """How a container is wired: its namespace, address and published ports."""

    mode: str                       # "bridge" | "host" | "none"
    netns_path: str | None = None
    ip_address: str = ""
    prefix_len: int = 0
    gateway: str = ""
    mac_address: str = ""
    bridge: str = ""
    ports: list[PortMapping] = field(default_factory=list)
    user_network: str = ""          # name of the primary user-defined network, if on one


@dataclass
class Container:
    """A container record as persisted under <root>/containers/<id>/."""

    id: str
    name: str                       # without the leading "/"
    created: str                    # RFC 3339 with nanoseconds, UTC
    image: str                      # as the user gave it
    image_id: str                   # sha256:...
    config: dict[str, Any]          # Docker Config (image defaults merged)
    host_config: dict[str, Any]     # Docker HostConfig
    state: ContainerState = field(default_factory=ContainerState)
    restart_count: int = 0
    network: NetworkAttachment | None = None
    mounts: list[dict[str, Any]] = field(default_factory=list)  # Docker's inspect "Mounts"
    log_path: str = ""
    exec_ids: list[str] = field(default_factory=list)


@dataclass
class ExecInstance:
    """A `docker exec` instance (exec create → start → inspect)."""

    id: str
    container_id: str
    cmd: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    privileged: bool = False
    detach_keys: str = ""           # as given at create ("" = the default, ctrl-p,ctrl-q)
    running: bool = False
    exit_code: int | None = None
    pid: int = 0


@dataclass
class Volume:
    """A named volume; its data lives in `mountpoint` (<root>/volumes/<name>/_data)."""

    name: str
    mountpoint: str
    created_at: str
    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Event:
    """One engine event, as `GET /events` streams it."""

    type: str                       # "container" | "image" | "volume" | "network"
    action: str                     # "create", "start", "die", "pull", ...
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = 0
