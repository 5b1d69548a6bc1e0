"""The machine's footprint on the host: QEMU's resident memory and idle CPU.

Measured on a machine `bench.machine` has just started (its `Bench` object):
* QEMU's VmRSS right after boot (first `docker version` answered);
* after a minute idle, then QEMU's CPU use over a second idle minute;
* at the exit of a container that allocated and touched 500 MB (busybox `dd`
  with a 500 MB block: one buffer, filled by read(2)), and a minute later.

Target (issue 11): <= 400 MB idle after boot, and back within 10 % of that a
minute after the container exits. Sleeps here are the measurement's idle
minutes, not synchronisation. Linux-only (procfs), like the rest of the bench.
"""

from __future__ import annotations

import time
from typing import Any

from tests.support.qemu_process import cpu_seconds, qemu_pid, rss_mib

BIG_CONTAINER_MB = 500
TARGET_IDLE_MIB = 400.0


def big_container_argv(image: str, mb: int = BIG_CONTAINER_MB) -> list[str]:
    """`docker run` arguments of a container that allocates and touches `mb` MB, then exits."""
    return ["run", "--rm", image, "dd", "if=/dev/zero", "of=/dev/null", f"bs={mb}M", "count=1"]


def measure_footprint(b: Any, domain_name: str, image: str, idle_s: float = 60.0) -> dict[str, float]:
    """RSS (MiB) and idle CPU (% of one core) of the machine's QEMU; `b` is a bench.machine.Bench."""
    pid = qemu_pid(domain_name)
    if not pid:
        raise RuntimeError(f"no QEMU process runs {domain_name}")
    out = {"rss_boot": rss_mib(pid)}
    time.sleep(idle_s)
    out["rss_idle"] = rss_mib(pid)
    # CPU over a second idle minute: the first still holds the guest's after-boot
    # work (module loading, first trim).
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(idle_s)
    out["idle_cpu_pct"] = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    b.docker(b.docker_host, "pull", image)
    out["rss_idle_pulled"] = rss_mib(pid)
    b.docker(b.docker_host, *big_container_argv(image))
    out["rss_big_exit"] = rss_mib(pid)
    time.sleep(idle_s)
    out["rss_big_later"] = rss_mib(pid)
    return out


def report(fp: dict[str, float]) -> list[str]:
    """Lines for the bench's output."""
    idle = fp["rss_idle"]
    back = fp["rss_big_later"]
    return [
        "QEMU resident memory (VmRSS):",
        f"  right after boot          : {fp['rss_boot']:.0f} MiB (target <= {TARGET_IDLE_MIB:.0f})",
        f"  after a minute idle       : {idle:.0f} MiB",
        f"  QEMU CPU, next minute idle: {fp['idle_cpu_pct']:.1f} % of a core",
        f"  image pulled, before run  : {fp['rss_idle_pulled']:.0f} MiB",
        f"  a {BIG_CONTAINER_MB} MB container exited : {fp['rss_big_exit']:.0f} MiB",
        f"  a minute after that       : {back:.0f} MiB ({100 * (back - idle) / idle:+.0f} % of idle; "
        f"target within 10 %)",
    ]
