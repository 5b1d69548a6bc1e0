"""Container endpoints: /containers/..."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from runtime.containers.config import keeps_logs, parse_signal
from runtime.containers.detach_keys import parse_detach_keys
from runtime.containers.schema import check_create
from runtime.engine.facade import Engine
from runtime.errors import InvalidArgument

from . import docker_json
from .api_errors import NotImplementedByDockyard
from .http_request import Request, streams_body
from .http_response import (
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    HijackedConnection,
    HijackResponse,
    Response,
    StreamResponse,
    empty_response,
    json_response,
)
from .http_server import Router
from .routes_networks import container_networks
from .stdio_stream import frame, pump_session

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0   # seconds between samples of a streamed `docker stats`


def _stop_timeout(request: Request) -> int | None:
    """`t` of stop/restart: seconds, negative for no limit; beyond what a wait can take
    (threading.TIMEOUT_MAX, about 292 years) it is no limit too."""
    timeout = request.int_arg("t")
    if timeout is not None and timeout > threading.TIMEOUT_MAX:
        return -1
    return timeout


def _signal_arg(request: Request, default: str | None) -> str | None:
    """The `signal` of kill/stop, checked before the container is looked up, as dockerd does
    ("Invalid signal: X" is a 400 even for a missing container)."""
    value = request.arg("signal") or default
    if value is None:
        return None
    # Only ASCII names and numbers: str.isdigit() also takes digits int() refuses ("\u00b2").
    if not value.isascii():
        raise InvalidArgument(f"Invalid signal: {value}")
    parse_signal(value)
    return value


def _tail(value: str | None) -> int | None:
    if value is None or value in ("", "all"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidArgument(f"invalid value for tail: {value!r}") from None
    return None if n < 0 else n


class ContainerRoutes:
    """Create, inspect, start/stop, attach, logs, wait ... of containers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, router: Router) -> None:
        router.get("/containers/json", self.list)
        router.post("/containers/create", self.create)
        router.post("/containers/prune", self.prune)
        router.get("/containers/{id}/json", self.inspect)
        router.post("/containers/{id}/start", self.start)
        router.post("/containers/{id}/stop", self.stop)
        router.post("/containers/{id}/kill", self.kill)
        router.post("/containers/{id}/restart", self.restart)
        router.post("/containers/{id}/wait", self.wait)
        router.post("/containers/{id}/attach", self.attach)
        router.get("/containers/{id}/logs", self.logs)
        router.post("/containers/{id}/resize", self.resize)
        router.get("/containers/{id}/top", self.top)
        router.post("/containers/{id}/rename", self.rename)
        router.post("/containers/{id}/update", self.update)
        router.get("/containers/{id}/stats", self.stats)
        router.post("/containers/{id}/pause", self.pause)
        router.post("/containers/{id}/unpause", self.unpause)
        router.delete("/containers/{id}", self.remove)
        router.head("/containers/{id}/archive", self.archive_stat)
        router.get("/containers/{id}/archive", self.archive_get)
        router.put("/containers/{id}/archive", self.archive_put)
        router.get("/containers/{id}/export", self.export)
        router.get("/containers/{id}/changes", self.changes)
        router.post("/commit", self.commit)

    # -- listing and inspection -----------------------------------------------
    def list(self, request: Request) -> Response:
        containers = self.engine.containers.list(all=request.bool_arg("all"),
                                                 filters=request.filters(),
                                                 limit=request.int_arg("limit", -1) or -1)
        if not request.bool_arg("size"):
            return json_response([docker_json.container_summary(c, networks=container_networks(self.engine, c))
                                  for c in containers])
        return json_response([docker_json.container_summary(c, size=self.engine.containers.size(c.id),
                                                            networks=container_networks(self.engine, c))
                              for c in containers])

    def inspect(self, request: Request) -> Response:
        container = self.engine.containers.inspect(request.params["id"])
        size = self.engine.containers.size(container.id) if request.bool_arg("size") else None
        return json_response(docker_json.container_inspect(container, size,
                                                           container_networks(self.engine, container)))

    def top(self, request: Request) -> Response:
        titles, processes = self.engine.containers.top(request.params["id"],
                                                      request.arg("ps_args") or "")
        return json_response({"Titles": titles, "Processes": processes})

    # -- lifecycle ------------------------------------------------------------
    def create(self, request: Request) -> Response:
        body, host_config, networking = split_create_body(request.json_object())
        # Types first, as dockerd's JSON decoding: nothing below sees a value of the wrong type.
        body, host_config = check_create(body, host_config)
        if not body.get("Image"):
            raise InvalidArgument("config cannot be empty in order to create a container")
        name = request.arg("name") or None
        container = self.engine.containers.create(name, body, host_config, networking)
        return json_response({"Id": container.id, "Warnings": []}, 201)

    def start(self, request: Request) -> Response:
        # As dockerd: a body of 7 bytes or less ("{}", "null") is ignored, a longer one is the
        # HostConfig-on-start of API < 1.24, which no supported version accepts.
        if len(request.body) > 7:
            raise InvalidArgument("starting container with non-empty request body was deprecated "
                                  "since API v1.22 and removed in v1.24")
        self.engine.containers.start(request.params["id"])
        return empty_response(204)

    def stop(self, request: Request) -> Response:
        self.engine.containers.stop(request.params["id"], timeout=_stop_timeout(request),
                                   signal=_signal_arg(request, None))
        return empty_response(204)

    def kill(self, request: Request) -> Response:
        self.engine.containers.kill(request.params["id"], signal=_signal_arg(request, "SIGKILL") or "SIGKILL")
        return empty_response(204)

    def restart(self, request: Request) -> Response:
        self.engine.containers.restart(request.params["id"], timeout=_stop_timeout(request))
        return empty_response(204)

    def remove(self, request: Request) -> Response:
        self.engine.containers.remove(request.params["id"], force=request.bool_arg("force"),
                                     remove_volumes=request.bool_arg("v"))
        return empty_response(204)

    def commit(self, request: Request) -> Response:
        """`docker commit`: POST /commit?container=&repo=&tag=&comment=&author=&changes=&pause=."""
        body = request.json_object()
        # Go decodes "{}" (docker-py) or "null" (the CLI) into no config at all: the
        # container's own is used. Any field given starts a config of its own.
        config = check_create(body, None)[0] or None if body else None
        pause = request.arg("pause") in (None, "") or request.bool_arg("pause")
        image = self.engine.containers.commit(
            request.arg("container") or "", repo=request.arg("repo") or "",
            tag=request.arg("tag") or "", message=request.arg("comment") or "",
            author=request.arg("author") or "", changes=request.query.get("changes", []),
            pause=pause, config=config)
        return json_response({"Id": image.id}, 201)

    def rename(self, request: Request) -> Response:
        new_name = request.arg("name")
        if not new_name:
            raise InvalidArgument("rename needs a new name (?name=)")
        self.engine.containers.rename(request.params["id"], new_name)
        return empty_response(204)

    def update(self, request: Request) -> Response:
        warnings = self.engine.containers.update(request.params["id"], request.json_object())
        return json_response({"Warnings": warnings})

    def prune(self, request: Request) -> Response:
        deleted, reclaimed = self.engine.containers.prune(request.filters())
        return json_response({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed})

    def resize(self, request: Request) -> Response:
        height, width = request.tty_size()
        self.engine.containers.resize_tty(request.params["id"], height, width)
        return Response(status=200, body=b"", content_type="text/plain; charset=utf-8")

    def pause(self, request: Request) -> Response:
        self.engine.containers.pause(request.params["id"])
        return empty_response(204)

    def unpause(self, request: Request) -> Response:
        self.engine.containers.unpause(request.params["id"])
        return empty_response(204)

    def stats(self, request: Request) -> Response | StreamResponse:
        from . import container_stats  # cgroup and syscall modules: not needed to start serving
        ref = request.params["id"]
        container = self.engine.containers.inspect(ref)
        if request.bool_arg("one-shot") or not container.state.running:
            return json_response(container_stats.sample(container))

        def sample(previous: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
            """A stats object (with `previous` as what CPU% is computed against), and whether it runs."""
            current = self.engine.containers.inspect(ref)
            stats = container_stats.sample(current)
            if previous is not None:
                stats["precpu_stats"], stats["preread"] = previous["cpu_stats"], previous["read"]
            return stats, current.state.running

        if not request.bool_arg("stream", True):
            # As dockerd: two samples one period apart, so `docker stats --no-stream`
            # shows the CPU use of that second, not 0 % for want of a previous sample.
            first, _ = sample(None)
            time.sleep(STATS_INTERVAL)
            return json_response(sample(first)[0])
        gone = threading.Event()

        def body() -> Iterator[bytes]:
            previous: dict[str, Any] | None = None
            while not gone.is_set():
                stats, running = sample(previous)
                yield json.dumps(stats).encode() + b"\n"
                if not running:
                    return
                previous = stats
                gone.wait(STATS_INTERVAL)  # the sampling period of the stream, as dockerd's

        return StreamResponse(chunks=body(), on_client_gone=gone.set)

    def wait(self, request: Request) -> StreamResponse:
        condition = request.arg("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        handle = self.engine.containers.wait(request.params["id"], condition)

        def body() -> Iterator[bytes]:
            # The headers are already out (the CLI waits for them before it starts the container).
            try:
                code, error = handle.result()
            except Exception as err:
                log.debug("wait ended without a result: %s", err)
                code, error = -1, str(err) or "wait cancelled"
            yield json.dumps({"StatusCode": code,
                              "Error": {"Message": error} if error else None}).encode() + b"\n"

        return StreamResponse(chunks=body(), on_client_gone=handle.cancel)

    # -- files ----------------------------------------------------------------
    def _path_arg(self, request: Request) -> str:
        path = request.arg("path")
        if not path:
            raise InvalidArgument("Path cannot be empty")
        return path

    def archive_stat(self, request: Request) -> Response:
        stat, _ = self.engine.containers.archive(request.params["id"], self._path_arg(request), content=False)
        return Response(status=200, body=b"", content_type=None, headers={PATH_STAT_HEADER: _stat_header(stat)})

    def archive_get(self, request: Request) -> StreamResponse:
        stat, chunks = self.engine.containers.archive(request.params["id"], self._path_arg(request))
        return StreamResponse(chunks=chunks or (), content_type="application/x-tar",
                              headers={PATH_STAT_HEADER: _stat_header(stat)})

    @streams_body
    def archive_put(self, request: Request) -> Response:
        self.engine.containers.extract(
            request.params["id"], self._path_arg(request), request.stream or io.BytesIO(request.body),
            no_overwrite_dir_non_dir=request.bool_arg("noOverwriteDirNonDir"),
            copy_uid_gid=request.bool_arg("copyUIDGID"))
        return Response(status=200, body=b"", content_type=None)

    def export(self, request: Request) -> StreamResponse:
        chunks = self.engine.containers.export(request.params["id"])
        return StreamResponse(chunks=chunks, content_type="application/octet-stream")

    def changes(self, request: Request) -> Response:
        found = self.engine.containers.changes(request.params["id"])
        return json_response([{"Path": path, "Kind": kind} for kind, path in found])

    # -- stdio ----------------------------------------------------------------
    def attach(self, request: Request) -> HijackResponse:
        container = self.engine.containers.inspect(request.params["id"])
        tty = bool(container.config.get("Tty"))
        want_stdin = request.bool_arg("stdin")
        # Checked before the upgrade, as dockerd does; only a TTY session looks for them.
        detach_keys = parse_detach_keys(request.arg("detachKeys") or "", "detach")
        session = self.engine.containers.attach(
            container.id, stdin=want_stdin, stdout=request.bool_arg("stdout"),
            stderr=request.bool_arg("stderr"), logs=request.bool_arg("logs"))

        def run(conn: HijackedConnection) -> None:
            pump_session(conn, session, multiplexed=not tty, forward_stdin=want_stdin,
                         detach_keys=detach_keys if tty else None)

        return HijackResponse(run=run, content_type=RAW_STREAM if tty else MULTIPLEXED_STREAM)

    def logs(self, request: Request) -> StreamResponse:
        container = self.engine.containers.inspect(request.params["id"])
        if not keeps_logs(container.host_config):
            raise NotImplementedByDockyard("configured logging driver does not support reading")
        tty = bool(container.config.get("Tty"))
        stdout, stderr = request.bool_arg("stdout"), request.bool_arg("stderr")
        if not (stdout or stderr):
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        follow = request.bool_arg("follow")
        gone = threading.Event()
        records = self.engine.containers.logs(
            container.id, stdout=stdout, stderr=stderr, follow=follow,
            since=request.float_arg("since"), until=request.float_arg("until"),
            tail=_tail(request.arg("tail")), cancel=gone)
        timestamps = request.bool_arg("timestamps")

        def body() -> Iterator[bytes]:
            for record in records:
                data = record.data
                if timestamps:
                    data = record.time.encode() + b" " + data
                if tty:
                    yield data
                else:
                    yield frame(2 if record.stream == "stderr" else 1, data)

        # `docker logs -f` ended with Ctrl-C: release the follower at once instead of
        # when the container next writes or exits.
        on_gone = (lambda: self.engine.containers.cancel_logs(container.id, gone)) if follow else None
        return StreamResponse(chunks=body(), content_type=RAW_STREAM if tty else MULTIPLEXED_STREAM,
                              on_client_gone=on_gone)


PATH_STAT_HEADER = "X-Docker-Container-Path-Stat"


def _stat_header(stat: Any) -> str:
    """base64 of the JSON stat, as dockerd sends it."""
    return base64.b64encode(json.dumps(stat.as_json(), separators=(",", ":")).encode()).decode()


def split_create_body(body: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """(Config, HostConfig, NetworkingConfig) from a create request body (keys matched as Go does)."""
    body = dict(body)
    host_config: Any = {}
    networking = None
    for key in list(body):
        if key.lower() == "hostconfig":
            host_config = body.pop(key)
            host_config = {} if host_config is None else host_config
        elif key.lower() == "networkingconfig":
            networking = body.pop(key)
    return body, host_config, networking
