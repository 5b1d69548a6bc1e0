"""The system service: `GET /info` counts and host facts (OS, kernel, CPUs, memory)."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from ..containers.security.seccomp_filter import security_options as seccomp_security_options
from ..images.store import ImageStore
from ..version import SERVER_VERSION
from .registry import ContainerRegistry


class SystemService:
    """Host facts and engine-wide counts.

    Lock discipline: none of its own; container states are read from the registry's
    snapshot of its table (each state read whole, without the container's lock: counts
    in /info are a moment's view, as dockerd's).
    """

    def __init__(self, engine_id: str, root: Path, registry: ContainerRegistry,
                 images: ImageStore) -> None:
        self._id = engine_id
        self._root = root
        self._registry = registry
        self._images = images

    def info(self) -> dict[str, Any]:
        """Counts and host facts for `GET /info` (Containers, ContainersRunning, Images, NCPU, MemTotal, ...)."""
        states = [live.c.state for live in self._registry.all()]
        running = sum(1 for s in states if s.running and not s.paused)
        paused = sum(1 for s in states if s.paused)
        try:
            n_images = len(self._images.list())
        except Exception:   # noqa: BLE001 - info must answer even if the image store is broken
            n_images = 0
        return {
            "ID": self._id,
            "Containers": len(states),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": len(states) - running - paused,
            "Images": n_images,
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"]],
            "KernelVersion": os.uname().release,
            "OperatingSystem": os_pretty_name(),
            "OSType": "linux",
            "OSVersion": os_release().get("VERSION_ID", ""),
            "Architecture": platform.machine(),
            "NCPU": os.cpu_count() or 1,
            "MemTotal": mem_total(),
            "Name": socket.gethostname(),
            "ServerVersion": SERVER_VERSION,
            "DockerRootDir": str(self._root),
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1",
            "LoggingDriver": "json-file",
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                        "Log": ["json-file"]},
            "MemoryLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "PidsLimit": True,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "SecurityOptions": seccomp_security_options(),
            "Labels": [],
            "Debug": False,
        }


def os_release() -> dict[str, str]:
    """/etc/os-release as a dict (empty when unreadable)."""
    result: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq:
                result[key] = value.strip().strip('"')
    except OSError:
        pass
    return result


def os_pretty_name() -> str:
    return os_release().get("PRETTY_NAME", "Linux")


def mem_total() -> int:
    """Bytes of RAM, from /proc/meminfo (0 when unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
