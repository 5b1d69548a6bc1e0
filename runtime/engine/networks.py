"""The networks service: every network-facing step of the engine, in one place.

The default bridge and user-defined networks (set-up at engine start, attach and
detach per run; runtime/network/ does the work), the embedded DNS server of user
networks (started with the engine, told each container's `--dns` settings before its
networks are plugged), a container's networks kept from create to removal, `--link`,
`--mac-address` and the container's /etc/hosts and /etc/resolv.conf.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..containers.links import LinkedContainer, hosts_line, link_env, parse_links
from ..errors import Conflict, InvalidArgument, NotFound, RuntimeFailure
from ..models import Container
from ..network.resolv_conf import HOST_RESOLV_CONF, ContainerDns
from .registry import ContainerRegistry

log = logging.getLogger(__name__)


class NetworkService:
    """Network set-up and per-container attachment, links and /etc files.

    Lock discipline: `_ready` is set once set-up finished (successfully or not); `_lock`
    serialises set-up retries after a failure. The NetworkManager has its own locks.
    Link targets are read from the registry (their records, without their locks: a
    target's address and running flag are read once, as dockerd does).
    """

    def __init__(self, manager: Any, registry: ContainerRegistry) -> None:
        self.manager = manager
        self._registry = registry
        self._ready = threading.Event()
        self._ready.set()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.dns: Any = None    # network.embedded_dns.EmbeddedDns once set-up ran

    # set-up ----------------------------------------------------------------
    def begin_setup(self) -> None:
        self._ready.clear()

    def setup(self) -> None:
        """Bridge, ip_forward, NAT, the DNS server; an error is kept for container starts to retry."""
        try:
            self._start_dns()
            self.manager.setup()
        except BaseException as err:   # noqa: BLE001 - kept for the waiters
            self._error = err
            log.error("network set-up failed (container starts will retry it): %s", err)
        finally:
            self._ready.set()

    @property
    def setup_error(self) -> BaseException | None:
        return self._error

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def await_ready(self) -> None:
        """Block until network set-up finished; retry it once more if it had failed."""
        self._ready.wait()
        if not self._failed():
            return
        with self._lock:
            if not self._failed():   # another start's retry succeeded meanwhile
                return
            try:
                self.manager.setup()
            except Exception as err:  # noqa: BLE001 - any set-up failure is reported to the start
                self._error = err
                raise RuntimeFailure(f"container networking is not available: {err}") from err
            self._error = None

    def _failed(self) -> bool:
        return self._error is not None

    def _start_dns(self) -> None:
        from ..host_loopback import host_loopback_address
        from ..network.embedded_dns import EmbeddedDns
        with self._lock:
            if self.dns is None:
                self.dns = EmbeddedDns(self.manager.names, host_loopback_address())

    def shutdown(self) -> None:
        try:
            self.manager.shutdown()
        except Exception as err:  # noqa: BLE001 - shutdown goes on whatever failed
            log.warning("network shutdown failed: %s", err)
        with self._lock:
            dns, self.dns = self.dns, None
        if dns is not None:
            dns.close()

    # per container -----------------------------------------------------------
    def attach(self, c: Container, port_mappings: Any) -> Any:
        hc, cfg = c.host_config, c.config
        self.configure_dns(c)
        return self.manager.attach(c.id, hc["NetworkMode"], port_mappings,
                                   mac_address=cfg.get("MacAddress") or "")

    def register(self, cid: str, name: str, hc: dict[str, Any], networking: Any) -> None:
        """At create: `container:NAME` stored by id (as dockerd, so a rename of the donor
        does not break it); the user networks asked for (NetworkMode and
        NetworkingConfig.EndpointsConfig) checked and kept until the container is removed."""
        mode = hc["NetworkMode"]
        if mode.startswith("container:"):
            hc["NetworkMode"] = "container:" + self._registry.lookup(mode[len("container:"):]).c.id
            return
        endpoints = networking.get("EndpointsConfig") if isinstance(networking, dict) else None
        hc["NetworkMode"] = self.manager.user.register(cid, name, mode, endpoints)
        if self.manager.user.wished_networks(cid):
            container_dns(hc)   # a bad --dns address is refused at create, not at the start

    def configure_dns(self, c: Container) -> None:
        """Before the container's user networks are plugged (start, live connect): its
        `--dns` servers become the embedded server's upstreams for it."""
        if self.dns is not None:
            self.dns.configure(c.id, container_dns(c.host_config))

    def connect(self, c: Container, network_ref: str, endpoint: Any) -> None:
        """`docker network connect`. A running container that was on no user network so
        far gets its resolv.conf pointed at the embedded server, as dockerd does, so the
        new network's names resolve without an explicit server."""
        self.configure_dns(c)
        self.manager.connect(c.id, c.name, c.state.running, network_ref, endpoint)
        if c.state.running and c.network is not None and not c.network.user_network:
            resolv_conf = self._registry.store.dir(c.id) / "resolv.conf"
            if resolv_conf.exists():
                # In place, not by rename: the file is bind-mounted into the container.
                resolv_conf.write_text(container_dns(c.host_config).resolv_conf(_engine_resolv_conf()))

    def forget(self, cid: str) -> None:
        """At removal (or a failed create): the container's networks are forgotten."""
        self.manager.user.forget(cid)
        if self.dns is not None:
            self.dns.forget(cid)

    def rename(self, cid: str, new_name: str) -> None:
        self.manager.user.rename(cid, new_name)

    def on_network(self, c: Container, refs: list[str]) -> bool:
        """`docker ps --filter network=`: the container is on one of `refs` (name or id)."""
        if c.host_config.get("NetworkMode") in refs:
            return True
        return any(r.name in refs or r.id in refs for r, _ in self.manager.user.wished_networks(c.id))

    def detach(self, cid: str, why: str = "network detach") -> None:
        """Best effort: a failure is logged (the container's run is over either way)."""
        try:
            self.manager.detach(cid)
        except Exception as err:  # noqa: BLE001 - best effort: the run is over either way
            log.warning("%s of %s failed: %s", why, cid[:12], err)

    def etc_files(self, c: Container, attachment: Any, link_hosts: str, cdir: Path) -> dict[str, Path]:
        """The container's /etc/hosts, /etc/hostname and /etc/resolv.conf, written in `cdir`."""
        from ..host_loopback import host_loopback_address
        from ..network.resolv_conf import container_etc_files
        hc = c.host_config
        etc_files: dict[str, Path] = {}
        for target, content in container_etc_files(c.id, c.config.get("Hostname", ""), attachment,
                                                   list(hc.get("ExtraHosts") or []),
                                                   host_loopback=host_loopback_address()).items():
            if target == "/etc/resolv.conf":
                dns_owner = self._embedded_dns_owner(c, attachment)
                content = (container_dns(dns_owner.host_config).resolv_conf(_engine_resolv_conf()).encode()
                           if dns_owner is not None else apply_dns_options(content, hc))
            if target == "/etc/hosts" and link_hosts:
                content = insert_link_hosts(content, link_hosts, attachment.ip_address)
            host_file = cdir / os.path.basename(target)
            host_file.write_bytes(content)
            etc_files[target] = host_file
        return etc_files

    def _embedded_dns_owner(self, c: Container, attachment: Any) -> Container | None:
        """Whose DNS settings the container's resolv.conf takes when its namespace is on a
        user network: its own, or a `container:X` donor's (as dockerd shares X's file)."""
        if attachment is None:
            return None
        if attachment.user_network or self.manager.user.wished_networks(c.id):
            return c   # on the default bridge too once it is also on a user network, as dockerd
        mode = c.host_config.get("NetworkMode") or ""
        if attachment.mode == "container" and mode.startswith("container:"):
            try:
                donor = self._registry.lookup(mode[len("container:"):]).c
            except NotFound:
                return None
            if donor.network is not None and donor.network.user_network:
                return donor
        return None

    # links -------------------------------------------------------------------
    def check_links(self, hc: dict[str, Any]) -> None:
        """At create, as dockerd: linked containers exist, and links need the bridge."""
        requests = parse_links(hc.get("Links"))
        if requests and hc.get("NetworkMode") == "host":
            raise InvalidArgument("conflicting options: host type networking can't be used with "
                                  "links. This would result in undefined behavior")
        for link in requests:
            try:
                self._registry.lookup(link.name)
            except NotFound as err:
                # Not a 404: the docker CLI would take that for a missing image and pull.
                raise InvalidArgument(f"could not get container for {link.name}: {err}") from None

    def resolve_links(self, c: Container) -> tuple[str, list[str]]:
        """(/etc/hosts lines, environment) of the container's links; the targets must run."""
        hosts = ""
        env: list[str] = []
        for link in parse_links(c.host_config.get("Links")):
            try:
                child = self._registry.lookup(link.name).c
            except NotFound as err:
                raise InvalidArgument(f"could not get container for {link.name}: {err}") from None
            address = child.network.ip_address if child.network and child.state.running else ""
            if not address:
                raise Conflict(f"Cannot link to a non running container: /{child.name} AS "
                               f"/{c.name}/{link.alias}")
            target = LinkedContainer(name=child.name,
                                     hostname=child.config.get("Hostname") or child.id[:12],
                                     ip=address, exposed_ports=list(child.config.get("ExposedPorts") or {}),
                                     env=list(child.config.get("Env") or []))
            hosts += hosts_line(link.alias, target)
            env += link_env(c.name, link.alias, target)
        return hosts, env


def set_mac_address(cfg: dict[str, Any], hc: dict[str, Any], networking: Any) -> None:
    """Config.MacAddress, or (API 1.44+, what the CLI sends now) the endpoint's MacAddress
    in NetworkingConfig: checked at create and kept in Config.MacAddress for the start."""
    mac = cfg.get("MacAddress") or ""
    endpoints = (networking or {}).get("EndpointsConfig") if isinstance(networking, dict) else None
    for endpoint in (endpoints or {}).values():
        if isinstance(endpoint, dict) and endpoint.get("MacAddress"):
            mac = endpoint["MacAddress"]
    if not mac:
        return
    if not isinstance(mac, str):
        raise InvalidArgument("invalid MacAddress: expected a string")
    if hc.get("NetworkMode") == "host":
        raise InvalidArgument("conflicting options: mac-address and the network mode")
    from ..network.manager import validate_mac  # the network module (netlink, proxies) loads lazily
    validate_mac(mac)
    cfg["MacAddress"] = mac


def container_dns(host_config: dict[str, Any]) -> ContainerDns:
    """A container's `--dns`, `--dns-search` and `--dns-option` (InvalidArgument for a bad server)."""
    return ContainerDns(tuple(host_config.get("Dns") or ()), tuple(host_config.get("DnsSearch") or ()),
                        tuple(host_config.get("DnsOptions") or ()))


def _engine_resolv_conf() -> str:
    try:
        return HOST_RESOLV_CONF.read_text()
    except FileNotFoundError:
        return ""


def insert_link_hosts(hosts: bytes, lines: str, own_address: str) -> bytes:
    """Link lines go before the container's own entry (the last line), as in dockerd's file."""
    text = hosts.decode()
    head, sep, last = text.rstrip("\n").rpartition("\n")
    if own_address and last.startswith(own_address + "\t"):
        return (head + sep + lines + last + "\n").encode()
    return (text + lines).encode()


def apply_dns_options(resolv_conf: bytes, host_config: dict[str, Any]) -> bytes:
    """HostConfig Dns/DnsSearch/DnsOptions replace the matching lines, as `--dns` does."""
    replacements: dict[str, list[str]] = {}
    if host_config.get("Dns"):
        replacements["nameserver"] = list(host_config["Dns"])
    if host_config.get("DnsSearch"):
        replacements["search"] = [" ".join(host_config["DnsSearch"])]
    if host_config.get("DnsOptions"):
        replacements["options"] = [" ".join(host_config["DnsOptions"])]
    if not replacements:
        return resolv_conf
    kept: list[str] = []
    for line in resolv_conf.decode().splitlines():
        words = line.split()
        if not words or words[0] not in replacements:
            kept.append(line)
    for key, values in replacements.items():
        kept += [f"{key} {v}" for v in values]
    return ("\n".join(kept) + "\n").encode()
