"""The Dockerfile instructions that only change an image's config (no files), as dockerd's
classic builder applies them: ENV, LABEL, CMD, ENTRYPOINT, EXPOSE, VOLUME, USER,
WORKDIR (its config half), STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD, MAINTAINER.

Each handler gets the runtime config (the image config's "config" object) to change,
the instruction, and the words already expanded where Docker expands them; it returns
the text recorded in the history ("ENV A=b").
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from typing import Any

from .. import path_scope
from ..errors import InvalidArgument
from .dockerfile import Instruction, healthcheck_config

DEFAULT_SHELL = ["/bin/sh", "-c"]


def shell_of(rc: dict[str, Any]) -> list[str]:
    return list(rc.get("Shell") or DEFAULT_SHELL)


def command_of(rc: dict[str, Any], ins: Instruction) -> list[str]:
    """CMD/ENTRYPOINT/RUN/HEALTHCHECK CMD's argv: exec form as given, shell form through the shell."""
    if ins.json_form:
        return list(ins.args)
    return shell_of(rc) + [" ".join(ins.args)]


def check_flags(ins: Instruction, allowed: tuple[str, ...]) -> None:
    for name in ins.flags:
        if name not in allowed:
            raise InvalidArgument(f"Unknown flag: {name}")


def apply_cmd(rc: dict[str, Any], ins: Instruction) -> str:
    check_flags(ins, ())
    rc["Cmd"] = command_of(rc, ins)
    return f"CMD {json.dumps(rc['Cmd'])}"


def apply_entrypoint(rc: dict[str, Any], ins: Instruction, cmd_set: bool) -> str:
    check_flags(ins, ())
    if not ins.json_form and not " ".join(ins.args).strip():
        rc["Entrypoint"] = None   # ENTRYPOINT with nothing: cleared
    else:
        rc["Entrypoint"] = command_of(rc, ins)
    if not cmd_set:
        rc["Cmd"] = None          # an ENTRYPOINT drops a CMD inherited from the base image
    return f"ENTRYPOINT {json.dumps(rc['Entrypoint'])}"


def apply_env(rc: dict[str, Any], pairs: list[tuple[str, str]]) -> str:
    env = list(rc.get("Env") or [])
    for key, value in pairs:
        if not key:
            raise InvalidArgument("ENV names can not be blank")
        env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
    # dockerd keeps the position of a variable that is set again
    order = {e.partition("=")[0]: i for i, e in enumerate(rc.get("Env") or [])}
    env.sort(key=lambda e: order.get(e.partition("=")[0], len(order)))
    rc["Env"] = env
    return "ENV " + " ".join(f"{k}={v}" for k, v in pairs)


def apply_label(rc: dict[str, Any], pairs: list[tuple[str, str]]) -> str:
    labels = dict(rc.get("Labels") or {})
    for key, value in pairs:
        if not key:
            raise InvalidArgument("LABEL names can not be blank")
        labels[key] = value
    rc["Labels"] = labels
    return "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)


def apply_expose(rc: dict[str, Any], words: list[str]) -> str:
    ports = dict(rc.get("ExposedPorts") or {})
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"invalid proto: {proto}")
        low, _, high = port.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise InvalidArgument(f"invalid containerPort: {port}")
        first, last = int(low), int(high or low)
        if last < first or last > 65535:
            raise InvalidArgument(f"invalid port range: {port}")
        for p in range(first, last + 1):
            ports[f"{p}/{proto}"] = {}
    rc["ExposedPorts"] = ports
    return "EXPOSE " + " ".join(sorted(ports))


def apply_volume(rc: dict[str, Any], words: list[str]) -> str:
    if not words:
        raise InvalidArgument("VOLUME specified can not be an empty string")
    volumes = dict(rc.get("Volumes") or {})
    for word in words:
        path = word.strip()
        if not path:
            raise InvalidArgument("VOLUME specified can not be an empty string")
        volumes[path] = {}
    rc["Volumes"] = volumes
    return f"VOLUME {json.dumps(words)}"


def apply_user(rc: dict[str, Any], words: list[str]) -> str:
    rc["User"] = " ".join(words)
    return f"USER {rc['User']}"


def apply_workdir(rc: dict[str, Any], words: list[str]) -> str:
    path = " ".join(words)
    if not path:
        raise InvalidArgument("WORKDIR requires exactly one argument")
    if not path.startswith("/"):
        path = (rc.get("WorkingDir") or "/").rstrip("/") + "/" + path
    rc["WorkingDir"] = path_scope.clean(path)
    return f"WORKDIR {rc['WorkingDir']}"


def apply_stopsignal(rc: dict[str, Any], words: list[str]) -> str:
    sig = " ".join(words)
    if not _valid_signal(sig):
        raise InvalidArgument(f"Invalid signal: {sig}")
    rc["StopSignal"] = sig
    return f"STOPSIGNAL {sig}"


def _valid_signal(text: str) -> bool:
    if text.isdigit():
        return 0 < int(text) < 65
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    return name in signal.Signals.__members__ or re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name) is not None


def apply_healthcheck(rc: dict[str, Any], ins: Instruction) -> str:
    rc["Healthcheck"] = healthcheck_config(ins)
    return f"HEALTHCHECK {json.dumps(rc['Healthcheck'])}"


def apply_shell(rc: dict[str, Any], ins: Instruction) -> str:
    if not ins.json_form:
        raise InvalidArgument("SHELL requires the arguments to be in JSON form")
    if not ins.args:
        raise InvalidArgument("SHELL requires at least one argument")
    rc["Shell"] = list(ins.args)
    return f"SHELL {json.dumps(rc['Shell'])}"


def apply_onbuild(rc: dict[str, Any], ins: Instruction) -> str:
    if ins.onbuild is None:
        raise InvalidArgument("ONBUILD requires at least one argument")
    trigger = ins.onbuild.original.strip()
    rc["OnBuild"] = list(rc.get("OnBuild") or []) + [trigger]
    return f"ONBUILD {trigger}"


def apply_maintainer(config: dict[str, Any], words: list[str]) -> str:
    config["author"] = " ".join(words)
    return f"MAINTAINER {config['author']}"


Handler = Callable[[dict[str, Any], list[str]], str]
WORD_HANDLERS: dict[str, Handler] = {
    "EXPOSE": apply_expose, "VOLUME": apply_volume, "USER": apply_user,
    "WORKDIR": apply_workdir, "STOPSIGNAL": apply_stopsignal,
}
