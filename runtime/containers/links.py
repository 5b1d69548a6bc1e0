"""Legacy container links (`--link NAME[:ALIAS]`) on the default bridge.

A link gives the linking container the linked one's address under the alias (an
/etc/hosts line) and Docker's link environment variables: ALIAS_NAME, ALIAS_PORT and
per exposed port ALIAS_PORT_<port>_<PROTO>[_ADDR|_PORT|_PROTO], and ALIAS_ENV_<name>
for each variable of the linked container's Config.Env (but HOME and PATH).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgument


@dataclass(frozen=True)
class LinkRequest:
    """One `HostConfig.Links` entry: the container linked to, and the alias it gets."""

    name: str
    alias: str


@dataclass(frozen=True)
class LinkedContainer:
    """What a link needs to know of the linked container once it runs."""

    name: str                 # its name, without "/"
    hostname: str             # its Config.Hostname (the short id by default)
    ip: str
    exposed_ports: list[str]  # Config.ExposedPorts keys, "80/tcp"
    env: list[str]            # its Config.Env


def parse_links(links: object) -> list[LinkRequest]:
    """HostConfig.Links: "name:alias", "name", or dockerd's own "/name:/parent/alias" form."""
    if not links:
        return []
    if not isinstance(links, list) or not all(isinstance(v, str) for v in links):
        raise InvalidArgument("invalid Links: expected a list of strings")
    result = []
    for spec in links:
        name, _, alias = spec.partition(":")
        name = name.lstrip("/")
        alias = alias.rsplit("/", 1)[-1] if alias else name
        if not name or not alias:
            raise InvalidArgument(f"invalid link format: {spec!r} (NAME or NAME:ALIAS)")
        result.append(LinkRequest(name, alias))
    return result


def _sorted_ports(exposed: list[str]) -> list[tuple[int, str]]:
    ports = []
    for key in exposed:
        port, _, proto = key.partition("/")
        if port.isdecimal():
            ports.append((int(port), (proto or "tcp").lower()))
    # Lowest port first; on the same number tcp first (that one is ALIAS_PORT).
    return sorted(ports, key=lambda p: (p[0], p[1] != "tcp", p[1]))


def link_env(parent_name: str, alias: str, child: LinkedContainer) -> list[str]:
    """Docker's environment variables for one link."""
    prefix = alias.upper().replace("-", "_")
    env = [f"{prefix}_NAME=/{parent_name}/{alias}"]
    ports = _sorted_ports(child.exposed_ports)
    if ports:
        port, proto = ports[0]
        env.append(f"{prefix}_PORT={proto}://{child.ip}:{port}")
    for port, proto in ports:
        key = f"{prefix}_PORT_{port}_{proto.upper()}"
        env += [f"{key}={proto}://{child.ip}:{port}", f"{key}_ADDR={child.ip}",
                f"{key}_PORT={port}", f"{key}_PROTO={proto}"]
    for entry in child.env:
        name, eq, value = entry.partition("=")
        if eq and name not in ("HOME", "PATH"):
            env.append(f"{prefix}_ENV_{name}={value}")
    return env


def hosts_line(alias: str, child: LinkedContainer) -> str:
    """The /etc/hosts line: address, alias, the child's hostname and its name if different."""
    names = [alias, child.hostname]
    if child.name != alias:
        names.append(child.name)
    return f"{child.ip}\t{' '.join(names)}\n"
