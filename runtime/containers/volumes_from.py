"""Docker's --volumes-from NAME[:ro|:rw]: another container's volumes and binds, same targets.

dockerd copies the mount points of the named container when the new one is
created: volumes keep their name, binds their host path, both their target;
"ro" makes them read-only; "rw" (the default) keeps the original's mode. The new
container's own binds and mounts win over inherited ones at the same target,
and inherited ones win over the image's anonymous volumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, NotFound
from .mounts import MountRequest

_MODES = ("ro", "rw")


@dataclass(frozen=True)
class VolumesFromEntry:
    """One --volumes-from value: the container reference and an optional forced mode."""

    container: str
    mode: str = ""     # "", "ro" or "rw"


def parse(entry: Any) -> VolumesFromEntry:
    """"NAME", "NAME:ro", "NAME:rw" (dockerd's "invalid mode: X" otherwise)."""
    if not isinstance(entry, str) or not entry:
        raise InvalidArgument(f"invalid volumes-from specification: {entry!r}")
    name, sep, mode = entry.partition(":")
    if sep:
        words = mode.split(",")
        if not mode or any(w not in _MODES for w in words) or len(words) > 1:
            raise InvalidArgument(f"invalid mode: {mode}")
    return VolumesFromEntry(name, mode)


def inherited_requests(entries: Any, mounts_of: Callable[[str], list[dict[str, Any]]]) -> list[MountRequest]:
    """The mounts the named containers lend, in order; `mounts_of` gives a container's
    inspect "Mounts" records (NotFound becomes dockerd's 400 "No such container")."""
    result: list[MountRequest] = []
    seen: set[str] = set()
    for raw in entries or []:
        entry = parse(raw)
        try:
            records = mounts_of(entry.container)
        except NotFound as err:
            raise InvalidArgument(str(err)) from None
        for record in records:
            kind, target = record.get("Type"), record.get("Destination") or ""
            if kind not in ("volume", "bind") or target in seen:
                continue
            # As dockerd: "ro" makes a mount read-only, "rw" never makes a read-only one writable.
            readonly = not record.get("RW", True) or entry.mode == "ro"
            source = record.get("Name") if kind == "volume" else record.get("Source")
            seen.add(target)
            result.append(MountRequest(kind, target, source or "", readonly))
    return result


def merge(own: list[MountRequest], inherited: list[MountRequest], host_config: dict[str, Any]) -> list[MountRequest]:
    """parse_mounts' result with inherited mounts added: an inherited mount replaces an
    anonymous volume that Config.Volumes (or the image) asks for at its target, never the
    user's own bind, volume or tmpfs there."""
    explicit_count = _explicit_count(host_config)
    explicit, defaults = own[:explicit_count], own[explicit_count:]
    taken = {m.target for m in explicit}
    lent = [m for m in inherited if m.target not in taken]
    lent_targets = {m.target for m in lent}
    return explicit + lent + [m for m in defaults if m.target not in lent_targets]


def at_start(own: list[MountRequest], records: list[dict[str, Any]],
             host_config: dict[str, Any]) -> list[MountRequest]:
    """The mounts to make at start: the user's own as asked, the rest as recorded at create
    (inherited ones live only there: the lender may be gone), parents before children."""
    explicit = own[:_explicit_count(host_config)]
    taken = {m.target for m in explicit}
    recorded = [MountRequest(r["Type"], r["Destination"], r.get("Name") or r.get("Source") or "",
                             not r.get("RW", True))
                for r in records if r.get("Type") in ("volume", "bind") and r.get("Destination") not in taken]
    result = explicit + recorded
    # dockerd mounts by destination depth, so a mount inside another is made after it.
    result.sort(key=lambda m: len([p for p in m.target.split("/") if p]))
    return result


def _explicit_count(host_config: dict[str, Any]) -> int:
    return sum(len(host_config.get(key) or ()) for key in ("Binds", "Mounts", "Tmpfs"))
