"""`docker update`: a container's resource limits and restart policy, changed after create.

dockerd decodes `POST /containers/{id}/update` into container.UpdateConfig (the
Resources of HostConfig plus RestartPolicy), checks the values as at create,
merges the non-zero ones into the stored HostConfig (daemon's
Container.UpdateContainer, with its conflict rules and messages), and, when the
container runs, writes the new limits to its cgroups. Here the same, field by
field; a resource this engine cannot change is refused by name.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..errors import InvalidArgument
from .config import limits as check_limits
from .restart_policy import RestartPolicy
from .schema import HOST_CONFIG_FIELDS, Field, Struct, decode_struct

# What `docker update` changes here; any other Resources field must stay at its zero value.
UPDATABLE = ("CpuShares", "Memory", "NanoCpus", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems",
             "MemoryReservation", "MemorySwap", "PidsLimit")
_RESOURCE_FIELDS = (
    "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight", "BlkioWeightDevice",
    "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems",
    "Devices", "DeviceCgroupRules", "DeviceRequests", "KernelMemory", "KernelMemoryTCP",
    "MemoryReservation", "MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits",
    "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth")
_UPDATE_FIELDS: dict[str, Field] = {name: Field(HOST_CONFIG_FIELDS[name].type) for name in _RESOURCE_FIELDS}
_UPDATE_FIELDS["RestartPolicy"] = Field(HOST_CONFIG_FIELDS["RestartPolicy"].type)
_UPDATE_STRUCT = Struct("UpdateConfig", "container.UpdateConfig", _UPDATE_FIELDS)


class UpdateConflict(InvalidArgument):
    """A request dockerd refuses while merging it ("Cannot update container ID: ...")."""


def parse_request(body: Any) -> dict[str, Any]:
    """The update body type-checked as Go decodes it; unchangeable fields refused by name."""
    if not isinstance(body, dict):
        raise InvalidArgument("json: cannot unmarshal into Go value of type container.UpdateConfig")
    request = decode_struct(body, _UPDATE_STRUCT)
    for name in _RESOURCE_FIELDS:
        if name in UPDATABLE:
            continue
        value = request.get(name)
        # MemorySwappiness -1 is the CLI's "not set".
        if value not in (None, 0, "", False, [], {}) and not (name == "MemorySwappiness" and value == -1):
            raise InvalidArgument(f"{name} cannot be updated by Dockyard (got {json.dumps(value)}); "
                                  "remove this option")
    return request


def _effective_swap(hc: dict[str, Any]) -> int:
    """dockerd stores MemorySwap as twice the memory when a limit was set without one."""
    memory, swap = int(hc.get("Memory") or 0), int(hc.get("MemorySwap") or 0)
    return 2 * memory if memory > 0 and swap == 0 else swap


def merged_host_config(host_config: dict[str, Any], request: dict[str, Any],
                       ncpu: int | None = None) -> dict[str, Any]:
    """The HostConfig after the update (the stored one is not touched); raises InvalidArgument.

    Values are checked as at create first (dockerd's messages, e.g. "Minimum memory limit
    allowed is 6MB"), then merged with dockerd's conflict rules.
    """
    check_limits({k: v for k, v in request.items() if k in UPDATABLE}, ncpu)
    hc = copy.deepcopy(host_config)
    cur = hc
    nano, period, quota = (int(request.get(k) or 0) for k in ("NanoCpus", "CpuPeriod", "CpuQuota"))
    if nano > 0 and int(cur.get("CpuPeriod") or 0) > 0:
        raise UpdateConflict("Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set")
    if nano > 0 and int(cur.get("CpuQuota") or 0) > 0:
        raise UpdateConflict("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set")
    if period > 0 and int(cur.get("NanoCpus") or 0) > 0:
        raise UpdateConflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if quota > 0 and int(cur.get("NanoCpus") or 0) > 0:
        raise UpdateConflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    for key in ("CpuShares", "NanoCpus", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems"):
        if request.get(key):
            hc[key] = request[key]
    memory, swap = int(request.get("Memory") or 0), int(request.get("MemorySwap") or 0)
    if memory:
        if memory > _effective_swap(cur) and swap == 0:
            raise UpdateConflict("Memory limit should be smaller than already set memoryswap limit, "
                                 "update the memoryswap at the same time")
        hc["MemorySwap"] = _effective_swap(cur)
        hc["Memory"] = memory
    if swap:
        hc["MemorySwap"] = swap
    if request.get("MemoryReservation"):
        hc["MemoryReservation"] = request["MemoryReservation"]
    if request.get("PidsLimit") is not None:
        hc["PidsLimit"] = max(int(request["PidsLimit"]), 0)
    policy = request.get("RestartPolicy") or {}
    if policy.get("Name"):
        if policy["Name"] != "no" and hc.get("AutoRemove"):
            raise UpdateConflict("Restart policy cannot be updated because AutoRemove is enabled for the container")
        hc["RestartPolicy"] = RestartPolicy.from_host_config({"RestartPolicy": policy}).to_json()
    return hc
