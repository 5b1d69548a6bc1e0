"""The resource limits a container's cgroup enforces: plain data.

Its own module so the container spec can hold a `Limits` without importing the
cgroup code (which reads mountinfo and loads ctypes) and so `cgroups` needs
nothing from the container packages above it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Resource limits; None means unlimited. Applied through cgroups (v1 where v2 lacks the controller)."""

    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    memory_reservation_bytes: int | None = None
    cpuset_cpus: str | None = None     # Docker's list syntax, "0-2,5"
    cpuset_mems: str | None = None
