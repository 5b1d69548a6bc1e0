"""A container's inspect turned into what recreates it, and the renames of `--project`.

The engine fills in much at create time: the hostname (the id's prefix), a MAC
address, the masked paths, the cgroup namespace mode, aliases made of the short
id. Those are dropped so the target engine fills them in again; references to
other containers (network/ipc/pid `container:X`, volumes-from, links) are kept by
name, since ids do not survive the move.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from runtime.errors import InvalidArgument, RuntimeFailure

PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none", "default"})
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_DEPENDS_ON = "com.docker.compose.depends_on"
# Filled in by the engine, not asked for (or recomputed from SecurityOpt and the host's cgroups).
ENGINE_FILLED_HOST_CONFIG = ("MaskedPaths", "ReadonlyPaths", "CgroupnsMode", "ContainerIDFile", "Isolation")
# What dockerd refuses next to network mode container:X (the joined container owns them).
NETNS_OWNED_HOST_CONFIG = ("PortBindings", "PublishAllPorts", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts")
ZERO: tuple[Any, ...] = (None, 0, "", False, [], {}, [0, 0])


@contextlib.contextmanager
def engine_step(what: str) -> Iterator[None]:
    """Turn docker-py's errors into one-line Dockyard errors that say what was being done."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.APIError as err:
        raise RuntimeFailure(f"{what}: {err.explanation or err}") from None
    except requests.exceptions.RequestException as err:
        raise RuntimeFailure(f"{what}: cannot reach the engine ({err})") from None


class ContainerRefs:
    """Resolves what a container may be named by (name, id, id prefix) to its bundle name."""

    def __init__(self, inspects: list[dict[str, Any]]) -> None:
        self.names: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        for info in inspects:
            name = info["Name"].lstrip("/")
            self.names[name] = name
            self.ids[info["Id"]] = name

    def resolve(self, ref: str, who: str) -> str:
        ref = ref.lstrip("/")
        if ref in self.names:
            return self.names[ref]
        matches = {name for cid, name in self.ids.items() if len(ref) >= 3 and cid.startswith(ref)}
        if len(matches) == 1:
            return matches.pop()
        raise InvalidArgument(f"container {who} depends on container {ref}, which is not in the bundle: "
                              "name it too (or save the whole compose project)")


def _link(link: str, refs: ContainerRefs, who: str) -> tuple[str, str]:
    """(target container, alias) of a link given as dockerd shows it ("/db:/web/alias") or as created ("db:alias")."""
    target, _, alias = link.partition(":")
    alias = alias.rsplit("/", 1)[-1] if alias else target.lstrip("/")
    return refs.resolve(target, who), alias


def _container_mode(value: str, refs: ContainerRefs, who: str, deps: set[str]) -> str:
    if value.startswith("container:"):
        target = refs.resolve(value.split(":", 1)[1], who)
        deps.add(target)
        return f"container:{target}"
    return value


def container_record(info: dict[str, Any], refs: ContainerRefs, image: str,
                     network_names: dict[str, str], image_has_entrypoint: bool = False) -> dict[str, Any]:
    """The bundle's record of one container: create body parts, networks, dependencies, state.

    `image` is the reference to create it from (its tag, or its id when the tag moved);
    `network_names` maps network ids to names.
    """
    name = info["Name"].lstrip("/")
    deps: set[str] = set()
    config = {k: v for k, v in (info.get("Config") or {}).items() if v not in ZERO}
    config["Image"] = image
    if image_has_entrypoint and not [a for a in config.get("Entrypoint") or [] if a]:
        # Created with `--entrypoint ""`: left out, the image's entrypoint would come back.
        config["Entrypoint"] = [""]
    config.pop("MacAddress", None)
    host = {k: v for k, v in (info.get("HostConfig") or {}).items()
            if v not in ZERO and k not in ENGINE_FILLED_HOST_CONFIG}
    if host.get("Runtime") == "runc":
        del host["Runtime"]
    for key in ("NetworkMode", "IpcMode", "PidMode"):
        if key in host:
            host[key] = _container_mode(network_names.get(host[key], host[key]), refs, name, deps)
    network_mode = host.get("NetworkMode", "")
    if config.get("Hostname") == info["Id"][:12] or network_mode == "host" or network_mode.startswith("container:"):
        config.pop("Hostname", None)
    if network_mode.startswith("container:"):
        config.pop("Domainname", None)
        for key in NETNS_OWNED_HOST_CONFIG:
            host.pop(key, None)
        config.pop("ExposedPorts", None)
    if "VolumesFrom" in host:
        resolved = []
        for entry in host["VolumesFrom"]:
            target, sep, mode = entry.partition(":")
            target = refs.resolve(target, name)
            deps.add(target)
            resolved.append(target + sep + mode)
        host["VolumesFrom"] = resolved
    if "Links" in host:
        links = [_link(link, refs, name) for link in host["Links"]]
        deps.update(target for target, _ in links)
        host["Links"] = [f"{target}:{alias}" for target, alias in links]
    networks: dict[str, dict[str, Any]] = {}
    for net, endpoint in ((info.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if net in PREDEFINED_NETWORKS or network_mode.startswith("container:"):
            continue
        record: dict[str, Any] = {}
        aliases = [a for a in endpoint.get("Aliases") or [] if a not in (info["Id"][:12], info["Id"])]
        if aliases:
            record["Aliases"] = aliases
        ipam = {k: v for k, v in (endpoint.get("IPAMConfig") or {}).items() if v not in ZERO}
        if ipam:
            record["IPAMConfig"] = ipam
        if endpoint.get("Links"):
            links = [_link(link, refs, name) for link in endpoint["Links"]]
            deps.update(target for target, _ in links)
            record["Links"] = [f"{target}:{alias}" for target, alias in links]
        if endpoint.get("DriverOpts"):
            record["DriverOpts"] = endpoint["DriverOpts"]
        networks[net] = record
    state = info.get("State") or {}
    return {"name": name, "running": bool(state.get("Running")), "config": config,
            "host_config": host, "networks": networks, "depends_on": sorted(deps)}


def compose_start_order(records: list[dict[str, Any]]) -> None:
    """Add Compose's depends_on (service names, from the container label) to the records' dependencies."""
    by_service: dict[tuple[str, str], list[str]] = {}
    for rec in records:
        labels = rec["config"].get("Labels") or {}
        if COMPOSE_PROJECT in labels and COMPOSE_SERVICE in labels:
            by_service.setdefault((labels[COMPOSE_PROJECT], labels[COMPOSE_SERVICE]), []).append(rec["name"])
    for rec in records:
        labels = rec["config"].get("Labels") or {}
        for entry in filter(None, (labels.get(COMPOSE_DEPENDS_ON) or "").split(",")):
            service = entry.split(":", 1)[0]
            targets = by_service.get((labels.get(COMPOSE_PROJECT, ""), service), [])
            rec["depends_on"] = sorted(set(rec["depends_on"]) | set(targets))


def dependency_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records sorted so each comes after what it depends on; InvalidArgument on a cycle."""
    by_name = {rec["name"]: rec for rec in records}
    done: dict[str, bool] = {}
    order: list[dict[str, Any]] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if done.get(name):
            return
        if name in path:
            raise InvalidArgument(f"containers depend on each other in a cycle: {' -> '.join(path + (name,))}")
        for dep in by_name[name]["depends_on"]:
            if dep in by_name:
                visit(dep, path + (name,))
        done[name] = True
        order.append(by_name[name])

    for rec in records:
        visit(rec["name"], ())
    return order


class ProjectRename:
    """`--project NEWNAME`: Compose's resource names ("old-web-1", "old_default") and labels moved to NEWNAME."""

    def __init__(self, old: str, new: str) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", new):
            raise InvalidArgument(f"invalid project name {new!r}: lower-case letters, digits, '-' and '_', "
                                  "starting with a letter or digit")
        self.old, self.new = old, new

    def name(self, value: str) -> str:
        for sep in ("-", "_"):
            if value.startswith(self.old + sep):
                return self.new + value[len(self.old):]
        return value

    def labels(self, labels: dict[str, str] | None) -> dict[str, str] | None:
        if labels and labels.get(COMPOSE_PROJECT) == self.old:
            return {**labels, COMPOSE_PROJECT: self.new}
        return labels

    def _container_mode(self, value: str) -> str:
        return "container:" + self.name(value[10:]) if value.startswith("container:") else self.name(value)

    def _link(self, link: str) -> str:
        target, sep, alias = link.partition(":")
        return self.name(target) + sep + alias

    def _bind(self, bind: str) -> str:
        source, sep, rest = bind.partition(":")
        return (source if source.startswith("/") else self.name(source)) + sep + rest

    def apply(self, manifest: dict[str, Any]) -> None:
        """Rename in place: networks, volumes, containers and every reference between them."""
        manifest["project"] = self.new
        for net in manifest["networks"]:
            net["name"] = self.name(net["name"])
            net["Labels"] = self.labels(net.get("Labels"))
        for vol in manifest["volumes"]:
            vol["name"] = self.name(vol["name"])
            vol["Labels"] = self.labels(vol.get("Labels"))
        for rec in manifest["containers"]:
            rec["name"] = self.name(rec["name"])
            rec["depends_on"] = [self.name(d) for d in rec["depends_on"]]
            rec["config"]["Labels"] = self.labels(rec["config"].get("Labels"))
            host = rec["host_config"]
            for key in ("NetworkMode", "IpcMode", "PidMode"):
                if key in host:
                    host[key] = self._container_mode(host[key])
            host["Links"] = [self._link(link) for link in host.get("Links") or []]
            host["VolumesFrom"] = [self.name(v) for v in host.get("VolumesFrom") or []]
            host["Binds"] = [self._bind(b) for b in host.get("Binds") or []]
            for mount in host.get("Mounts") or []:
                if mount.get("Type") == "volume" and mount.get("Source"):
                    mount["Source"] = self.name(mount["Source"])
            networks = {}
            for net, endpoint in rec["networks"].items():
                endpoint["Aliases"] = [self.name(a) for a in endpoint.get("Aliases") or []]
                endpoint["Links"] = [self._link(link) for link in endpoint.get("Links") or []]
                networks[self.name(net)] = endpoint
            rec["networks"] = networks
