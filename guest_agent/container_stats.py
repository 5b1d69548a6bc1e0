"""`GET /containers/{id}/stats`: memory, pids and CPU read from the container's cgroups.

Read-only: the cgroup location comes from runtime.linux.cgroups (the same computation the
launcher uses); v1 controllers where the host has them, v2 files otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtime.linux.cgroups import container_cgroup
from runtime.models import Container

from .docker_json import now_rfc3339

_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _read_int(path: Path | None, default: int = 0) -> int:
    if path is None:
        return default
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    if text == "max":
        return default
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return default


def _read_kv(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                values[key] = int(value)
    except OSError:
        pass
    return values


def system_cpu_ns() -> int:
    """Host CPU time (all CPUs, all states) in nanoseconds, as dockerd reports system_cpu_usage."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    return sum(int(v) for v in fields) * _NS_PER_TICK


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


_NET_DEV_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped")
_NET_DEV_TX = ("tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


def network_stats(pid: int) -> dict[str, dict[str, int]]:
    """Per-interface counters of the network namespace `pid` lives in, loopback left out
    (dockerd reports the interfaces of the container's endpoints: eth0)."""
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return {}
    result: dict[str, dict[str, int]] = {}
    for line in lines:
        name, _, counters = line.partition(":")
        name = name.strip()
        values = counters.split()
        if name == "lo" or len(values) < 12:
            continue
        # /proc/net/dev: 8 receive columns (bytes packets errs drop fifo frame compressed
        # multicast), then 8 transmit columns in the same order.
        rx = [int(v) for v in values[0:4]]
        tx = [int(v) for v in values[8:12]]
        result[name] = {**dict(zip(_NET_DEV_FIELDS, rx, strict=True)), **dict(zip(_NET_DEV_TX, tx, strict=True))}
    return result


def sample(container: Container) -> dict[str, Any]:
    """One stats object in Docker's shape (precpu_stats left empty for the caller to fill)."""
    cg = container_cgroup(container.id)
    running = container.state.running
    memory: dict[str, Any] = {}
    if running and cg.memory is not None:
        if cg.memory_v2:
            usage = _read_int(cg.memory / "memory.current")
            limit = _read_int(cg.memory / "memory.max", _host_memory())
            detail = _read_kv(cg.memory / "memory.stat")
        else:
            usage = _read_int(cg.memory / "memory.usage_in_bytes")
            limit = min(_read_int(cg.memory / "memory.limit_in_bytes"), _host_memory())
            detail = _read_kv(cg.memory / "memory.stat")
        memory = {"usage": usage, "limit": limit, "stats": detail}
    cpu_total = 0
    if running:
        if cg.cpu is not None and cg.cpu_v2:
            cpu_total = _read_kv(cg.cpu / "cpu.stat").get("usage_usec", 0) * 1000
        else:
            acct = next((d for d in cg.dirs if (d / "cpuacct.usage").exists()), None)
            cpu_total = _read_int(acct / "cpuacct.usage") if acct else 0
    pids_stats: dict[str, int] = {}
    if running and cg.pids is not None:
        pids_stats = {"current": _read_int(cg.pids / "pids.current")}
        limit = _read_int(cg.pids / "pids.max", 0)
        if limit:
            pids_stats["limit"] = limit
    stats: dict[str, Any] = {
        "read": now_rfc3339(),
        "preread": "0001-01-01T00:00:00Z",
        "id": container.id,
        "name": "/" + container.name,
        "num_procs": 0,
        "pids_stats": pids_stats,
        "cpu_stats": {
            "cpu_usage": {"total_usage": cpu_total, "usage_in_kernelmode": 0,
                          "usage_in_usermode": 0},
            "system_cpu_usage": system_cpu_ns() if running else 0,
            "online_cpus": os.cpu_count() or 1,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": memory,
        "blkio_stats": {"io_service_bytes_recursive": None},
        "storage_stats": {},
    }
    network = container.network
    if running and container.state.pid and network is not None and network.mode == "bridge":
        # Only a container with its own endpoint has the key (none and host have not).
        interfaces = network_stats(container.state.pid)
        if interfaces:
            stats["networks"] = interfaces
    return stats
