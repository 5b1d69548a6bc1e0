"""The `changes` of `docker commit --change` and `docker import --change`: single Dockerfile
instructions applied to an image's container config, as dockerd's BuildFromConfig does.

Accepted: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, HEALTHCHECK (the
ones dockerd accepts) and STOPSIGNAL (which dockerd 20.10 refuses; newer engines' builders
set it, and it is only a config field). Anything else is refused by name, as dockerd words it
("run is not a valid change command"). ENV, LABEL, EXPOSE, USER, WORKDIR, VOLUME and
STOPSIGNAL words are expanded against the config's environment as the builder does ($V, ${V},
${V:-word}, ${V:+word}, quotes, backslash escapes); CMD, ENTRYPOINT, ONBUILD and HEALTHCHECK
are kept as written.

The lines are one small Dockerfile (joined with newlines, continuations and comments as in
a Dockerfile); the full Dockerfile parser is runtime/build's, which the builder uses.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from ..containers.config import parse_signal
from ..errors import InvalidArgument

VALID = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR",
         "HEALTHCHECK", "STOPSIGNAL")
DEFAULT_SHELL = ["/bin/sh", "-c"]
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_HEALTH_FLAGS = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                 "retries": "Retries"}


def _lines(changes: list[str]) -> list[str]:
    """Instructions of the joined text: comments and blank lines dropped, `\\` continuations joined."""
    out: list[str] = []
    pending = ""
    for raw in "\n".join(changes).split("\n"):
        line = raw.rstrip("\r")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        out.append((pending + line).strip())
        pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def _split_words(text: str) -> list[str]:
    """Blank-separated words, quotes and escapes kept as written (expanded later)."""
    words: list[str] = []
    word, quote, i = "", "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and quote != "'" and i + 1 < len(text):
            word += text[i:i + 2]
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if word:
                words.append(word)
            word = ""
            i += 1
            continue
        word += ch
        i += 1
    if quote:
        raise InvalidArgument(f"unexpected end of statement while looking for matching {quote}")
    if word:
        words.append(word)
    return words


def expand(word: str, env: dict[str, str]) -> str:
    """One word with quotes removed and variables substituted (Docker's ProcessWord)."""
    out, quote, i = [], "", 0
    while i < len(word):
        ch = word[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
            i += 1
        elif ch == "\\" and i + 1 < len(word):
            nxt = word[i + 1]
            out.append(nxt if not quote or nxt in "\"$\\" else ch + nxt)
            i += 2
        elif ch in "'\"" and (not quote or ch == quote):
            quote = "" if quote else ch
            i += 1
        elif ch == "$":
            value, i = _variable(word, i + 1, env)
            out.append(value)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _variable(word: str, i: int, env: dict[str, str]) -> tuple[str, int]:
    """The value of the variable reference starting after `$` at `i`; and where it ends."""
    if i < len(word) and word[i] == "{":
        end = word.find("}", i)
        if end < 0:
            raise InvalidArgument(f"missing '}}' in {word!r}")
        body = word[i + 1:end]
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])(.*))?", body, re.S)
        if m is None:
            raise InvalidArgument(f"bad substitution in {word!r}")
        name, op, alt = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                value = expand(alt, env)
        elif op in (":+", "+"):
            value = expand(alt, env) if value is not None and (op == "+" or value) else ""
        return value or "", end + 1
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", word[i:])
    if m is None:
        return "$", i
    return env.get(m.group(0), ""), i + m.end()


def _env_map(config: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) if "=" in e else (e, "") for e in config.get("Env") or [])


def _json_args(rest: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _command(rest: str, config: dict[str, Any]) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK CMD arguments: the JSON form as given, else the shell's."""
    args = _json_args(rest)
    if args is not None:
        return args
    return [*(config.get("Shell") or DEFAULT_SHELL), rest]


def _pairs(keyword: str, rest: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """ENV/LABEL arguments, "k=v k2=v2" or the legacy "k v"."""
    words = _split_words(rest)
    if not words:
        raise InvalidArgument(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        key, _, value = rest.partition(" ")
        if not value.strip() and keyword == "ENV":
            raise InvalidArgument("ENV must have two arguments")
        return [(expand(key, env), expand(value.strip(), env))]
    pairs = []
    for w in words:
        if "=" not in w:
            raise InvalidArgument(f"Syntax error - can't find = in \"{w}\". "
                                  "Must be of the form: name=value")
        key, _, value = w.partition("=")
        pairs.append((expand(key, env), expand(value, env)))
    if keyword == "ENV" and any(not k for k, _ in pairs):
        raise InvalidArgument("ENV names can not be blank")
    return pairs


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


def parse_go_duration(text: str, flag: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("1m30s", "500ms", "0")."""
    if text in ("0", "+0", "-0"):
        return 0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f'time: invalid duration "{text}" for flag --{flag}')
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


def _healthcheck(rest: str, config: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, int] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, eq, value = flag[2:].partition("=")
        if name not in _HEALTH_FLAGS or not eq:
            raise InvalidArgument(f"Unknown flag: {name}")
        if name == "retries":
            if not value.lstrip("-").isdigit():
                raise InvalidArgument(f'strconv.ParseInt: parsing "{value}": invalid syntax')
            values[_HEALTH_FLAGS[name]] = int(value)
        else:
            values[_HEALTH_FLAGS[name]] = parse_go_duration(value, name)
        rest = rest.lstrip()
    kind, _, args = rest.partition(" ")
    args = args.strip()
    if kind.upper() == "NONE":
        if args or values:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind.upper() != "CMD":
        raise InvalidArgument(f'Unknown type "{kind.upper()}" in HEALTHCHECK (try CMD)')
    for key in ("Interval", "Timeout", "StartPeriod"):
        if 0 < values.get(key, 0) < 1_000_000:
            flag = next(f for f, k in _HEALTH_FLAGS.items() if k == key)
            raise InvalidArgument(f"{key} \"{flag}\" cannot be less than 1ms")
    if values.get("Retries", 0) < 0:
        raise InvalidArgument(f"--retries cannot be negative ({values['Retries']})")
    json_args = _json_args(args)
    test = ["CMD", *json_args] if json_args is not None else ["CMD-SHELL", args]
    return {"Test": test, **{k: v for k, v in values.items() if v}}


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """A copy of the container config `config` with the instructions in `changes` applied.

    InvalidArgument (dockerd's message) for an instruction that is not allowed or malformed;
    all are checked before any is applied.
    """
    lines = _lines(changes)
    parsed = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        if keyword.upper() not in VALID:
            raise InvalidArgument(f"{keyword.lower()} is not a valid change command")
        parsed.append((keyword.upper(), rest.strip(), line))
    out = copy.deepcopy(config)
    cmd_set = False
    for keyword, rest, line in parsed:
        env = _env_map(out)
        if keyword == "CMD":
            out["Cmd"] = _command(rest, out)
            cmd_set = True
        elif keyword == "ENTRYPOINT":
            args = _json_args(rest)
            # An empty JSON list is no entrypoint at all (null), as dockerd stores it.
            out["Entrypoint"] = (args or None) if args is not None else _command(rest, out)
            if not cmd_set:
                out["Cmd"] = None
        elif keyword in ("ENV", "LABEL"):
            pairs = _pairs(keyword, rest, env)
            if keyword == "ENV":
                current = list(out.get("Env") or [])
                for key, value in pairs:
                    entry = f"{key}={value}"
                    index = next((i for i, e in enumerate(current) if e.split("=", 1)[0] == key), None)
                    if index is None:
                        current.append(entry)
                    else:
                        current[index] = entry
                out["Env"] = current
            else:
                out["Labels"] = {**(out.get("Labels") or {}), **dict(pairs)}
        elif keyword == "EXPOSE":
            words = [expand(w, env) for w in _split_words(rest)]
            if not words:
                raise InvalidArgument("EXPOSE requires at least one argument")
            out["ExposedPorts"] = {**(out.get("ExposedPorts") or {}), **{p: {} for p in _ports(words)}}
        elif keyword in ("USER", "WORKDIR", "STOPSIGNAL"):
            # The rest of the line is the one argument ("WORKDIR a b" is the directory "a b").
            if not rest:
                raise InvalidArgument(f"{keyword} requires exactly one argument")
            value = expand(rest, env)
            if keyword == "USER":
                out["User"] = value
            elif keyword == "STOPSIGNAL":
                parse_signal(value)
                out["StopSignal"] = value
            else:
                out["WorkingDir"] = _workdir(out.get("WorkingDir") or "", value)
        elif keyword == "VOLUME":
            args = _json_args(rest)
            words = args if args is not None else [expand(w, env) for w in _split_words(rest)]
            if not words:
                raise InvalidArgument("VOLUME requires at least one argument")
            if any(not v.strip() for v in words):
                raise InvalidArgument("VOLUME specified can not be an empty string")
            out["Volumes"] = {**(out.get("Volumes") or {}), **{v: {} for v in words}}
        elif keyword == "ONBUILD":
            trigger = re.sub(r"(?i)^\s*ONBUILD\s*", "", line)
            first = trigger.split(" ", 1)[0].upper()
            if first == "ONBUILD":
                raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if first in ("FROM", "MAINTAINER"):
                raise InvalidArgument(f"{first} isn't allowed as an ONBUILD trigger")
            if not first:
                raise InvalidArgument("ONBUILD requires at least one argument")
            out["OnBuild"] = [*(out.get("OnBuild") or []), trigger]
        elif keyword == "HEALTHCHECK":
            out["Healthcheck"] = _healthcheck(rest, out)
    return out


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
