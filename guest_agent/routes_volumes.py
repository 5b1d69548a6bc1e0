"""Volume endpoints: /volumes (list, create, inspect, delete, prune)."""

from __future__ import annotations

from runtime.engine import Engine
from runtime.errors import InvalidArgument

from . import docker_json
from .http_server import Request, Response, Router, empty_response, json_response


def _str_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"invalid {what}: expected a JSON object")
    return {str(k): str(v) for k, v in value.items()}


class VolumeRoutes:
    """Named volumes kept by the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, router: Router) -> None:
        router.get("/volumes", self.list)
        router.post("/volumes/create", self.create)
        router.post("/volumes/prune", self.prune)
        router.get("/volumes/{name}", self.inspect)
        router.delete("/volumes/{name}", self.remove)

    def list(self, request: Request) -> Response:
        volumes = self.engine.list_volumes(request.filters())
        return json_response({"Volumes": [docker_json.volume_json(v) for v in volumes],
                              "Warnings": []})

    def create(self, request: Request) -> Response:
        body = request.json_object()
        volume = self.engine.create_volume(
            name=body.get("Name") or None, driver=body.get("Driver") or "local",
            labels=_str_map(body.get("Labels"), "Labels"),
            options=_str_map(body.get("DriverOpts"), "DriverOpts"))
        return json_response(docker_json.volume_json(volume), 201)

    def inspect(self, request: Request) -> Response:
        return json_response(docker_json.volume_json(self.engine.get_volume(request.params["name"])))

    def remove(self, request: Request) -> Response:
        self.engine.remove_volume(request.params["name"], force=request.bool_arg("force"))
        return empty_response(204)

    def prune(self, request: Request) -> Response:
        deleted, reclaimed = self.engine.prune_volumes(request.filters())
        return json_response({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed})
