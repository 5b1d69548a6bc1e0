"""Docker's namespace sharing modes: HostConfig.PidMode, IpcMode and CgroupnsMode.

`validate` checks the values of a create request with dockerd's messages and
fills in the defaults dockerd stores (IpcMode "private", CgroupnsMode by the
host's cgroup layout); a `container:NAME` reference is stored as
`container:ID`, as dockerd does. `resolve` turns the stored modes into what
the launcher needs at start: the namespaces to join and where /dev/shm comes
from. The donor container of a `container:` mode must be running then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Conflict, InvalidArgument, NotFound
from .spec import SharedNamespaces

IPC_MODES = ("", "private", "shareable", "host", "none")
PID_MODES = ("", "host")
CGROUPNS_MODES = ("", "private", "host")
DEFAULT_IPC_MODE = "private"
HOST_SHM = "/dev/shm"


@dataclass(frozen=True)
class Donor:
    """A running container another one joins: its init's host pid and shared /dev/shm."""

    id: str
    pid: int                      # 0 when it is not running
    shm_dir: Path | None = None   # the host tmpfs a shareable container uses as /dev/shm


# Finds a container by name or ID: (ID, donor info); raises NotFound("No such container: X").
DonorLookup = Callable[[str], Donor]


def _container_ref(mode: str) -> str | None:
    return mode[len("container:"):] if mode.startswith("container:") else None


def default_cgroupns_mode(pure_v2: bool) -> str:
    """dockerd's default: a private cgroup namespace on cgroup v2, the host's on v1 or hybrid."""
    return "private" if pure_v2 else "host"


def validate(host_config: dict[str, Any], lookup: DonorLookup, pure_v2: bool) -> None:
    """Check PidMode/IpcMode/CgroupnsMode in place, with dockerd's messages; store defaults.

    A `container:` reference must name an existing container (dockerd checks at
    create too); it is rewritten to the container's full ID.
    """
    pid_mode = _text(host_config, "PidMode")
    ref = _container_ref(pid_mode)
    if ref is not None:
        if not ref:
            raise InvalidArgument(f"invalid PID mode: {pid_mode}")
        host_config["PidMode"] = "container:" + _existing(lookup, ref)
    elif pid_mode not in PID_MODES:
        raise InvalidArgument(f"invalid PID mode: {pid_mode}")

    ipc_mode = _text(host_config, "IpcMode")
    ref = _container_ref(ipc_mode)
    if ref is not None:
        if not ref:
            raise InvalidArgument(f"invalid IPC mode: {ipc_mode}")
        host_config["IpcMode"] = "container:" + _existing(lookup, ref)
    elif ipc_mode not in IPC_MODES:
        raise InvalidArgument(f"invalid IPC mode: {ipc_mode}")
    else:
        host_config["IpcMode"] = ipc_mode or DEFAULT_IPC_MODE

    cgroupns = _text(host_config, "CgroupnsMode")
    if cgroupns not in CGROUPNS_MODES:
        raise InvalidArgument(f"invalid cgroup namespace mode: {cgroupns}")
    host_config["CgroupnsMode"] = cgroupns or default_cgroupns_mode(pure_v2)


def _text(host_config: dict[str, Any], key: str) -> str:
    value = host_config.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                              f"HostConfig.{key} of type container.{key}")
    return value


def resolve(host_config: dict[str, Any], lookup: DonorLookup, shm_dir: Path, pure_v2: bool) -> SharedNamespaces:
    """What the launcher shares for this container at start (dockerd's start-time errors).

    `shm_dir` is where this container's own /dev/shm tmpfs lives on the host
    when it is shareable (other containers bind the same one).
    """
    ns = SharedNamespaces()
    pid_mode = host_config.get("PidMode") or ""
    ref = _container_ref(pid_mode)
    if pid_mode == "host":
        ns.pid_host = True
    elif ref is not None:
        donor = _running(lookup, ref, "")
        ns.pid_path = f"/proc/{donor.pid}/ns/pid"

    ipc_mode = host_config.get("IpcMode") or DEFAULT_IPC_MODE
    ref = _container_ref(ipc_mode)
    if ipc_mode == "host":
        ns.ipc_host = True
        ns.shm_source = HOST_SHM
    elif ipc_mode == "none":
        ns.no_shm = True
    elif ipc_mode == "shareable":
        ns.shm_own_dir = str(shm_dir)
        ns.shm_source = str(shm_dir)
    elif ref is not None:
        prefix = f"can't join IPC of container {ref}: "
        donor = _running(lookup, ref, prefix)
        if donor.shm_dir is None or not os.path.ismount(donor.shm_dir):
            raise InvalidArgument(prefix + "non-shareable IPC (hint: use IpcMode:shareable "
                                  "for the donor container)")
        ns.ipc_path = f"/proc/{donor.pid}/ns/ipc"
        ns.shm_source = str(donor.shm_dir)
    elif ipc_mode != DEFAULT_IPC_MODE:
        raise InvalidArgument(f"invalid IPC mode: {ipc_mode}")

    cgroupns = host_config.get("CgroupnsMode") or default_cgroupns_mode(pure_v2)
    ns.private_cgroupns = cgroupns == "private"
    return ns


def _running(lookup: DonorLookup, ref: str, prefix: str) -> Donor:
    try:
        donor = lookup(ref)
    except NotFound as err:
        raise NotFound(prefix + str(err)) from None
    if donor.pid <= 0:
        raise Conflict(f"{prefix}container {donor.id} is not running")
    return donor


def _existing(lookup: DonorLookup, ref: str) -> str:
    # dockerd answers 400 for a missing container named in a create request.
    try:
        return lookup(ref).id
    except NotFound as err:
        raise InvalidArgument(str(err)) from None
