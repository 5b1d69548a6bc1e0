"""Network endpoints: /networks (list, inspect, create, remove, connect, disconnect, prune),
and the per-network part of a container's NetworkSettings."""

from __future__ import annotations

import re
from typing import Any

from runtime.engine.facade import Engine
from runtime.errors import InvalidArgument, NotFound
from runtime.models import Container
from runtime.network.network_store import NetworkRecord
from runtime.timestamps import parse_time_ns

from .http_request import Request
from .http_response import Response, empty_response, json_response
from .http_server import Router
from .request_body import BodyFields, top_level_object

_CREATE_FIELDS = ("Name", "CheckDuplicate", "Driver", "Scope", "Internal", "Attachable", "Ingress",
                  "IPAM", "EnableIPv6", "Options", "Labels", "ConfigOnly", "ConfigFrom")


def network_json(engine: Engine, record: NetworkRecord, with_containers: bool) -> dict[str, Any]:
    """One network as dockerd describes it (`Containers` filled for inspect only)."""
    manager = engine.networks.manager
    containers: dict[str, Any] = {}
    if record.builtin:
        if record.name == "bridge":
            ipam_config = [{"Subnet": manager.subnet, "Gateway": manager.gateway}]
            options = {"com.docker.network.bridge.default_bridge": "true",
                       "com.docker.network.bridge.enable_icc": "true",
                       "com.docker.network.bridge.enable_ip_masquerade": "true",
                       "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                       "com.docker.network.bridge.name": manager.bridge,
                       "com.docker.network.driver.mtu": str(manager.mtu)}
        else:
            ipam_config, options = [], {}
        ipam_options: dict[str, str] | None = None
        if with_containers and record.name == "bridge":
            for c in engine.containers.list(all=False):
                a = c.network
                if a is not None and a.mode == "bridge" and not a.user_network:
                    containers[c.id] = {"Name": c.name, "EndpointID": _endpoint_id(c.id, record.id),
                                        "MacAddress": a.mac_address,
                                        "IPv4Address": f"{a.ip_address}/{a.prefix_len}", "IPv6Address": ""}
    else:
        ipam_entry = {"Subnet": record.subnet, "Gateway": record.gateway}
        if record.ip_range:
            ipam_entry["IPRange"] = record.ip_range
        ipam_config, options = [ipam_entry], dict(record.options)
        ipam_options = {}
        if with_containers:
            for cid, ep in manager.user.containers_on(record.id):
                containers[cid] = {"Name": manager.user.container_name(cid), "EndpointID": ep.endpoint_id,
                                   "MacAddress": ep.mac, "IPv4Address": f"{ep.ip}/{ep.prefix_len}",
                                   "IPv6Address": ""}
    return {
        "Name": record.name, "Id": record.id, "Created": record.created, "Scope": "local",
        "Driver": record.driver, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": ipam_options, "Config": ipam_config},
        "Internal": record.internal, "Attachable": record.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": containers,
        "Options": options, "Labels": dict(record.labels),
    }


def _endpoint_id(container_id: str, network_id: str) -> str:
    import hashlib
    return hashlib.sha256(f"{network_id}/{container_id}".encode()).hexdigest()


def _label_match(labels: dict[str, str], wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _matches(engine: Engine, record: NetworkRecord, filters: dict[str, list[str]]) -> bool:
    """dockerd's `GET /networks` filters; name and id are unanchored regular expressions."""
    for key, values in filters.items():
        if key in ("name", "id"):
            subject = record.name if key == "name" else record.id
            try:
                ok = any(re.search(v, subject) for v in values)
            except re.error as err:
                raise InvalidArgument(f"invalid {key} filter: {err}") from None
        elif key == "driver":
            ok = record.driver in values
        elif key == "scope":
            ok = "local" in values
        elif key == "type":
            for v in values:
                if v not in ("custom", "builtin"):
                    raise InvalidArgument(f"invalid filter: 'type'='{v}'")
            ok = ("builtin" if record.builtin else "custom") in values
        elif key == "label":
            ok = all(_label_match(record.labels, v) for v in values)
        elif key == "dangling":
            if any(v.lower() not in ("true", "false", "1", "0") for v in values):
                raise InvalidArgument(f"invalid filter 'dangling={values[0]}'")
            dangling = not record.builtin and not engine.networks.manager.user.active_endpoints(record.id)
            ok = any((v.lower() in ("true", "1")) == dangling for v in values)
        else:
            raise InvalidArgument(f"Invalid filter '{key}'")
        if not ok:
            return False
    return True


def container_networks(engine: Engine, container: Container) -> dict[str, dict[str, Any]]:
    """NetworkSettings.Networks of one container: one entry per network it is on."""
    manager = engine.networks.manager
    mode = container.host_config.get("NetworkMode") or "bridge"
    running = container.state.running
    a = container.network if running else None
    result: dict[str, dict[str, Any]] = {}
    if mode.startswith("container:"):
        return result
    if mode in ("bridge", "default", "host", "none"):
        name = "bridge" if mode == "default" else mode
        nid = manager.user.store.builtin_id(name)
        result[name] = _endpoint_json(
            nid, _endpoint_id(container.id, nid) if a else "", None,
            a.ip_address if a else "", a.prefix_len if a else 0, a.gateway if a else "",
            a.mac_address if a else "", None)
    for record, wish in manager.user.wished_networks(container.id):
        ep = manager.user.live_endpoint(record.id, container.id) if running else None
        ipam = wish.ipam
        aliases = list(wish.aliases) + ([container.id[:12]] if ep else [])
        result[record.name] = _endpoint_json(
            record.id, ep.endpoint_id if ep else "", aliases or None,
            ep.ip if ep else "", ep.prefix_len if ep else 0,
            ep.gateway if ep and not record.internal else "", ep.mac if ep else "",
            ipam, links=wish.links or None,
            dns_names=[container.name, container.id[:12], *wish.aliases] if ep else None,
            driver_opts=wish.driver_opts)
    return result


def _endpoint_json(network_id: str, endpoint_id: str, aliases: list[str] | None, ip: str, prefix: int,
                   gateway: str, mac: str, ipam: dict[str, str] | None, links: list[str] | None = None,
                   dns_names: list[str] | None = None,
                   driver_opts: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "IPAMConfig": ipam, "Links": links, "Aliases": aliases, "MacAddress": mac, "DriverOpts": driver_opts,
        "NetworkID": network_id, "EndpointID": endpoint_id, "Gateway": gateway, "IPAddress": ip,
        "IPPrefixLen": prefix, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names,
    }


class NetworkRoutes:
    """Built-in and user-defined networks."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, router: Router) -> None:
        router.get("/networks", self.list)
        router.post("/networks/create", self.create)
        router.post("/networks/prune", self.prune)
        router.get("/networks/{name}", self.inspect)
        router.delete("/networks/{name}", self.remove)
        router.post("/networks/{name}/connect", self.connect)
        router.post("/networks/{name}/disconnect", self.disconnect)

    @property
    def _user(self) -> Any:
        return self.engine.networks.manager.user

    def list(self, request: Request) -> Response:
        filters = {k: v for k, v in request.filters().items() if v}
        records = sorted(self._user.store.all(), key=lambda r: (not r.builtin, r.created, r.name))
        return json_response([network_json(self.engine, r, with_containers=False)
                              for r in records if _matches(self.engine, r, filters)])

    def inspect(self, request: Request) -> Response:
        record = self._user.find(request.params["name"])
        return json_response(network_json(self.engine, record, with_containers=True))

    def create(self, request: Request) -> Response:
        raw = top_level_object(request.json(), "types.NetworkCreateRequest")
        body = BodyFields(raw, "NetworkCreateRequest")
        for key in raw:
            if key not in _CREATE_FIELDS:
                raise InvalidArgument(f"network create: field {key} is not supported by Dockyard")
        name = body.string("Name")
        if not name:
            raise InvalidArgument('invalid network name "": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
        if body.boolean("Ingress"):
            raise InvalidArgument("ingress networks (--ingress) are not supported by Dockyard")
        if body.boolean("ConfigOnly") or (body.object("ConfigFrom", "network.ConfigReference") or {}).get("Network"):
            raise InvalidArgument("config-only networks (--config-only, --config-from) are not supported by Dockyard")
        if body.string("Scope") not in ("", "local"):
            raise InvalidArgument(f"network scope {body.string('Scope')} is not supported by Dockyard")
        ipam = body.object("IPAM", "network.IPAM") or {}
        if (ipam.get("Driver") or "default") != "default":
            raise InvalidArgument(f"IPAM driver {ipam['Driver']} is not supported by Dockyard")
        configs = ipam.get("Config") or []
        if not isinstance(configs, list) or len(configs) > 1:
            raise InvalidArgument("more than one IPv4 subnet per network is not supported by Dockyard")
        config = configs[0] if configs else {}
        if not isinstance(config, dict):
            raise InvalidArgument("invalid IPAM config: an object is expected")
        if config.get("AuxiliaryAddresses"):
            raise InvalidArgument("auxiliary addresses (--aux-address) are not supported by Dockyard")
        if ":" in str(config.get("Subnet") or ""):
            raise InvalidArgument("IPv6 subnets are not supported by Dockyard")
        record = self._user.create(
            name, body.string("Driver") or "bridge", subnet=str(config.get("Subnet") or ""),
            gateway=str(config.get("Gateway") or ""), ip_range=str(config.get("IPRange") or ""),
            internal=body.boolean("Internal"), attachable=body.boolean("Attachable"),
            labels=body.string_map("Labels"), options=body.string_map("Options"),
            ipam_options={str(k): str(v) for k, v in (ipam.get("Options") or {}).items()},
            enable_ipv6=body.boolean("EnableIPv6"))
        self.engine.events.publish("network", "create", record.id, {"name": record.name, "type": "bridge"})
        return json_response({"Id": record.id, "Warning": ""}, 201)

    def remove(self, request: Request) -> Response:
        record = self._user.remove(request.params["name"])
        self.engine.events.publish("network", "destroy", record.id, {"name": record.name, "type": "bridge"})
        return empty_response(204)

    def prune(self, request: Request) -> Response:
        filters = {k: v for k, v in request.filters().items() if v}
        until = filters.pop("until", None)
        labels = filters.pop("label", [])
        if filters:
            raise InvalidArgument(f"Invalid filter '{sorted(filters)[0]}'")
        deleted = []
        for record in self._user.store.user_networks():
            if self._user.active_endpoints(record.id):
                continue
            if not all(_label_match(record.labels, v) for v in labels):
                continue
            if until and parse_time_ns(record.created) > _until_ns(until[0]):
                continue
            try:
                self._user.remove(record.id)
            except NotFound:
                continue
            self.engine.events.publish("network", "destroy", record.id, {"name": record.name, "type": "bridge"})
            deleted.append(record.name)
        return json_response({"NetworksDeleted": deleted})

    def _container_and_body(self, request: Request, struct: str) -> tuple[Container, BodyFields]:
        body = BodyFields(top_level_object(request.json(), struct), struct)
        ref = body.string("Container")
        self._user.find(request.params["name"])   # a missing network answers 404 first
        return self.engine.containers.inspect(ref), body

    def connect(self, request: Request) -> Response:
        container, body = self._container_and_body(request, "NetworkConnectRequest")
        mode = container.host_config.get("NetworkMode") or ""
        if mode in ("host", "none") or mode.startswith("container:"):
            raise InvalidArgument("container sharing network namespace with another container or host "
                                  "cannot be connected to any other network")
        record = self._user.find(request.params["name"])
        self.engine.networks.connect(container, record.id,
                                     body.object("EndpointConfig", "network.EndpointSettings"))
        self.engine.events.publish("network", "connect", record.id,
                                   {"container": container.id, "name": record.name, "type": "bridge"})
        return empty_response(200)

    def disconnect(self, request: Request) -> Response:
        container, body = self._container_and_body(request, "NetworkDisconnectRequest")
        record = self._user.find(request.params["name"])
        self.engine.networks.manager.disconnect(container.id, record.id)
        self.engine.events.publish("network", "disconnect", record.id,
                                   {"container": container.id, "name": record.name, "type": "bridge"})
        return empty_response(200)


def _until_ns(value: str) -> int:
    """A prune `until` value: a Unix time in seconds or an RFC 3339 stamp."""
    try:
        return int(float(value) * 1e9)
    except ValueError:
        return parse_time_ns(value)
