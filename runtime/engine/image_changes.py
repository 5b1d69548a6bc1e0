"""The `changes` of `docker commit --change` and `docker import --change`: single Dockerfile
instructions applied to an image's container config, as dockerd's BuildFromConfig does.

Accepted: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, HEALTHCHECK (the
ones dockerd accepts) and STOPSIGNAL (which dockerd 20.10 refuses; newer builders set it, and
it is only a config field). Anything else is refused by name, as dockerd words it ("run is
not a valid change command"). The lines are one small Dockerfile (joined with newlines), read
by runtime/build's parser; ENV, LABEL, EXPOSE, USER, WORKDIR, VOLUME and STOPSIGNAL words are
expanded against the config's environment as the builder does.
"""

from __future__ import annotations

import copy
from typing import Any

from ..build import dockerfile_lines
from ..build.dockerfile import DockerfileError, Instruction, healthcheck_config, parse_instruction, path_words
from ..build.shell_words import expand_word, expand_words, parse_key_values
from ..containers.config import parse_signal
from ..errors import BuildError, InvalidArgument

VALID = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR",
         "HEALTHCHECK", "STOPSIGNAL")
DEFAULT_SHELL = ["/bin/sh", "-c"]


def _instructions(changes: list[str]) -> tuple[str, list[Instruction]]:
    """(escape, parsed instructions); every keyword is checked before any line is parsed."""
    try:
        escape, _, logical = dockerfile_lines.scan("\n".join(changes))
    except dockerfile_lines.LineError as err:
        raise InvalidArgument(err.message) from None
    for ll in logical:
        keyword = dockerfile_lines.split_command(ll.text)[0]
        if keyword.upper() not in VALID:
            raise InvalidArgument(f"{keyword.lower()} is not a valid change command")
    try:
        return escape, [parse_instruction(ll.text, escape, ll.line) for ll in logical]
    except DockerfileError as err:
        raise InvalidArgument(err.reason) from None


def _env_map(config: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) if "=" in e else (e, "") for e in config.get("Env") or [])


def _command(inst: Instruction, config: dict[str, Any]) -> list[str]:
    """CMD/ENTRYPOINT: the JSON form as given, else the shell form run by the config's shell."""
    if inst.json_form:
        return list(inst.args)
    return [*(config.get("Shell") or DEFAULT_SHELL), inst.args[0] if inst.args else ""]


def _ports(words: list[str]) -> list[str]:
    out = []
    for spec in words:
        port, _, proto = spec.partition("/")
        proto = proto.lower() or "tcp"
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"Invalid proto: {proto}")
        low, dash, high = port.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise InvalidArgument(f"Invalid containerPort: {port}")
        first, last = int(low), int(high) if dash else int(low)
        if last < first or last > 65535:
            raise InvalidArgument(f"Invalid containerPort: {port}")
        out += [f"{p}/{proto}" for p in range(first, last + 1)]
    return out


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """A copy of the container config `config` with the instructions in `changes` applied.

    InvalidArgument (dockerd's message) for an instruction that is not allowed or malformed;
    all are checked before any is applied.
    """
    escape, instructions = _instructions(changes)
    out = copy.deepcopy(config)
    cmd_set = False
    try:
        for inst in instructions:
            cmd_set = _apply(out, inst, escape, cmd_set)
    except BuildError as err:
        raise InvalidArgument(err.message) from None
    return out


def _apply(out: dict[str, Any], inst: Instruction, escape: str, cmd_set: bool) -> bool:
    """Apply one instruction to `out`; returns whether CMD has been set so far."""
    keyword, env = inst.keyword, _env_map(out)
    if keyword == "CMD":
        out["Cmd"] = _command(inst, out)
        return True
    if keyword == "ENTRYPOINT":
        # An empty JSON list is no entrypoint at all (null), as dockerd stores it.
        out["Entrypoint"] = (list(inst.args) or None) if inst.json_form else _command(inst, out)
        if not cmd_set:
            out["Cmd"] = None   # dockerd: an ENTRYPOINT drops the CMD unless one was given
    elif keyword in ("ENV", "LABEL"):
        pairs = [(expand_word(k, env, escape), expand_word(v, env, escape))
                 for k, v in parse_key_values(inst.args, keyword, escape)]
        if keyword == "LABEL":
            out["Labels"] = {**(out.get("Labels") or {}), **dict(pairs)}
        else:
            current = list(out.get("Env") or [])
            for key, value in pairs:
                index = next((i for i, e in enumerate(current) if e.split("=", 1)[0] == key), None)
                if index is None:
                    current.append(f"{key}={value}")
                else:
                    current[index] = f"{key}={value}"
            out["Env"] = current
    elif keyword == "EXPOSE":
        ports = _ports(expand_words(inst.args[0], env, escape))
        out["ExposedPorts"] = {**(out.get("ExposedPorts") or {}), **{p: {} for p in ports}}
    elif keyword in ("USER", "WORKDIR", "STOPSIGNAL"):
        value = expand_word(inst.args[0], env, escape)
        if keyword == "USER":
            out["User"] = value
        elif keyword == "STOPSIGNAL":
            parse_signal(value)
            out["StopSignal"] = value
        else:
            out["WorkingDir"] = _workdir(out.get("WorkingDir") or "", value)
    elif keyword == "VOLUME":
        volumes = [expand_word(v, env, escape) for v in path_words(inst)]
        if any(not v.strip() for v in volumes):
            raise InvalidArgument("VOLUME specified can not be an empty string")
        out["Volumes"] = {**(out.get("Volumes") or {}), **{v: {} for v in volumes}}
    elif keyword == "ONBUILD":
        assert inst.onbuild is not None   # the parser refuses an ONBUILD without a trigger
        out["OnBuild"] = [*(out.get("OnBuild") or []), inst.onbuild.original]
    elif keyword == "HEALTHCHECK":
        out["Healthcheck"] = healthcheck_config(inst)
    return cmd_set


def _workdir(current: str, requested: str) -> str:
    """dockerd's normalizeWorkdir: a relative WORKDIR is joined to the current one (cleaned);
    an absolute one is kept as written."""
    if not requested:
        raise InvalidArgument("cannot normalize nothing")
    if requested.startswith("/"):
        return requested
    parts: list[str] = []
    for comp in f"/{current}/{requested}".split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
        else:
            parts.append(comp)
    return "/" + "/".join(parts)


def _merged_set(user: dict[str, Any] | None, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """ExposedPorts/Volumes: the image's when the user set none, else the union."""
    if not user:
        return image
    return {**user, **(image or {})}


def merge_container_config(user: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """dockerd's commit `merge`: what `user` (the committed config) leaves unset comes from
    `image` (the container's config); returns `user`, changed in place."""
    if not user.get("User"):
        user["User"] = image.get("User", "")
    user["ExposedPorts"] = _merged_set(user.get("ExposedPorts"), image.get("ExposedPorts"))
    if not user.get("Env"):
        user["Env"] = image.get("Env")
    else:
        keys = {e.split("=", 1)[0] for e in user["Env"]}
        user["Env"] = [*user["Env"], *(e for e in image.get("Env") or [] if e.split("=", 1)[0] not in keys)]
    user["Labels"] = {**(image.get("Labels") or {}), **(user.get("Labels") or {})}
    if not user.get("Entrypoint"):
        if not user.get("Cmd"):
            user["Cmd"] = image.get("Cmd")
            if "ArgsEscaped" in image:
                user["ArgsEscaped"] = image["ArgsEscaped"]
        if user.get("Entrypoint") is None:
            user["Entrypoint"] = image.get("Entrypoint")
    health = image.get("Healthcheck")
    if health is not None:
        if user.get("Healthcheck") is None:
            user["Healthcheck"] = health
        else:
            for key, value in health.items():
                if not user["Healthcheck"].get(key):
                    user["Healthcheck"][key] = value
    if not user.get("WorkingDir"):
        user["WorkingDir"] = image.get("WorkingDir", "")
    user["Volumes"] = _merged_set(user.get("Volumes"), image.get("Volumes"))
    if not user.get("StopSignal") and image.get("StopSignal"):
        user["StopSignal"] = image["StopSignal"]
    return user


_OMIT = object()   # an `omitempty` field: left out when it holds its zero value
# Go's container.Config, in its field order, with each field's zero value.
_CONFIG_FIELDS: tuple[tuple[str, Any], ...] = (
    ("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False),
    ("AttachStdout", False), ("AttachStderr", False), ("ExposedPorts", _OMIT), ("Tty", False),
    ("OpenStdin", False), ("StdinOnce", False), ("Env", None), ("Cmd", None),
    ("Healthcheck", _OMIT), ("ArgsEscaped", _OMIT), ("Image", ""), ("Volumes", None),
    ("WorkingDir", ""), ("Entrypoint", None), ("NetworkDisabled", _OMIT), ("MacAddress", _OMIT),
    ("OnBuild", None), ("Labels", None), ("StopSignal", _OMIT), ("StopTimeout", _OMIT),
    ("Shell", _OMIT),
)


def go_container_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` as dockerd writes a container.Config into an image: every field, in Go's
    order, zero values for the missing ones, `omitempty` ones only when set."""
    out: dict[str, Any] = {}
    for key, zero in _CONFIG_FIELDS:
        value = config.get(key)
        if zero is _OMIT:
            if value not in (None, "", False, 0, {}, []):
                out[key] = copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value) if value is not None else zero
    return out


def history_entry(created: str, created_by: str, author: str = "", comment: str = "",
                  empty: bool = False) -> dict[str, Any]:
    """One image history entry, as Go's image.History marshals it (empty fields omitted)."""
    entry: dict[str, Any] = {"created": created}
    if author:
        entry["author"] = author
    if created_by:
        entry["created_by"] = created_by
    if comment:
        entry["comment"] = comment
    if empty:
        entry["empty_layer"] = True
    return entry
