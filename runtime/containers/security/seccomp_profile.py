"""Seccomp profiles in Docker's JSON format: parsing, validation, and the rules that apply.

A profile (Docker's default, or the JSON a user passes with `--security-opt
seccomp=FILE`, which the CLI sends inline) is parsed into frozen dataclasses.
`applicable_rules` then keeps the rules whose `includes`/`excludes` match the
container: its capability bounding set, the machine's architecture and the
kernel version, the same selection dockerd makes before handing the profile to
runc. `seccomp_filter` compiles the result to BPF.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidArgument

# Actions runc accepts (SCMP_ACT_NOTIFY needs a listener we do not have).
ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
})
OPERATORS = frozenset({
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
})
FILTER_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
_MAX_ARGS = 6
_U64 = (1 << 64) - 1

# platform.machine() -> Docker's arch word in includes/excludes (Go's GOARCH, as dockerd maps it).
_DOCKER_ARCH = {"x86_64": "amd64", "amd64": "amd64", "i386": "x86", "i686": "x86",
                "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "armv6l": "arm",
                "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
                "mips64": "mips64", "mips64el": "mipsel64"}
# Docker's arch word -> the SCMP_ARCH_ token of the native architecture.
_NATIVE_TOKEN = {"amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "arm64": "SCMP_ARCH_AARCH64",
                 "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
                 "riscv64": "SCMP_ARCH_RISCV64", "mips64": "SCMP_ARCH_MIPS64",
                 "mipsel64": "SCMP_ARCH_MIPSEL64"}


class SeccompProfileError(InvalidArgument):
    """The profile is not one we can apply; the message names what is wrong."""


@dataclass(frozen=True)
class ArgCondition:
    """Compare syscall argument `index` with `value` (and `value_two` for MASKED_EQ's value)."""

    index: int
    value: int
    value_two: int
    op: str


@dataclass(frozen=True)
class Filter:
    """`includes` / `excludes` of a rule: architectures, capabilities, minimum kernel."""

    arches: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()
    min_kernel: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SyscallRule:
    """One entry of `syscalls`: names, an action and optional argument conditions."""

    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[ArgCondition, ...] = ()
    includes: Filter = Filter()
    excludes: Filter = Filter()


@dataclass(frozen=True)
class SeccompProfile:
    """A parsed profile; `syscalls` still holds every rule, conditional ones included."""

    default_action: str
    default_errno: int | None
    architectures: tuple[str, ...]
    arch_map: tuple[tuple[str, tuple[str, ...]], ...]
    flags: tuple[str, ...]
    syscalls: tuple[SyscallRule, ...]


# ---------------------------------------------------------------- parsing


def _fail(message: str) -> SeccompProfileError:
    return SeccompProfileError(f"Decoding seccomp profile failed: {message}")


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"{what} must be a list of strings")
    return tuple(value)


def _uint(value: Any, what: str, limit: int = _U64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _fail(f"{what} must be an integer from 0 to {limit}")
    return value


def _kernel_version(text: Any, what: str) -> tuple[int, ...] | None:
    if text in (None, ""):
        return None
    if not isinstance(text, str):
        raise _fail(f"{what} must be a string such as \"4.8\"")
    try:
        parts = tuple(int(p) for p in text.split("."))
    except ValueError:
        raise _fail(f"invalid kernel version {text!r} in {what}") from None
    if not 1 <= len(parts) <= 3:
        raise _fail(f"invalid kernel version {text!r} in {what}")
    return parts


def _filter(raw: Any, what: str) -> Filter:
    if raw is None:
        return Filter()
    if not isinstance(raw, dict):
        raise _fail(f"{what} must be an object")
    return Filter(arches=_strings(raw.get("arches"), f"{what}.arches"),
                  caps=_strings(raw.get("caps"), f"{what}.caps"),
                  min_kernel=_kernel_version(raw.get("minKernel"), f"{what}.minKernel"))


def _action(value: Any, what: str) -> str:
    if value == "SCMP_ACT_NOTIFY":
        raise SeccompProfileError(f"{what}: SCMP_ACT_NOTIFY is not supported by this engine "
                                  "(no seccomp listener)")
    # isinstance first: an unhashable value (a list, an object) is not in the set either.
    if not isinstance(value, str) or value not in ACTIONS:
        raise _fail(f"{what}: unknown action {value!r}")
    return value


def _rule(raw: Any, position: int) -> SyscallRule:
    what = f"syscalls[{position}]"
    if not isinstance(raw, dict):
        raise _fail(f"{what} must be an object")
    name, names = raw.get("name"), raw.get("names")
    if name and names:
        raise SeccompProfileError("'name' and 'names' were specified in the seccomp profile, "
                                  "use either 'name' or 'names'")
    if name:
        if not isinstance(name, str):
            raise _fail(f"{what}.name must be a string")
        all_names: tuple[str, ...] = (name,)
    else:
        all_names = _strings(names, f"{what}.names")
    action = _action(raw.get("action"), f"{what}.action")
    errno_ret = raw.get("errnoRet")
    if errno_ret is not None:
        errno_ret = _uint(errno_ret, f"{what}.errnoRet", 0xFFFF)
        if action not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            raise SeccompProfileError(f"{what}: errnoRet is only valid with SCMP_ACT_ERRNO or "
                                      "SCMP_ACT_TRACE")
    args = []
    raw_args = raw.get("args") or []
    if not isinstance(raw_args, list):
        raise _fail(f"{what}.args must be a list")
    for i, arg in enumerate(raw_args):
        where = f"{what}.args[{i}]"
        if not isinstance(arg, dict):
            raise _fail(f"{where} must be an object")
        op = arg.get("op")
        if not isinstance(op, str) or op not in OPERATORS:
            raise _fail(f"{where}: unknown operator {op!r}")
        args.append(ArgCondition(index=_uint(arg.get("index", 0), f"{where}.index", _MAX_ARGS - 1),
                                 value=_uint(arg.get("value", 0), f"{where}.value"),
                                 value_two=_uint(arg.get("valueTwo", 0), f"{where}.valueTwo"),
                                 op=op))
    return SyscallRule(names=all_names, action=action, errno_ret=errno_ret, args=tuple(args),
                       includes=_filter(raw.get("includes"), f"{what}.includes"),
                       excludes=_filter(raw.get("excludes"), f"{what}.excludes"))


def parse_profile(data: str | dict[str, Any]) -> SeccompProfile | None:
    """A profile from its JSON text (or decoded object); None when it disables seccomp.

    As dockerd: a profile with neither a default action nor rules means no filter.
    Raises SeccompProfileError (a 400) for anything runc would refuse.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as err:
            raise _fail(str(err)) from None
    if not isinstance(data, dict):
        raise _fail("the profile must be a JSON object")
    if data.get("listenerPath"):
        raise SeccompProfileError("seccomp listenerPath is not supported by this engine")
    raw_syscalls = data.get("syscalls") or []
    if not isinstance(raw_syscalls, list):
        raise _fail("syscalls must be a list")
    default_action = data.get("defaultAction") or ""
    if not default_action and not raw_syscalls:
        return None
    default_action = _action(default_action, "defaultAction")
    default_errno = data.get("defaultErrnoRet")
    if default_errno is not None:
        default_errno = _uint(default_errno, "defaultErrnoRet", 0xFFFF)
    architectures = _strings(data.get("architectures"), "architectures")
    raw_map = data.get("archMap") or []
    if architectures and raw_map:
        raise SeccompProfileError("'architectures' and 'archMap' were specified in the seccomp "
                                  "profile, use either 'architectures' or 'archMap'")
    if not isinstance(raw_map, list):
        raise _fail("archMap must be a list")
    arch_map = []
    for i, entry in enumerate(raw_map):
        if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
            raise _fail(f"archMap[{i}] must be an object with an architecture")
        arch_map.append((entry["architecture"],
                         _strings(entry.get("subArchitectures"), f"archMap[{i}].subArchitectures")))
    flags = _strings(data.get("flags"), "flags")
    for flag in flags:
        if flag not in FILTER_FLAGS:
            raise SeccompProfileError(f"seccomp flag {flag!r} is not supported by this engine")
    return SeccompProfile(default_action=default_action, default_errno=default_errno,
                          architectures=architectures, arch_map=tuple(arch_map), flags=flags,
                          syscalls=tuple(_rule(r, i) for i, r in enumerate(raw_syscalls)))


# ---------------------------------------------------------------- selection


def docker_arch(machine: str | None = None) -> str:
    """This machine's architecture as Docker's profiles name it ("amd64", "arm64", ...)."""
    machine = machine or platform.machine()
    return _DOCKER_ARCH.get(machine, machine)


def kernel_version(release: str | None = None) -> tuple[int, ...]:
    """(major, minor, patch) of the running kernel, e.g. "6.1.0-18-amd64" -> (6, 1, 0)."""
    release = release or os.uname().release
    numbers = []
    for part in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit()) or "0"
        numbers.append(int(digits))
    return tuple(numbers)


def architectures(profile: SeccompProfile, arch: str) -> tuple[str, ...]:
    """SCMP_ARCH_ tokens the filter covers besides the native one (archMap entry or `architectures`)."""
    if profile.architectures:
        return profile.architectures
    native = _NATIVE_TOKEN.get(arch)
    for main, subs in profile.arch_map:
        if main == native:
            return (main, *subs)
    return ()


def _at_least(kernel: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    pad = max(len(kernel), len(wanted))
    return tuple(kernel) + (0,) * (pad - len(kernel)) >= tuple(wanted) + (0,) * (pad - len(wanted))


def applicable_rules(profile: SeccompProfile, caps: frozenset[str], arch: str,
                     kernel: tuple[int, ...]) -> list[SyscallRule]:
    """The rules whose includes all hold and whose excludes all miss, as dockerd selects them.

    `caps` is the process's capability bounding set ("CAP_SYS_ADMIN", ...).
    """
    chosen = []
    for rule in profile.syscalls:
        ex, inc = rule.excludes, rule.includes
        if ex.arches and arch in ex.arches:
            continue
        if any(cap in caps for cap in ex.caps):
            continue
        if ex.min_kernel is not None and _at_least(kernel, ex.min_kernel):
            continue
        if inc.arches and arch not in inc.arches:
            continue
        if not all(cap in caps for cap in inc.caps):
            continue
        if inc.min_kernel is not None and not _at_least(kernel, inc.min_kernel):
            continue
        chosen.append(rule)
    return chosen
