"""Parsing a Dockerfile into stages of instructions, with Docker's rules and error messages.

`parse_dockerfile` reads the whole file before anything is built, as Docker's
classic builder does, so a mistake anywhere is reported before the first step
runs, naming its line: "Dockerfile parse error line 3: unknown instruction: FOO".

What `Instruction.args` holds, by keyword (nothing is expanded here):

* RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD, VOLUME: the JSON list in exec form
  (`json_form`), else `[rest of the line]` (`path_words` splits COPY/ADD/VOLUME
  the way Docker does);
* ENV, LABEL, ARG, EXPOSE, WORKDIR, USER, STOPSIGNAL, MAINTAINER, ONBUILD:
  `[rest of the line]` (`shell_words.parse_key_values` reads ENV/LABEL/ARG);
* FROM: its words (`image`, or `image AS name`);
* HEALTHCHECK: `["NONE"]`, or `["CMD", *exec list]` (`json_form`) or
  `["CMD", shell text]`; `healthcheck_config` gives Docker's HealthConfig.

An instruction with no argument text has `args == []`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import BuildError
from . import dockerfile_lines as lines
from .healthcheck_args import healthcheck_config, parse_duration
from .shell_words import parse_arg_defaults, parse_key_values

__all__ = ["Dockerfile", "DockerfileError", "Instruction", "Stage", "healthcheck_config",
           "parse_dockerfile", "parse_duration", "parse_instruction", "path_words"]

# The flags each instruction takes (Docker's classic builder); any other is refused by name.
_FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",),
    "COPY": ("from", "chown", "chmod"),
    "ADD": ("chown", "chmod"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "retries"),
}
_EXEC_OR_SHELL = {"RUN", "CMD", "ENTRYPOINT", "SHELL"}
_EXEC_OR_WORDS = {"COPY", "ADD", "VOLUME"}
_ONE_ARGUMENT = {"WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"}
KEYWORDS = frozenset({"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
                      "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
                      "WORKDIR"})
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)
_WORDS = re.compile(r"[\t\v\f\r ]+")


class DockerfileError(BuildError):
    """A Dockerfile that does not parse; the message names the line, as Docker's does."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"Dockerfile parse error line {line}: {message}")
        self.line = line
        self.reason = message


@dataclass
class Instruction:
    """One instruction as written (see the module docstring for what `args` holds)."""

    keyword: str              # upper-case: "RUN", "COPY", ...
    args: list[str]
    json_form: bool
    flags: dict[str, str]     # "--from=x" -> {"from": "x"}
    line: int                 # 1-based line where the instruction starts
    original: str             # the instruction as written (continuations joined)
    onbuild: Instruction | None = None   # for ONBUILD: the parsed trigger


@dataclass
class Stage:
    """A FROM and the instructions up to the next FROM."""

    base: str                 # FROM's image, unexpanded
    name: str | None          # "AS name", lower-cased
    platform: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    """A parsed Dockerfile."""

    escape: str               # from the "# escape=" directive, default "\\"
    meta_args: list[Instruction]   # ARGs before the first FROM
    stages: list[Stage]
    syntax: str = ""          # the "# syntax=" directive, if any (the classic builder ignores it)


def parse_dockerfile(text: str) -> Dockerfile:
    """Parse `text`; DockerfileError (a BuildError, HTTP 400) names the line of any mistake."""
    try:
        escape, directives, logical = lines.scan(text)
    except lines.LineError as err:
        raise DockerfileError(err.line, err.message) from None
    if not logical:
        raise DockerfileError(max(1, text.count("\n")), "file with no instructions")
    # Docker parses every line before it checks any instruction: a lexical mistake
    # further down is reported before an unknown instruction further up.
    parsed = [_parse_line(ll.text, ll.line, escape) for ll in logical]
    dockerfile = Dockerfile(escape=escape, meta_args=[], stages=[], syntax=directives.get("syntax", ""))
    for inst in parsed:
        _check(inst, escape)
        if inst.keyword == "FROM":
            dockerfile.stages.append(_stage(inst))
        elif dockerfile.stages:
            dockerfile.stages[-1].instructions.append(inst)
        elif inst.keyword == "ARG":
            dockerfile.meta_args.append(inst)
        else:
            raise DockerfileError(inst.line, "no build stage in current context")
    return dockerfile


def parse_instruction(text: str, escape: str = "\\", line: int = 1) -> Instruction:
    """One instruction from its text, checked: an image's ONBUILD trigger, a `--change` value."""
    inst = _parse_line(text, line, escape)
    _check(inst, escape)
    return inst


def path_words(inst: Instruction) -> list[str]:
    """COPY/ADD/VOLUME's paths: the JSON list, or the shell form split on blanks (no quotes)."""
    if inst.json_form or not inst.args:
        return list(inst.args)
    return _WORDS.split(inst.args[0].strip())


def _stage(inst: Instruction) -> Stage:
    name = inst.args[2].lower() if len(inst.args) == 3 else None
    return Stage(base=inst.args[0], name=name, platform=inst.flags.get("platform") or None,
                 line=inst.line)


def _parse_line(text: str, line: int, escape: str) -> Instruction:
    """The parser's pass over one logical line: keyword, flags, argument forms."""
    word, flag_words, rest = lines.split_command(text)
    keyword = word.upper()
    inst = Instruction(keyword=keyword, args=[rest] if rest else [], json_form=False, flags={},
                       line=line, original=text)
    try:
        inst.flags = _flag_values(flag_words, keyword)
        if keyword in _EXEC_OR_SHELL or keyword in _EXEC_OR_WORDS:
            exec_form = lines.parse_json_array(rest) if rest else None
            if exec_form is not None:
                inst.args, inst.json_form = exec_form, True
        elif keyword == "FROM":
            inst.args = _WORDS.split(rest) if rest else []
        elif keyword in ("ENV", "LABEL") and rest:
            parse_key_values(rest, keyword, escape)
        elif keyword == "HEALTHCHECK":
            _parse_healthcheck(inst, rest)
        elif keyword == "ONBUILD" and rest:
            inst.onbuild = _parse_line(rest, line, escape)
            inst.onbuild.original = _ONBUILD_PREFIX.sub("", text)
    except ValueError as err:   # the JSON array holds other than strings
        raise DockerfileError(line, str(err)) from None
    except BuildError as err:
        if isinstance(err, DockerfileError):
            raise
        raise DockerfileError(line, err.message) from None
    return inst


def _parse_healthcheck(inst: Instruction, rest: str) -> None:
    if not rest:
        return
    parts = rest.split(None, 1)
    kind, command = parts[0].upper(), (parts[1] if len(parts) > 1 else "")
    exec_form = lines.parse_json_array(command) if command else None
    if exec_form is not None:
        inst.args, inst.json_form = [kind, *exec_form], True
    else:
        inst.args = [kind, command] if command else [kind]


def _flag_values(words: list[str], keyword: str) -> dict[str, str]:
    """The flag words as {name: value}; which names are allowed is checked in `_check`."""
    values: dict[str, str] = {}
    for word in words:
        if not word.startswith("--"):
            raise BuildError(f"Arg should start with -- : {word}")
        name, eq, value = word[2:].partition("=")
        if name in values:
            raise BuildError(f"Duplicate flag specified: {name}")
        if not eq:
            raise BuildError(f"Missing a value on flag: {name}")
        values[name] = value
    return values


def _check(inst: Instruction, escape: str) -> None:
    """The instruction-level checks of Docker's classic builder."""
    try:
        _check_inner(inst, escape)
    except BuildError as err:
        if isinstance(err, DockerfileError):
            raise
        raise DockerfileError(inst.line, err.message) from None


def _check_flags(inst: Instruction) -> None:
    allowed = _FLAGS.get(inst.keyword, ())
    for name in inst.flags:
        if inst.keyword == "RUN" and name == "mount":
            raise BuildError("the --mount option requires BuildKit. Refer to "
                             "https://docs.docker.com/go/buildkit/ to learn how to build images "
                             "with BuildKit enabled")
        if name not in allowed:
            raise BuildError(f"Unknown flag: {name}")


def _check_inner(inst: Instruction, escape: str) -> None:
    kw, args = inst.keyword, inst.args
    if kw not in KEYWORDS:
        raise BuildError(f"unknown instruction: {kw}")
    if kw == "HEALTHCHECK":
        if not args:
            raise BuildError("HEALTHCHECK requires at least one argument")
        if args[0] == "NONE":
            if len(args) > 1:
                raise BuildError("HEALTHCHECK NONE takes no arguments")
            return   # Docker reads no flag at all for NONE
        _check_flags(inst)
        healthcheck_config(inst)
        return
    _check_flags(inst)
    if kw == "FROM":
        if len(args) == 3 and args[1].lower() == "as":
            if not _STAGE_NAME.match(args[2].lower()):
                raise BuildError(f'invalid name for build stage: "{args[2]}", name can\'t start with '
                                 "a number or contain symbols")
        elif len(args) != 1:
            raise BuildError("FROM requires either one or three arguments")
    elif kw in ("ENV", "LABEL"):
        if not args:
            raise BuildError(f"{kw} requires at least one argument")
        parse_key_values(args, kw, escape)
    elif kw == "ARG":
        parse_arg_defaults(args, escape)
    elif kw in ("COPY", "ADD"):
        if len(path_words(inst)) < 2:
            raise BuildError(f"{kw} requires at least two arguments, but only one was provided. "
                             "Destination could not be determined")
    elif kw == "VOLUME":
        paths = path_words(inst)
        if not paths:
            raise BuildError("VOLUME requires at least one argument")
        if any(not p.strip() for p in paths):
            raise BuildError("VOLUME specified can not be an empty string")
    elif kw == "EXPOSE" and not args:
        raise BuildError("EXPOSE requires at least one argument")
    elif kw in _ONE_ARGUMENT and len(args) != 1:
        raise BuildError(f"{kw} requires exactly one argument")
    elif kw == "SHELL":
        if args and not inst.json_form:
            raise BuildError("SHELL requires the arguments to be in JSON form")
        if not args:
            raise BuildError("SHELL requires at least one argument")
    elif kw == "ONBUILD":
        _check_onbuild(inst)


def _check_onbuild(inst: Instruction) -> None:
    trigger = inst.onbuild
    if trigger is None:
        raise BuildError("ONBUILD requires at least one argument")
    if trigger.keyword == "ONBUILD":
        raise BuildError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger.keyword in ("MAINTAINER", "FROM"):
        raise BuildError(f"{trigger.keyword} isn't allowed as an ONBUILD trigger")
    # Docker checks the trigger itself only when a build FROM this image runs it
    # (`parse_instruction` then), so `ONBUILD FOO x` is accepted here, as dockerd does.
