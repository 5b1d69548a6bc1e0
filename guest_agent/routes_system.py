"""System endpoints: _ping, version, info, events, system df.

_ping and version need no engine: the agent serves them (register_startup_routes) while
the engine is still being imported and its state recovered, so this module imports
nothing heavy at the top.
"""

from __future__ import annotations

import json
import os
import socket
import sys

from runtime.version import SERVER_VERSION

from .api_errors import NotImplementedByDockyard
from .http_request import Request
from .http_response import Response, StreamResponse, json_response
from .http_server import API_VERSION, MIN_API_VERSION, Router

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads the name as True
if TYPE_CHECKING:  # annotations only: typing (and platform) cost ~0.1-0.2 s each of a TCG boot
    from collections.abc import Callable, Iterator
    from typing import Any

    from runtime.engine.facade import Engine

# The engine names the Docker version it behaves like; /version and /info must agree on it.
AGENT_VERSION = SERVER_VERSION
ZERO_TIME = "0001-01-01T00:00:00Z"   # docker_json.ZERO_TIME, without importing docker_json

_PING_HEADERS = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Builder-Version": "1",
}

# Endpoints answered with 501 and a sentence saying which feature is missing.
NOT_IMPLEMENTED: tuple[tuple[str, str, str], ...] = (
    ("GET", "/containers/{id}/attach/ws", "attaching over websockets"),
    ("POST", "/session", "build sessions (BuildKit)"),
    ("GET", "/plugins", "plugins"),
    ("POST", "/swarm/init", "swarm mode"),
)


def _go_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def ping(request: Request) -> Response:
    return Response(status=200, body=b"OK", content_type="text/plain; charset=utf-8",
                    headers=dict(_PING_HEADERS))


def version(request: Request) -> Response:
    kernel = os.uname().release
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
               "Arch": _go_arch(), "KernelVersion": kernel, "GitCommit": "dockyard",
               "GoVersion": "python" + ".".join(map(str, sys.version_info[:3])), "BuildTime": "",
               "Experimental": "false"}
    return json_response({
        "Platform": {"Name": "Dockyard Engine"},
        "Components": [{"Name": "Engine", "Version": AGENT_VERSION, "Details": details}],
        "Version": AGENT_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "dockyard", "GoVersion": details["GoVersion"], "Os": "linux",
        "Arch": _go_arch(), "KernelVersion": kernel, "BuildTime": "",
    })


def register_startup_routes(router: Router) -> None:
    """The endpoints that answer without an engine: `docker version` works from the first moment."""
    router.get("/_ping", ping)
    router.head("/_ping", ping)
    router.get("/version", version)


class SystemRoutes:
    """Engine-wide endpoints."""

    def __init__(self, engine: Engine, root: str = "",
                 insecure_registries: list[str] | None = None) -> None:
        self.engine = engine
        self.root = root
        self.insecure_registries = list(insecure_registries or [])

    def register(self, router: Router) -> None:
        register_startup_routes(router)
        router.get("/info", self.info)
        router.get("/events", self.events)
        router.get("/system/df", self.system_df)
        router.post("/auth", self.auth)
        for method, path, what in NOT_IMPLEMENTED:
            router.add(method, path, self._not_implemented(what))

    @staticmethod
    def _not_implemented(what: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            raise NotImplementedByDockyard(f"{what} is not implemented by Dockyard yet")
        return handler

    ping = staticmethod(ping)
    version = staticmethod(version)

    def info(self, request: Request) -> Response:
        from . import docker_json
        facts = dict(self.engine.system.info())
        defaults: dict[str, Any] = {
            "ID": socket.gethostname(), "Containers": 0, "ContainersRunning": 0,
            "ContainersPaused": 0, "ContainersStopped": 0, "Images": 0,
            "Driver": "overlay2", "DriverStatus": [], "Plugins": {
                "Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": None,
                "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": False, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
            "Debug": False, "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": False,
            "NGoroutines": 0, "SystemTime": docker_json.now_rfc3339(), "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs", "CgroupVersion": "1", "NEventsListener": 0,
            "KernelVersion": os.uname().release, "OperatingSystem": "Dockyard",
            "OSVersion": "", "OSType": "linux", "Architecture": os.uname().machine,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"],
                               "Mirrors": []},
            "NCPU": os.cpu_count() or 1, "MemTotal": 0, "DockerRootDir": self.root,
            "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": socket.gethostname(),
            "Labels": [], "ExperimentalBuild": False, "ServerVersion": AGENT_VERSION,
            "Runtimes": {"dockyard": {"path": "dockyard-agent"}}, "DefaultRuntime": "dockyard",
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": False, "Isolation": "", "InitBinary": "",
            "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
            "SecurityOptions": [], "Warnings": None,
        }
        for key, value in defaults.items():
            facts.setdefault(key, value)
        return json_response(facts)

    def events(self, request: Request) -> StreamResponse:
        since = request.float_arg("since", 0.0) or None
        until = request.float_arg("until", 0.0) or None
        from . import docker_json
        subscription = self.engine.events.subscribe(since=since, until=until,
                                                    filters=request.filters())

        def stream() -> Iterator[bytes]:
            try:
                for event in subscription:
                    yield json.dumps(docker_json.event_json(event)).encode() + b"\n"
            finally:
                subscription.close()

        return StreamResponse(chunks=stream(), on_client_gone=subscription.close)

    def auth(self, request: Request) -> Response:
        """docker login: the registry must accept the credentials."""
        from .registry_login import check_login, login_response, parse_login_body
        check_login(parse_login_body(request.json(default={})), self.insecure_registries)
        return json_response(login_response())

    def system_df(self, request: Request) -> Response:
        from . import docker_json
        images = self.engine.images.list()
        containers = self.engine.containers.list(all=True)
        volumes = self.engine.volumes.list()
        counts: dict[str, int] = {}
        for c in containers:
            counts[c.image_id] = counts.get(c.image_id, 0) + 1
        return json_response({
            "LayersSize": sum(i.size for i in images),
            "Images": [docker_json.image_summary(i, counts.get(i.id, 0)) for i in images],
            "Containers": [docker_json.container_summary(c, size=self.engine.containers.size(c.id))
                           for c in containers],
            "Volumes": [docker_json.volume_json(v, len(self.engine.volumes.users(v.name)),
                                                self.engine.volumes.usage(v.name))
                        for v in volumes],
            "BuildCache": [],
        })
