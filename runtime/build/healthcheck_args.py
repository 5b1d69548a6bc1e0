"""HEALTHCHECK's arguments as Docker's HealthConfig, and Go's duration syntax its flags use."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..errors import BuildError

if TYPE_CHECKING:
    from .dockerfile import Instruction

_UNITS_NS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
             "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
MINIMUM_NS = 1_000_000   # Docker's container.MinimumDuration, 1ms
_DURATION_FLAGS = (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"))


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration ("1m30s", "1.5h", "300ms", "0"); BuildError as Go words it."""
    rest = text
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise BuildError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(rest):
        match = _PART.match(rest, pos)
        if match is None:
            if re.match(r"\d|\.", rest[pos:]):
                raise BuildError(f'time: missing unit in duration "{text}"')
            raise BuildError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    return sign * int(round(total))


def healthcheck_config(inst: Instruction) -> dict[str, Any]:
    """Docker's HealthConfig of a HEALTHCHECK instruction: {"Test": [...], "Interval": ns, ...}.

    Zero durations and retries are left out, as Docker's JSON omits them.
    """
    if not inst.args:
        raise BuildError("HEALTHCHECK requires at least one argument")
    kind = inst.args[0].upper()
    if kind == "NONE":
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise BuildError(f'Unknown type "{inst.args[0]}" in HEALTHCHECK (try CMD)')
    command = inst.args[1:]
    if not command:
        raise BuildError("Missing command after HEALTHCHECK CMD")
    config: dict[str, Any] = {"Test": ["CMD", *command] if inst.json_form else ["CMD-SHELL", *command]}
    for flag, key in _DURATION_FLAGS:
        value = inst.flags.get(flag, "")
        if not value:
            continue
        ns = parse_duration(value)
        if ns < MINIMUM_NS:
            raise BuildError(f'Interval "{flag}" cannot be less than 1ms')
        config[key] = ns
    retries = inst.flags.get("retries", "")
    if retries:
        try:
            count = int(retries, 10)
        except ValueError:
            raise BuildError(f'strconv.ParseInt: parsing "{retries}": invalid syntax') from None
        if count < 1:
            raise BuildError(f"--retries must be at least 1 (not {count})")
        config["Retries"] = count
    return config
