"""Docker's --device and --device-cgroup-rule: validation at create, device nodes at start.

HostConfig.Devices entries name a host device (or a directory of them) and
where it appears in the container, with the cgroup access ("rwm") it gets;
HostConfig.DeviceCgroupRules are extra devices.allow lines. Both add to
Docker's default device allow-list, which cgroups.py enforces (v1 devices
controller or the cgroup v2 eBPF filter).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ..errors import ContainerStartError, InvalidArgument
from ..lazy_re import lazy_compile
from .spec import DeviceNode

# moby's deviceCgroupRuleRegex.
_RULE_RE = lazy_compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")
_ACCESS = frozenset("rwm")


def validate_rules(rules: Any) -> list[str]:
    """DeviceCgroupRules as given, each checked with dockerd's message."""
    result = []
    for rule in rules or []:
        if not isinstance(rule, str) or not _RULE_RE.match(rule):
            raise InvalidArgument(f"invalid device cgroup rule format: '{rule}'")
        result.append(rule)
    return result


def validate_devices(devices: Any) -> list[dict[str, str]]:
    """HostConfig.Devices with dockerd's defaults filled in (container path, "rwm")."""
    result = []
    for entry in devices or []:
        if not isinstance(entry, dict):
            raise InvalidArgument(f"invalid device mapping: {entry!r}")
        host = entry.get("PathOnHost") or ""
        inside = entry.get("PathInContainer") or host
        access = entry.get("CgroupPermissions") or "rwm"
        if not isinstance(host, str) or not host.startswith("/"):
            raise InvalidArgument(f"invalid device path on host: '{host}': it must be absolute")
        if not isinstance(inside, str) or not inside.startswith("/"):
            raise InvalidArgument(f"invalid device path in container: '{inside}': it must be absolute")
        if not isinstance(access, str) or not set(access) <= _ACCESS:
            raise InvalidArgument(f"invalid device mode: {access}")
        result.append({"PathOnHost": host, "PathInContainer": os.path.normpath(inside),
                       "CgroupPermissions": access})
    return result


def _node(path_inside: str, host_path: str, st: os.stat_result, access: str) -> DeviceNode:
    kind = "b" if stat.S_ISBLK(st.st_mode) else "c"
    return DeviceNode(path=path_inside, host_path=host_path, kind=kind,
                      major=os.major(st.st_rdev), minor=os.minor(st.st_rdev),
                      mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, access=access)


def _is_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)


def gather(devices: list[dict[str, Any]]) -> list[DeviceNode]:
    """The device nodes for HostConfig.Devices, read from the host now (at start, as dockerd).

    A directory adds every device below it, at the same relative path.
    """
    nodes: list[DeviceNode] = []
    for entry in validate_devices(devices):
        host, inside, access = entry["PathOnHost"], entry["PathInContainer"], entry["CgroupPermissions"]
        try:
            st = os.stat(host)
        except OSError as err:
            raise ContainerStartError(f'error gathering device information while adding custom device '
                                      f'"{host}": {(err.strerror or str(err)).lower()}') from None
        if _is_device(st):
            nodes.append(_node(inside, host, st, access))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ContainerStartError(f'error gathering device information while adding custom device '
                                      f'"{host}": not a device node')
        for dirpath, _dirs, files in os.walk(host):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                try:
                    child = os.lstat(path)
                except OSError:
                    continue
                if _is_device(child):
                    nodes.append(_node(os.path.join(inside, os.path.relpath(path, host)), path, child, access))
    return nodes


def allow_rules(nodes: list[DeviceNode], extra_rules: list[str]) -> list[str]:
    """devices.allow lines for the nodes and the user's own rules."""
    return [f"{n.kind} {n.major}:{n.minor} {n.access}" for n in nodes] + list(extra_rules)
