"""Volume endpoints: /volumes (list, create, inspect, delete, prune)."""

from __future__ import annotations

from runtime.engine.facade import Engine

from . import docker_json
from .http_request import Request
from .http_response import Response, empty_response, json_response
from .http_server import Router
from .request_body import BodyFields, top_level_object


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
        volumes = self.engine.volumes.list(request.filters())
        return json_response({"Volumes": [docker_json.volume_json(v) for v in volumes],
                              "Warnings": []})

    def create(self, request: Request) -> Response:
        body = BodyFields(top_level_object(request.json(), "volume.CreateOptions"), "CreateOptions")
        volume = self.engine.volumes.create(
            name=body.string("Name") or None, driver=body.string("Driver") or "local",
            labels=body.string_map("Labels"), options=body.string_map("DriverOpts"))
        return json_response(docker_json.volume_json(volume), 201)

    def inspect(self, request: Request) -> Response:
        return json_response(docker_json.volume_json(self.engine.volumes.get(request.params["name"])))

    def remove(self, request: Request) -> Response:
        self.engine.volumes.remove(request.params["name"], force=request.bool_arg("force"))
        return empty_response(204)

    def prune(self, request: Request) -> Response:
        deleted, reclaimed = self.engine.volumes.prune(request.filters())
        return json_response({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed})
