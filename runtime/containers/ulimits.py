"""`--ulimit`: Docker's resource names, their checks, and setrlimit in the container's process.

Without `--ulimit` a container inherits the engine's limits, as under dockerd
(which passes its own limits on unless `--default-ulimit` is set).
"""

from __future__ import annotations

import resource
from typing import Any

from ..errors import InvalidArgument

# docker/go-units ulimit names -> Linux RLIMIT_* numbers (asm-generic/resource.h; Python's
# resource module lacks some of them, e.g. RLIMIT_LOCKS).
RESOURCES: dict[str, int] = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
    "memlock": 8, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14,
    "rttime": 15,
}


def parse(ulimits: list[dict[str, Any]] | None) -> tuple[tuple[int, int, int], ...]:
    """HostConfig.Ulimits as (resource, soft, hard); InvalidArgument with the docker CLI's messages."""
    result: dict[int, tuple[int, int, int]] = {}
    for entry in ulimits or []:
        entry = entry or {}
        name = entry.get("Name") or ""
        if name not in RESOURCES:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        soft, hard = int(entry.get("Soft") or 0), int(entry.get("Hard") or 0)
        if soft > hard and hard >= 0 and soft >= 0:
            raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard limit: "
                                  f"{soft} > {hard}")
        # -1 is "unlimited"; a later entry for the same resource wins.
        result[RESOURCES[name]] = (RESOURCES[name], _limit(soft), _limit(hard))
    return tuple(result.values())


def _limit(value: int) -> int:
    return resource.RLIM_INFINITY if value < 0 else value


def apply(limits: tuple[tuple[int, int, int], ...]) -> None:
    """setrlimit each (child side, before privileges are dropped: raising a hard limit needs them)."""
    for res, soft, hard in limits:
        resource.setrlimit(res, (soft, hard))
