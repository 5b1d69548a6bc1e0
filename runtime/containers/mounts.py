"""A create request's mounts: `-v` binds, `--mount` entries, `--tmpfs` and VOLUMEs, as dockerd parses them.

Only parsing and validation: every target is cleaned with `path_scope` (resolved
inside the container's root where it is used); the engine resolves volumes and
host paths at create and start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import path_scope
from ..errors import InvalidArgument
from ..volumes.store import validate_volume_name


@dataclass
class MountRequest:
    """One mount as asked for: a bind of a host path, a volume (named or anonymous) or a tmpfs."""

    type: str                 # "bind" | "volume" | "tmpfs"
    target: str
    source: str = ""          # host path (bind) or volume name ("" = new anonymous volume)
    readonly: bool = False
    options: str = ""         # tmpfs mount options
    nocopy: bool = False      # volume: do not copy the image's content into a new volume
    create_source: bool = False   # bind: --mount bind-create-mountpoint / legacy -v creates it


_BIND_OPTIONS = {"ro", "rw", "z", "Z", "nocopy", "private", "rprivate", "shared", "rshared",
                 "slave", "rslave", "consistent", "cached", "delegated"}


def parse_bind(spec: str) -> MountRequest:
    """`-v` syntax: "src:dst[:opts]" (src without "/" is a named volume) or "/dst" (anonymous)."""
    path_scope.check(spec, "volume specification")
    parts = spec.split(":")
    if len(parts) == 1:
        src, dst, opts = "", parts[0], ""
    elif len(parts) == 2:
        src, dst, opts = parts[0], parts[1], ""
    elif len(parts) == 3:
        src, dst, opts = parts
    else:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    if not dst or not dst.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config: "
                              "destination must be an absolute path")
    options = [o for o in opts.split(",") if o]
    for o in options:
        if o not in _BIND_OPTIONS:
            raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mode: {opts}")
    readonly = "ro" in options
    dst = path_scope.clean(dst)     # "/a/../../b" is "/b" inside the container, as in dockerd
    if not src:
        return MountRequest("volume", dst, "", readonly)
    if src.startswith("/"):
        # The legacy -v creates a missing host directory (dockerd does too).
        return MountRequest("bind", dst, os.path.normpath(src), readonly, create_source=True)
    if src.startswith("."):
        raise InvalidArgument(f"invalid volume specification: '{spec}': bind source must be an absolute path")
    validate_volume_name(src)
    return MountRequest("volume", dst, src, readonly, nocopy="nocopy" in options)


def parse_mount(m: dict[str, Any]) -> MountRequest:
    """One entry of HostConfig.Mounts (the `--mount` syntax)."""
    mtype = m.get("Type") or ""
    target = m.get("Target") or ""
    source = m.get("Source") or ""
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid mount config for type \"{mtype}\": invalid mount path: "
                              f"'{target}' mount path must be absolute")
    readonly = bool(m.get("ReadOnly"))
    target = path_scope.clean(path_scope.check(target, "mount target"))
    path_scope.check(source, "mount source")
    if mtype == "bind":
        if not source.startswith("/"):
            raise InvalidArgument(f"invalid mount config for type \"bind\": invalid mount path: "
                                  f"'{source}' mount path must be absolute")
        create = bool((m.get("BindOptions") or {}).get("CreateMountpoint"))
        return MountRequest("bind", target, os.path.normpath(source), readonly, create_source=create)
    if mtype == "volume":
        if source:
            validate_volume_name(source)
        nocopy = bool((m.get("VolumeOptions") or {}).get("NoCopy"))
        return MountRequest("volume", target, source, readonly, nocopy=nocopy)
    if mtype == "tmpfs":
        if source:
            raise InvalidArgument("invalid mount config for type \"tmpfs\": source must not be specified")
        topts = m.get("TmpfsOptions") or {}
        opts = []
        if topts.get("SizeBytes"):
            opts.append(f"size={int(topts['SizeBytes'])}")
        if topts.get("Mode"):
            opts.append(f"mode={int(topts['Mode']):o}")
        if readonly:
            opts.append("ro")
        return MountRequest("tmpfs", target, "", readonly, options=",".join(opts))
    raise InvalidArgument(f"invalid mount config: mount type unknown: \"{mtype}\"")


def parse_mounts(config: dict[str, Any], host_config: dict[str, Any]) -> list[MountRequest]:
    """All mounts in order: Binds, Mounts, Tmpfs, then image/Config Volumes not covered."""
    result: list[MountRequest] = []
    for spec in host_config.get("Binds") or []:
        result.append(parse_bind(spec))
    for m in host_config.get("Mounts") or []:
        # A JSON null decodes to Go's zero Mount, which dockerd then refuses for its path.
        result.append(parse_mount(m if m is not None else {}))
    for target, opts in (host_config.get("Tmpfs") or {}).items():
        if not target.startswith("/"):
            raise InvalidArgument(f"invalid tmpfs mount path: '{target}' mount path must be absolute")
        result.append(MountRequest("tmpfs", path_scope.clean(path_scope.check(target, "tmpfs mount path")),
                                   "", "ro" in (opts or "").split(","),
                                   options=opts or ""))
    seen: set[str] = set()
    for m in result:
        if m.target in seen:
            raise InvalidArgument(f"Duplicate mount point: {m.target}")
        if m.target == "/":
            raise InvalidArgument("invalid specification: destination can't be '/'")
        seen.add(m.target)
    for target in sorted((config.get("Volumes") or {}).keys()):
        # An image's (or a request's) VOLUME may be relative or climb with "..": dockerd
        # keeps the Go-cleaned key as the Destination ("../x" stays "../x") and resolves
        # it inside the container's root wherever it is used; so do we (path_scope).
        if not isinstance(target, str) or path_scope.is_root(target):
            raise InvalidArgument(f"invalid volume {target!r}: destination can't be '/'")
        target = path_scope.go_clean(path_scope.check(target, "volume"))
        if target not in seen:
            seen.add(target)
            result.append(MountRequest("volume", target, ""))
    return result
