"""Exec endpoints: POST /containers/{id}/exec, /exec/{id}/start|resize|json."""

from __future__ import annotations

import logging

from runtime.containers.detach_keys import parse_detach_keys
from runtime.engine.facade import Engine
from runtime.errors import InvalidArgument

from . import docker_json
from .http_request import Request
from .http_response import MULTIPLEXED_STREAM, RAW_STREAM, HijackedConnection, HijackResponse, Response, json_response
from .http_server import Router
from .request_body import BodyFields, top_level_object
from .stdio_stream import pump_session

log = logging.getLogger(__name__)

# How long to wait, once an exec's output ended, for its exit code to be recorded.
EXIT_CODE_WAIT = 10.0


class ExecRoutes:
    """`docker exec`: create an exec instance, start it (hijacked), inspect it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, router: Router) -> None:
        router.post("/containers/{id}/exec", self.create)
        router.post("/exec/{id}/start", self.start)
        router.post("/exec/{id}/resize", self.resize)
        router.get("/exec/{id}/json", self.inspect)

    def create(self, request: Request) -> Response:
        body = BodyFields(top_level_object(request.json(), "types.ExecConfig"), "ExecConfig")
        cmd = body.string_list("Cmd")
        if not cmd:
            raise InvalidArgument("No exec command specified")
        ex = self.engine.execs.create(
            request.params["id"], cmd, env=body.string_list("Env"),
            user=body.string("User"), working_dir=body.string("WorkingDir"),
            tty=body.boolean("Tty"), attach_stdin=body.boolean("AttachStdin"),
            attach_stdout=body.boolean("AttachStdout", True),
            attach_stderr=body.boolean("AttachStderr", True),
            privileged=body.boolean("Privileged"),
            detach_keys=body.string("DetachKeys"))
        return json_response({"Id": ex.id}, 201)

    def start(self, request: Request) -> Response | HijackResponse:
        body = BodyFields(top_level_object(request.json(), "types.ExecStartCheck"), "ExecStartCheck")
        detach = body.boolean("Detach")
        console = body.uint_pair("ConsoleSize")
        requested_tty = body.boolean("Tty") if body.get("Tty") is not None else None
        exec_id = request.params["id"]
        ex = self.engine.execs.get(exec_id)
        # As dockerd, the start request's Tty chooses the framing (the process keeps the pty
        # its create asked for): docker-py's exec_start(tty=False) of a Tty exec gets frames.
        tty = ex.tty if requested_tty is None else requested_tty
        # Only a TTY exec looks for detach keys (stdin without one is binary data).
        detach_keys = parse_detach_keys(ex.detach_keys, "escape") if ex.tty else None
        session = self.engine.execs.start(exec_id, detach=detach)
        if tty and console is not None and all(console):
            try:
                self.engine.execs.resize_tty(exec_id, console[0], console[1])
            except Exception as err:  # a failed initial resize must not lose the exec's output
                log.debug("initial exec resize failed: %s", err)
        if detach or session is None:
            return Response(status=200, body=b"", content_type=None)

        def exit_code_final() -> None:
            # The exit code is recorded just after the output drains.
            self.engine.execs.wait(exec_id, EXIT_CODE_WAIT)

        def run(conn: HijackedConnection) -> None:
            pump_session(conn, session, multiplexed=not tty, forward_stdin=ex.attach_stdin,
                         before_close=exit_code_final, detach_keys=detach_keys)

        return HijackResponse(run=run, content_type=RAW_STREAM if tty else MULTIPLEXED_STREAM)

    def resize(self, request: Request) -> Response:
        height, width = request.tty_size()
        self.engine.execs.resize_tty(request.params["id"], height, width)
        return Response(status=200, body=b"", content_type="text/plain; charset=utf-8")

    def inspect(self, request: Request) -> Response:
        return json_response(docker_json.exec_inspect(self.engine.execs.get(request.params["id"])))
