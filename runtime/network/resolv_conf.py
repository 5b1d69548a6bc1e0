"""The container's /etc/hosts, /etc/hostname and /etc/resolv.conf, as Docker writes them.

On a bridge or none network the host's loopback nameservers (127.x, ::1: a local
caching resolver) are unreachable from the container, so they are dropped; if
nothing is left, Docker's public fallback is used. With host networking the
host's files are used as they are. On a user network the embedded DNS server is
the only nameserver (ContainerDns: `--dns` servers become its upstreams).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgument
from ..models import NetworkAttachment
from .dns_forward import Upstream

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")
FALLBACK_NAMESERVER = "8.8.8.8"

_LOCALHOST_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def filtered_resolv_conf(host_text: str) -> str:
    """The host's resolv.conf without loopback nameservers (8.8.8.8 if none remain)."""
    lines = []
    nameservers = 0
    for line in host_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "nameserver" and len(fields) > 1:
            if _is_loopback(fields[1]):
                continue
            nameservers += 1
        lines.append(line)
    if nameservers == 0:
        lines.append(f"nameserver {FALLBACK_NAMESERVER}")
    return "\n".join(lines).strip("\n") + "\n"


EMBEDDED_DNS = "127.0.0.11"


def embedded_dns_resolv_conf(host_text: str) -> str:
    """On a user-defined network, as Docker: the host's search and options lines, the
    embedded DNS server as the only nameserver, and `ndots:0` (the server forwards the rest)."""
    lines = []
    options: list[str] = []
    for line in host_text.splitlines():
        fields = line.split()
        if not fields or fields[0] == "nameserver":
            continue
        if fields[0] == "options":
            options += [o for o in fields[1:] if not o.startswith("ndots:")]
            continue
        if fields[0] in ("search", "domain"):
            lines.append(line)
    lines.append(f"nameserver {EMBEDDED_DNS}")
    lines.append("options " + " ".join(options + ["ndots:0"]))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ContainerDns:
    """A container's `--dns`, `--dns-search` and `--dns-option` on a user network.

    The container's resolv.conf names only 127.0.0.11; its `--dns` servers become
    the embedded server's upstreams for it. Search domains and options come from
    the user, else from the engine's resolv.conf, and `ndots:0` is added unless
    the user chose an ndots (dockerd 20.10 writes exactly this).
    """

    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for server in self.servers:
            Upstream.parse(server)  # refuse a bad address at create, not at the first query

    @property
    def ndots_set(self) -> bool:
        return any(option.startswith("ndots:") for option in self.options)

    @property
    def upstreams(self) -> list[str] | None:
        """For `DnsServer.attach()`: the user's servers, None for the engine's."""
        return list(self.servers) or None

    def resolv_conf(self, engine_resolv_conf: str) -> str:
        """The container's /etc/resolv.conf."""
        host_search: list[str] = []
        host_options: list[str] = []
        for line in engine_resolv_conf.splitlines():
            fields = line.split()
            if fields and fields[0] in ("search", "domain"):
                host_search = fields[1:]  # the last search/domain line wins, as in glibc
            elif fields and fields[0] == "options":
                host_options += fields[1:]
        search = [d for d in (self.search or host_search) if d != "."]
        options = list(self.options) if self.options else [o for o in host_options if not o.startswith("ndots:")]
        if not self.ndots_set:
            options.append("ndots:0")  # container names first, before any search domain
        lines = [f"search {' '.join(search)}"] if search else []
        lines.append(f"nameserver {EMBEDDED_DNS}")
        lines.append(f"options {' '.join(options)}")
        return "\n".join(lines) + "\n"


def parse_extra_host(entry: str, gateway: str = "") -> tuple[str, str]:
    """Docker's ExtraHosts entry "name:ip" (or "name=ip"; "host-gateway" = `gateway`, the host)."""
    sep = "=" if "=" in entry else ":"
    name, _, addr = entry.partition(sep)
    addr = addr.strip("[]")
    if addr == "host-gateway":
        if not gateway:
            raise InvalidArgument(f"invalid extra host {entry!r}: no gateway to map host-gateway to")
        addr = gateway
    try:
        ipaddress.ip_address(addr)
    except ValueError as err:
        raise InvalidArgument(f"invalid IP address in add-host: {addr!r}") from err
    if not name:
        raise InvalidArgument(f"invalid extra host {entry!r}: missing host name")
    return name, addr


def host_address_for(attachment: NetworkAttachment | None, host_loopback: str = "") -> str:
    """The address at which a container reaches the user's host ("" when it cannot).

    Inside the VM that is the host's loopback alias (NATed out of the guest); natively
    it is the bridge gateway, or loopback itself with host networking.
    """
    mode = attachment.mode if attachment else "none"
    if mode == "none":
        return ""
    if host_loopback:
        return host_loopback
    return "127.0.0.1" if mode == "host" else (attachment.gateway if attachment else "")


def container_etc_files(container_id: str, hostname: str, attachment: NetworkAttachment | None,
                        extra_hosts: list[str], *, host_loopback: str = "",
                        host_resolv_conf: Path = HOST_RESOLV_CONF,
                        host_hosts: Path = HOST_HOSTS) -> dict[str, bytes]:
    """Contents for /etc/hosts, /etc/hostname and /etc/resolv.conf of one container.

    `host.docker.internal` names the user's host, as on Docker Desktop.
    """
    hostname = hostname or container_id[:12]
    mode = attachment.mode if attachment else "none"
    gateway = host_address_for(attachment, host_loopback)
    try:
        resolv_text = host_resolv_conf.read_text()
    except FileNotFoundError:
        resolv_text = ""
    extra = f"{gateway}\thost.docker.internal\n" if gateway else ""
    extra += "".join(f"{addr}\t{name}\n" for name, addr in (parse_extra_host(e, gateway) for e in extra_hosts))
    if mode == "host":
        try:
            hosts = host_hosts.read_text()
        except FileNotFoundError:
            hosts = _LOCALHOST_HOSTS
        if hosts and not hosts.endswith("\n"):
            hosts += "\n"
        hosts += extra
        resolv = resolv_text if resolv_text.strip() else f"nameserver {FALLBACK_NAMESERVER}\n"
    else:
        hosts = _LOCALHOST_HOSTS + extra
        if attachment and attachment.ip_address:
            hosts += f"{attachment.ip_address}\t{hostname}\n"
        resolv = (embedded_dns_resolv_conf(resolv_text) if attachment and attachment.user_network
                  else filtered_resolv_conf(resolv_text))
    return {
        "/etc/hosts": hosts.encode(),
        "/etc/hostname": f"{hostname}\n".encode(),
        "/etc/resolv.conf": resolv.encode(),
    }
