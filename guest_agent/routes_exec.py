"""Exec endpoints: POST /containers/{id}/exec, /exec/{id}/start|resize|json."""

from __future__ import annotations

import logging

from runtime.detach_keys import parse_detach_keys
from runtime.engine import Engine
from runtime.errors import InvalidArgument

from . import docker_json
from .http_server import (MULTIPLEXED_STREAM, RAW_STREAM, HijackedConnection, HijackResponse,
                          Request, Response, Router, json_response)
from .stdio_stream import pump_session

log = logging.getLogger(__name__)

# How long to wait, once an exec's output ended, for its exit code to be recorded.
EXIT_CODE_WAIT = 10.0


def _string_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {what}: expected a list of strings")
    return list(value)


def _optional_string(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {what}: expected a string")
    return value


def _field(body: dict, name: str) -> object:
    """A body field matched case-insensitively, as Go's JSON decoding does (docker-py sends
    "detachKeys")."""
    if name in body:
        return body[name]
    lowered = name.lower()
    return next((v for k, v in body.items() if k.lower() == lowered), None)


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
        body = request.json_object()
        cmd = _string_list(body.get("Cmd"), "Cmd")
        if not cmd:
            raise InvalidArgument("No exec command specified")
        ex = self.engine.create_exec(
            request.params["id"], cmd, env=_string_list(body.get("Env"), "Env"),
            user=body.get("User") or "", working_dir=body.get("WorkingDir") or "",
            tty=bool(body.get("Tty")), attach_stdin=bool(body.get("AttachStdin")),
            attach_stdout=bool(body.get("AttachStdout", True)),
            attach_stderr=bool(body.get("AttachStderr", True)),
            privileged=bool(body.get("Privileged")),
            detach_keys=_optional_string(_field(body, "DetachKeys"), "DetachKeys"))
        return json_response({"Id": ex.id}, 201)

    def start(self, request: Request) -> Response | HijackResponse:
        body = request.json_object()
        exec_id = request.params["id"]
        ex = self.engine.get_exec(exec_id)
        detach = bool(body.get("Detach"))
        # As dockerd, the start request's Tty chooses the framing (the process keeps the pty
        # its create asked for): docker-py's exec_start(tty=False) of a Tty exec gets frames.
        tty = bool(body.get("Tty", ex.tty))
        # Only a TTY exec looks for detach keys (stdin without one is binary data).
        detach_keys = parse_detach_keys(ex.detach_keys, "escape") if ex.tty else None
        session = self.engine.start_exec(exec_id, detach=detach)
        console = body.get("ConsoleSize")
        if tty and isinstance(console, list) and len(console) == 2 and all(console):
            try:
                self.engine.resize_exec_tty(exec_id, int(console[0]), int(console[1]))
            except Exception as err:  # a failed initial resize must not lose the exec's output
                log.debug("initial exec resize failed: %s", err)
        if detach or session is None:
            return Response(status=200, body=b"", content_type=None)

        def exit_code_final() -> None:
            # Optional engine helper: the exit code is recorded just after the output drains.
            wait_exec = getattr(self.engine, "wait_exec", None)
            if wait_exec is not None:
                wait_exec(exec_id, EXIT_CODE_WAIT)

        def run(conn: HijackedConnection) -> None:
            pump_session(conn, session, multiplexed=not tty, forward_stdin=ex.attach_stdin,
                         before_close=exit_code_final, detach_keys=detach_keys)

        return HijackResponse(run=run, content_type=RAW_STREAM if tty else MULTIPLEXED_STREAM)

    def resize(self, request: Request) -> Response:
        self.engine.resize_exec_tty(request.params["id"], request.int_arg("h", 0) or 0,
                                    request.int_arg("w", 0) or 0)
        return Response(status=200, body=b"", content_type="text/plain; charset=utf-8")

    def inspect(self, request: Request) -> Response:
        return json_response(docker_json.exec_inspect(self.engine.get_exec(request.params["id"])))
