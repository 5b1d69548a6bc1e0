"""Formatting of the runtime's dataclasses into the Docker Engine API's JSON shapes.

Pure functions: no engine calls, so every shape can be checked on its own.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

from runtime.containers.detach_keys import parse_detach_keys
from runtime.images.store import Image
from runtime.lazy_re import lazy_compile
from runtime.models import Container, Event, ExecInstance, NetworkAttachment, Volume

ZERO_TIME = "0001-01-01T00:00:00Z"
_RFC3339 = lazy_compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


# --------------------------------------------------------------------------- time


def parse_rfc3339(value: str) -> float:
    """Unix seconds for an RFC 3339 timestamp with any number of fraction digits; 0 if unset."""
    if not value or value.startswith("0001-"):
        return 0.0
    m = _RFC3339.match(value.strip())
    if not m:
        return 0.0
    base, frac, zone = m.group(1), m.group(2) or "0", m.group(3) or "Z"
    zone = "+00:00" if zone == "Z" else zone
    dt = datetime.fromisoformat(base + zone)
    return dt.timestamp() + float("0." + frac)


def human_duration(seconds: float) -> str:
    """Docker's (go-units) HumanDuration: "Less than a second", "3 seconds", "About a minute", ..."""
    if seconds < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def container_status_text(container: Container, now: float | None = None) -> str:
    """The `Status` column of `docker ps`: "Up 3 seconds", "Exited (0) 2 seconds ago", ..."""
    now = time.time() if now is None else now
    state = container.state
    if state.status == "running" or (state.running and not state.restarting):
        text = f"Up {human_duration(now - parse_rfc3339(state.started_at))}"
        if state.paused:
            return text + " (Paused)"
        if state.health is not None:
            status = state.health.get("Status") or "unhealthy"
            return f"{text} (health: starting)" if status == "starting" else f"{text} ({status})"
        return text
    if state.restarting or state.status == "restarting":
        ago = human_duration(now - parse_rfc3339(state.finished_at))
        return f"Restarting ({state.exit_code}) {ago} ago"
    if state.status == "exited":
        finished = parse_rfc3339(state.finished_at)
        if not finished:
            return f"Exited ({state.exit_code})"
        return f"Exited ({state.exit_code}) {human_duration(now - finished)} ago"
    if state.status == "removing":
        return "Removal In Progress"
    if state.status == "dead":
        return "Dead"
    return "Created"


# --------------------------------------------------------------------------- containers


def command_line(config: dict[str, Any]) -> list[str]:
    """Entrypoint + Cmd, as the container's process is started."""
    entrypoint = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or []
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    if isinstance(cmd, str):
        cmd = [cmd]
    return list(entrypoint) + list(cmd)


def network_name(container: Container) -> str:
    mode = (container.host_config.get("NetworkMode") or "default")
    if mode in ("default", ""):
        return "bridge"
    return mode


def ports_map(container: Container) -> dict[str, list[dict[str, str]] | None]:
    """NetworkSettings.Ports: exposed ports (null when unpublished) plus live bindings."""
    ports: dict[str, list[dict[str, str]] | None] = {}
    for key in (container.config.get("ExposedPorts") or {}):
        ports[key if "/" in key else f"{key}/tcp"] = None
    attachment = container.network
    if attachment is not None and container.state.running:
        for mapping in attachment.ports:
            key = f"{mapping.container_port}/{mapping.protocol}"
            binding = {"HostIp": mapping.host_ip, "HostPort": str(mapping.host_port)}
            existing = ports.get(key)
            ports[key] = (existing or []) + [binding]
    return ports


def _endpoint(attachment: NetworkAttachment | None, name: str) -> dict[str, Any]:
    a = attachment if attachment is not None else NetworkAttachment(mode=name)
    return {
        "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": a.mac_address,
        "DriverOpts": None, "NetworkID": name, "EndpointID": "",
        "Gateway": a.gateway, "IPAddress": a.ip_address, "IPPrefixLen": a.prefix_len,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None,
    }


def network_settings(container: Container,
                     networks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """NetworkSettings of container inspect; `networks` (routes_networks.container_networks)
    has one entry per network. The top-level address fields describe the default bridge only."""
    name = network_name(container)
    a = container.network if container.state.running else None
    endpoint = _endpoint(a, name)
    if networks is not None:
        endpoint = networks.get("bridge") or _endpoint(None, "")
        if a is not None and a.user_network:
            a = NetworkAttachment(mode="bridge", netns_path=a.netns_path, ports=a.ports)
    return {
        "Bridge": a.bridge if a else "", "SandboxID": "", "SandboxKey": (a.netns_path or "") if a else "",
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports_map(container), "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "EndpointID": endpoint["EndpointID"], "Gateway": endpoint["Gateway"], "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "IPAddress": endpoint["IPAddress"],
        "IPPrefixLen": endpoint["IPPrefixLen"], "IPv6Gateway": "", "MacAddress": endpoint["MacAddress"],
        "Networks": networks if networks is not None else {name: endpoint},
    }


def container_inspect(container: Container, size: tuple[int, int] | None = None,
                      networks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """GET /containers/{id}/json."""
    s = container.state
    argv = command_line(container.config)
    result: dict[str, Any] = {
        "Id": container.id,
        "Created": container.created,
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": {
            "Status": s.status, "Running": s.running, "Paused": s.paused,
            "Restarting": s.restarting, "OOMKilled": s.oom_killed, "Dead": s.dead,
            "Pid": s.pid, "ExitCode": s.exit_code, "Error": s.error,
            "StartedAt": s.started_at, "FinishedAt": s.finished_at,
        },
        "Image": container.image_id,
        "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "",
        "LogPath": container.log_path,
        "Name": "/" + container.name,
        "RestartCount": container.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": list(container.exec_ids) or None,
        "HostConfig": container.host_config,
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "Mounts": container.mounts,
        "Config": container.config,
        "NetworkSettings": network_settings(container, networks),
    }
    if s.health is not None:
        result["State"]["Health"] = s.health
    if size is not None:
        result["SizeRw"], result["SizeRootFs"] = size
    return result


def port_list(container: Container) -> list[dict[str, Any]]:
    """`Ports` of a container list entry."""
    result: list[dict[str, Any]] = []
    for key, bindings in ports_map(container).items():
        port, _, proto = key.partition("/")
        if not bindings:
            result.append({"PrivatePort": int(port), "Type": proto or "tcp"})
            continue
        for b in bindings:
            result.append({"IP": b["HostIp"], "PrivatePort": int(port),
                           "PublicPort": int(b["HostPort"]), "Type": proto or "tcp"})
    return result


def container_summary(container: Container, now: float | None = None,
                      size: tuple[int, int] | None = None,
                      networks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One entry of GET /containers/json; `size` (SizeRw, SizeRootFs) when asked for."""
    argv = command_line(container.config)
    name = network_name(container)
    a = container.network if container.state.running else None
    result = {
        "Id": container.id,
        "Names": ["/" + container.name],
        "Image": container.config.get("Image") or container.image,
        "ImageID": container.image_id,
        "Command": " ".join(argv),
        "Created": int(parse_rfc3339(container.created)),
        "Ports": port_list(container),
        "Labels": container.config.get("Labels") or {},
        "State": container.state.status,
        "Status": container_status_text(container, now),
        "HostConfig": {"NetworkMode": container.host_config.get("NetworkMode") or "default"},
        "NetworkSettings": {"Networks": networks if networks is not None else {name: _endpoint(a, name)}},
        "Mounts": container.mounts,
    }
    if size is not None:
        result["SizeRw"], result["SizeRootFs"] = size
    return result


# --------------------------------------------------------------------------- execs


def exec_inspect(ex: ExecInstance) -> dict[str, Any]:
    """GET /exec/{id}/json."""
    return {
        "ID": ex.id,
        "Running": ex.running,
        "ExitCode": ex.exit_code,
        "ProcessConfig": {
            "tty": ex.tty, "entrypoint": ex.cmd[0] if ex.cmd else "",
            "arguments": ex.cmd[1:], "privileged": ex.privileged, "user": ex.user,
        },
        "OpenStdin": ex.attach_stdin, "OpenStderr": ex.attach_stderr, "OpenStdout": ex.attach_stdout,
        "CanRemove": False,
        "ContainerID": ex.container_id,
        # Go's JSON of the parsed []byte: base64, empty when none were given.
        "DetachKeys": base64.b64encode(parse_detach_keys(ex.detach_keys)).decode()
        if ex.detach_keys else "",
        "Pid": ex.pid,
    }


# --------------------------------------------------------------------------- images


def image_summary(image: Image, containers: int = -1) -> dict[str, Any]:
    """One entry of GET /images/json."""
    config = image.config.get("config") or {}
    return {
        "Id": image.id,
        "ParentId": image.parent,
        "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests),
        "Created": int(parse_rfc3339(image.created or image.config.get("created", ""))),
        "Size": image.size,
        "SharedSize": -1,
        "VirtualSize": image.size,
        "Labels": config.get("Labels") or {},
        "Containers": containers,
    }


# Go's zero container.Config as dockerd marshals it (an image built without a container).
_ZERO_CONTAINER_CONFIG: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
    "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}


def image_inspect(image: Image) -> dict[str, Any]:
    """GET /images/{name}/json."""
    cfg = image.config
    rootfs = cfg.get("rootfs") or {}
    return {
        "Id": image.id,
        "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests),
        "Parent": image.parent,
        # As dockerd: the config's comment, else the last history entry's (commit -m, import -m).
        "Comment": cfg.get("comment") or ((cfg.get("history") or [{}])[-1].get("comment", "")),
        "Created": image.created or cfg.get("created", ""),
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        # Gone from API 1.45 in Docker 26, but dockerd 20.10 sends them and docker-compose
        # 1.29 reads ContainerConfig when it recreates a container (KeyError without it).
        "Container": cfg.get("container", ""),
        "ContainerConfig": cfg.get("container_config") or dict(_ZERO_CONTAINER_CONFIG),
        "Config": cfg.get("config") or {},
        "Architecture": cfg.get("architecture", "amd64"),
        "Variant": cfg.get("variant", ""),
        "Os": cfg.get("os", "linux"),
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "RootFS": {"Type": rootfs.get("type", "layers"), "Layers": list(rootfs.get("diff_ids") or [])},
        "Metadata": {"LastTagTime": ZERO_TIME},
    }


# --------------------------------------------------------------------------- volumes


def volume_json(volume: Volume, users: int | None = None, size: int = -1) -> dict[str, Any]:
    """A volume as GET /volumes/{name} shows it; with `users`, as /system/df does (size -1: not counted)."""
    result: dict[str, Any] = {
        "CreatedAt": volume.created_at,
        "Driver": volume.driver,
        "Labels": volume.labels or {},
        "Mountpoint": volume.mountpoint,
        "Name": volume.name,
        "Options": volume.options or {},
        "Scope": "local",
    }
    if users is not None:
        result["UsageData"] = {"RefCount": users, "Size": size}
    return result


# --------------------------------------------------------------------------- events


def event_json(event: Event) -> dict[str, Any]:
    """One message of GET /events (with the pre-1.22 status/id/from fields clients still read)."""
    seconds = event.time_nano // 1_000_000_000
    result: dict[str, Any] = {
        "Type": event.type,
        "Action": event.action,
        "Actor": {"ID": event.actor_id, "Attributes": dict(event.attributes)},
        "scope": "local",
        "time": seconds,
        "timeNano": event.time_nano,
    }
    if event.type == "container":
        result["status"] = event.action
        result["id"] = event.actor_id
        if "image" in event.attributes:
            result["from"] = event.attributes["image"]
    return result


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
