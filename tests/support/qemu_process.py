"""The host's view of a machine's QEMU process: find it, read its resident memory and CPU time.

Linux-only (procfs), like the tests and benchmarks that use it. Works for both
backends: the direct one passes `-name DOMAIN`, libvirt `-name guest=DOMAIN,...`.
"""

from __future__ import annotations

import os
from pathlib import Path


def qemu_pid(domain_name: str) -> int:
    """The pid of the qemu-system process running `domain_name`, 0 if none runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or b"qemu-system" not in os.path.basename(argv[0]):
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg == b"-name" and _names(argv[i + 1], domain_name):
                return int(entry.name)
    return 0


def _names(value: bytes, domain_name: str) -> bool:
    """True when a QEMU -name value (`NAME` or `guest=NAME,debug-threads=on`) names `domain_name`."""
    first = value.decode(errors="replace").split(",", 1)[0]
    return first.removeprefix("guest=") == domain_name


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` in MiB (anonymous + file + shared memory pages resident now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def allocated_mib(path: Path) -> float:
    """Space a (sparse) file occupies on the host's disk, in MiB."""
    return path.stat().st_blocks * 512 / (1 << 20)
