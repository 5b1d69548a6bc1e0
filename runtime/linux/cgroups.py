"""Per-container cgroups on cgroup v1, v2, or the hybrid of both.

The layout is detected at runtime from /proc/self/mountinfo: every mounted v1
controller we use (memory, pids, cpu, cpuacct, cpuset, freezer, devices; blkio and
systemd's named hierarchy without limits, for /sys/fs/cgroup in the container) gets a
directory `<mount>/dockyard/<container id>`, and so does the v2 hierarchy when
it is mounted. A limit goes to v1 when that controller is mounted there (a
hybrid host's v2 tree usually lacks memory and pids), otherwise to v2; device
access is limited by the v1 devices controller or, on v2, an eBPF filter.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import RuntimeFailure
from . import device_filter
from .cgroup_limits import Limits

log = logging.getLogger(__name__)

DEFAULT_PARENT = "dockyard"
# blkio and systemd's named hierarchy hold no limits of ours, but a container is placed in
# its own cgroup there too, so its /sys/fs/cgroup shows only itself (as under Docker).
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "cpuset", "freezer", "devices", "blkio", "name=systemd")
CFS_PERIOD_US = 100_000

# Docker's default device rules (moby oci/defaults.go): mknod anything, use only these.
DEFAULT_DEVICE_RULES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
)


@dataclass(frozen=True)
class CgroupLayout:
    """Where the cgroup hierarchies are mounted on this host."""

    v1: dict[str, Path]                 # controller -> mount point
    unified: Path | None                # cgroup2 mount point
    unified_controllers: frozenset[str] = frozenset()
    # Every cgroup v1 hierarchy (also those we set no limits in) and its mount options.
    v1_mounts: tuple[tuple[Path, frozenset[str]], ...] = ()

    @property
    def pure_v2(self) -> bool:
        """cgroup v2 only (no v1 hierarchy mounted), as on a stock Debian 12 or our VM."""
        return self.unified is not None and not self.v1_mounts

    def uses_v1(self, controller: str) -> bool:
        return controller in self.v1

    def uses_v2(self, controller: str) -> bool:
        return controller not in self.v1 and controller in self.unified_controllers


def _unescape(field_text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field_text):
        code = field_text[i + 1:i + 4]
        if field_text[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field_text[i])
            i += 1
    return "".join(out)


def parse_layout(mountinfo: str) -> CgroupLayout:
    """Build the layout from the text of a /proc/<pid>/mountinfo file."""
    v1: dict[str, Path] = {}
    v1_mounts: dict[Path, frozenset[str]] = {}
    unified: Path | None = None
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_point, fstype = Path(_unescape(fields[4])), tail[0]
        if fstype == "cgroup2" and unified is None:
            unified = mount_point
        elif fstype == "cgroup":
            v1_mounts.setdefault(mount_point, frozenset(tail[2].split(",")))
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS and option not in v1:
                    v1[option] = mount_point
    controllers: frozenset[str] = frozenset()
    if unified is not None:
        try:
            controllers = frozenset((unified / "cgroup.controllers").read_text().split())
        except OSError:
            controllers = frozenset()
    return CgroupLayout(v1=v1, unified=unified, unified_controllers=controllers, v1_mounts=tuple(v1_mounts.items()))


@lru_cache(maxsize=1)
def host_layout() -> CgroupLayout:
    """The layout of the calling process's mount namespace (cached: it does not change)."""
    with open("/proc/self/mountinfo") as f:
        return parse_layout(f.read())


@dataclass
class ContainerCgroup:
    """One container's cgroup directories, one per hierarchy, and which one holds what."""

    container_id: str
    dirs: list[Path] = field(default_factory=list)   # every directory, each hierarchy once
    memory: Path | None = None
    memory_v2: bool = False
    pids: Path | None = None
    cpu: Path | None = None
    cpu_v2: bool = False
    cpuset: Path | None = None
    cpuset_v2: bool = False
    freezer: Path | None = None
    devices: Path | None = None
    unified: Path | None = None

    def procs_files(self) -> list[Path]:
        """The cgroup.procs files a process writes itself into to join the container."""
        return [d / "cgroup.procs" for d in self.dirs]


def container_cgroup(container_id: str, layout: CgroupLayout | None = None,
                     parent: str = DEFAULT_PARENT) -> ContainerCgroup:
    """Compute (without touching anything) where a container's cgroups live."""
    layout = layout or host_layout()
    cg = ContainerCgroup(container_id=container_id)
    seen: dict[Path, Path] = {}

    def add(mount: Path) -> Path:
        if mount not in seen:
            seen[mount] = mount / parent / container_id
            cg.dirs.append(seen[mount])
        return seen[mount]

    for controller in V1_CONTROLLERS:
        if controller in layout.v1:
            add(layout.v1[controller])
    if layout.unified is not None:
        cg.unified = add(layout.unified)
    if "memory" in layout.v1:
        cg.memory = seen[layout.v1["memory"]]
    elif layout.uses_v2("memory"):
        cg.memory, cg.memory_v2 = cg.unified, True
    if "pids" in layout.v1:
        cg.pids = seen[layout.v1["pids"]]
    elif layout.uses_v2("pids"):
        cg.pids = cg.unified
    if "cpu" in layout.v1:
        cg.cpu = seen[layout.v1["cpu"]]
    elif layout.uses_v2("cpu"):
        cg.cpu, cg.cpu_v2 = cg.unified, True
    if "cpuset" in layout.v1:
        cg.cpuset = seen[layout.v1["cpuset"]]
    elif layout.uses_v2("cpuset"):
        cg.cpuset, cg.cpuset_v2 = cg.unified, True
    if "freezer" in layout.v1:
        cg.freezer = seen[layout.v1["freezer"]]
    if "devices" in layout.v1:
        cg.devices = seen[layout.v1["devices"]]
    return cg


def _write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise RuntimeFailure(f"cgroup: cannot write {value!r} to {path}: {err.strerror}") from err


def _enable_v2_controllers(layout: CgroupLayout, parent: str, wanted: set[str]) -> None:
    """Delegate controllers down to <unified>/<parent> so container leaves get them."""
    if layout.unified is None or not wanted:
        return
    for directory in (layout.unified, layout.unified / parent):
        try:
            enabled = set((directory / "cgroup.subtree_control").read_text().split())
        except OSError:
            enabled = set()
        for controller in sorted(wanted - enabled):
            try:
                _write(directory / "cgroup.subtree_control", f"+{controller}")
            except RuntimeFailure as err:
                log.warning("cannot enable cgroup controller %s: %s", controller, err)


def create(cg: ContainerCgroup, limits: Limits, privileged: bool = False,
           layout: CgroupLayout | None = None, parent: str = DEFAULT_PARENT,
           device_rules: list[str] | tuple[str, ...] = ()) -> None:
    """Make the container's directories and write its limits (before any process joins).

    `device_rules` (devices.allow lines from --device and --device-cgroup-rule)
    are allowed on top of Docker's defaults.
    """
    layout = layout or host_layout()
    if layout.unified is not None and cg.unified is not None:
        (layout.unified / parent).mkdir(exist_ok=True)
        _enable_v2_controllers(layout, parent,
                               {c for c in ("memory", "pids", "cpu", "cpuset") if layout.uses_v2(c)})
    if cg.cpuset is not None and not cg.cpuset_v2:
        # A new v1 cpuset starts empty and takes no process: fill the parent from the root.
        _inherit_cpuset(cg.cpuset.parent)
    for directory in cg.dirs:
        directory.mkdir(parents=True, exist_ok=True)
    _apply_cpuset(cg, limits)
    _apply_memory(cg, limits)
    if cg.pids is not None and limits.pids_limit is not None:
        _write(cg.pids / "pids.max", str(limits.pids_limit) if limits.pids_limit > 0 else "max")
    _apply_cpu(cg, limits)
    if not privileged:
        _restrict_devices(cg, device_rules)


def _restrict_devices(cg: ContainerCgroup, extra: list[str] | tuple[str, ...] = ()) -> None:
    """Docker's device allow-list plus `extra`: v1 devices controller, else an eBPF program on v2."""
    rules = list(DEFAULT_DEVICE_RULES) + list(extra)
    if cg.devices is not None:
        _write(cg.devices / "devices.deny", "a")
        for rule in rules:
            _write(cg.devices / "devices.allow", rule)
    elif cg.unified is not None:
        try:
            device_filter.attach(cg.unified, [device_filter.DeviceRule.parse(r) for r in rules])
        except OSError as err:
            raise RuntimeFailure(f"cgroup: cannot attach the device filter to {cg.unified}: "
                                 f"{err.strerror}") from err


def _inherit_cpuset(directory: Path) -> None:
    """Create a v1 cpuset directory (if needed) with its parent's CPUs and memory nodes."""
    directory.mkdir(exist_ok=True)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (directory / name).read_text().strip():
            _write(directory / name, (directory.parent / name).read_text().strip())


def _apply_cpuset(cg: ContainerCgroup, limits: Limits) -> None:
    """--cpuset-cpus/--cpuset-mems; on v1 a container without them gets all of its parent's."""
    if cg.cpuset is None:
        if limits.cpuset_cpus or limits.cpuset_mems:
            raise RuntimeFailure("cgroup: this machine has no cpuset controller for --cpuset-cpus/--cpuset-mems")
        return
    if not cg.cpuset_v2:
        _inherit_cpuset(cg.cpuset)
    if limits.cpuset_cpus:
        _write(cg.cpuset / "cpuset.cpus", limits.cpuset_cpus)
    if limits.cpuset_mems:
        _write(cg.cpuset / "cpuset.mems", limits.cpuset_mems)


def _apply_memory(cg: ContainerCgroup, limits: Limits) -> None:
    if cg.memory is not None and limits.memory_reservation_bytes:
        _write(cg.memory / ("memory.low" if cg.memory_v2 else "memory.soft_limit_in_bytes"),
               str(limits.memory_reservation_bytes))
    memory = limits.memory_bytes
    if cg.memory is None or not memory or memory <= 0:
        return
    # Docker's MemorySwap is memory+swap: unset or 0 means twice the memory, -1 unlimited.
    swap_total = limits.memory_swap_bytes
    if swap_total is None or swap_total == 0:
        swap_total = 2 * memory
    if cg.memory_v2:
        _write(cg.memory / "memory.max", str(memory))
        if (cg.memory / "memory.swap.max").exists():
            _write(cg.memory / "memory.swap.max",
                   "max" if swap_total < 0 else str(max(swap_total - memory, 0)))
        return
    _write(cg.memory / "memory.limit_in_bytes", str(memory))
    if (cg.memory / "memory.memsw.limit_in_bytes").exists():
        _write(cg.memory / "memory.memsw.limit_in_bytes", "-1" if swap_total < 0 else str(swap_total))
    try:
        _write(cg.memory / "memory.swappiness", "0")
    except RuntimeFailure as err:
        log.debug("%s", err)


def _apply_cpu(cg: ContainerCgroup, limits: Limits) -> None:
    if cg.cpu is None:
        return
    quota = limits.nano_cpus * CFS_PERIOD_US // 1_000_000_000 if limits.nano_cpus else 0
    if cg.cpu_v2:
        if quota > 0:
            _write(cg.cpu / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        if limits.cpu_shares:
            weight = 1 + ((max(limits.cpu_shares, 2) - 2) * 9999) // 262142
            _write(cg.cpu / "cpu.weight", str(min(weight, 10000)))
        return
    if quota > 0:
        _write(cg.cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cg.cpu / "cpu.cfs_quota_us", str(quota))
    if limits.cpu_shares:
        _write(cg.cpu / "cpu.shares", str(limits.cpu_shares))


def update(cg: ContainerCgroup, limits: Limits) -> None:
    """Write changed limits to a running container's cgroups (`docker update`).

    Unlike `create`, an unset limit is written as "no limit", and on v1 the memory and
    memory+swap limits are written in the order the kernel accepts (memory may never
    exceed memory+swap). A memory limit below what the container uses is refused by the
    kernel (EBUSY on v1): raised as RuntimeFailure with the usage, as runc words it.
    """
    _apply_cpuset(cg, limits)
    if cg.memory is not None:
        _update_memory(cg, limits)
    if cg.pids is not None:
        _write(cg.pids / "pids.max", str(limits.pids_limit) if limits.pids_limit else "max")
    if cg.cpu is not None:
        if cg.cpu_v2:
            if not limits.nano_cpus:
                _write(cg.cpu / "cpu.max", f"max {CFS_PERIOD_US}")
        elif not limits.nano_cpus:
            _write(cg.cpu / "cpu.cfs_quota_us", "-1")
        _apply_cpu(cg, limits)


def _update_memory(cg: ContainerCgroup, limits: Limits) -> None:
    assert cg.memory is not None
    memory = limits.memory_bytes or 0
    swap_total = limits.memory_swap_bytes or 0
    if memory > 0 and swap_total == 0:
        swap_total = 2 * memory
    if cg.memory_v2:
        _write_memory_limit(cg, "memory.max", str(memory) if memory > 0 else "max", memory)
        if (cg.memory / "memory.swap.max").exists():
            _write(cg.memory / "memory.swap.max", "max" if memory <= 0 or swap_total < 0
                   else str(max(swap_total - memory, 0)))
        _write(cg.memory / "memory.low", str(limits.memory_reservation_bytes or 0))
        return
    limit = str(memory) if memory > 0 else "-1"
    memsw_file = cg.memory / "memory.memsw.limit_in_bytes"
    memsw = "-1" if memory <= 0 or swap_total < 0 else str(swap_total)
    if memsw_file.exists():
        current = int(memsw_file.read_text().strip() or 0)
        # Raising: memory+swap first; lowering: memory first (memory <= memory+swap always).
        if memsw == "-1" or int(memsw) > current:
            _write(memsw_file, memsw)
            _write_memory_limit(cg, "memory.limit_in_bytes", limit, memory)
        else:
            _write_memory_limit(cg, "memory.limit_in_bytes", limit, memory)
            _write(memsw_file, memsw)
    else:
        _write_memory_limit(cg, "memory.limit_in_bytes", limit, memory)
    _write(cg.memory / "memory.soft_limit_in_bytes", str(limits.memory_reservation_bytes or -1))


def _write_memory_limit(cg: ContainerCgroup, name: str, value: str, memory: int) -> None:
    assert cg.memory is not None
    try:
        fd = os.open(cg.memory / name, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno != errno.EBUSY:
            raise RuntimeFailure(f"cgroup: cannot write {value!r} to {cg.memory / name}: {err.strerror}") from err
        usage, peak = (("memory.current", "memory.peak") if cg.memory_v2
                       else ("memory.usage_in_bytes", "memory.max_usage_in_bytes"))
        figures = []
        for label, fname in (("current usage", usage), ("peak usage", peak)):
            try:
                figures.append(f"{label}: {int((cg.memory / fname).read_text())}")
            except (OSError, ValueError):
                pass
        raise RuntimeFailure(f"unable to set memory limit to {memory} ({', '.join(figures)})") from err


def add_process(procs_file: Path, pid: int) -> None:
    """Move process `pid` into the cgroup whose cgroup.procs file is `procs_file`."""
    _write(procs_file, str(pid))


def pids(cg: ContainerCgroup) -> list[int]:
    """Host pids of every process in the container (sorted)."""
    found: set[int] = set()
    for directory in ([cg.unified] if cg.unified is not None else []) + cg.dirs:
        try:
            found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        if found:
            break
    return sorted(found)


def oom_kill_count(cg: ContainerCgroup) -> int:
    """How many processes the memory cgroup OOM-killed (0 without a memory cgroup)."""
    if cg.memory is None:
        return 0
    name = "memory.events" if cg.memory_v2 else "memory.oom_control"
    try:
        text = (cg.memory / name).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def kill_all(cg: ContainerCgroup, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to every process in the container (cgroup.kill when SIGKILL and available)."""
    if sig == signal.SIGKILL and cg.unified is not None and (cg.unified / "cgroup.kill").exists():
        try:
            _write(cg.unified / "cgroup.kill", "1")
            return
        except RuntimeFailure as err:
            log.debug("%s", err)
    for pid in pids(cg):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def is_frozen(cg: ContainerCgroup) -> bool:
    """Whether the kernel reports the container completely frozen."""
    if cg.unified is not None and (cg.unified / "cgroup.freeze").exists():
        for line in (cg.unified / "cgroup.events").read_text().splitlines():
            if line.startswith("frozen "):
                return line.split()[1] == "1"
        return False
    if cg.freezer is not None:
        return (cg.freezer / "freezer.state").read_text().strip() == "FROZEN"
    return False


def set_frozen(cg: ContainerCgroup, frozen: bool, timeout: float = 5.0) -> None:
    """Freeze (pause) or thaw every process of the container; returns once the kernel is done."""
    if cg.unified is not None and (cg.unified / "cgroup.freeze").exists():
        _write(cg.unified / "cgroup.freeze", "1" if frozen else "0")
    elif cg.freezer is not None:
        _write(cg.freezer / "freezer.state", "FROZEN" if frozen else "THAWED")
    else:
        raise RuntimeFailure("cgroup: no freezer available on this host")
    # Freezing is asynchronous (tasks stop at their next return to user space).
    deadline = time.monotonic() + timeout
    while is_frozen(cg) != frozen:
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"cgroup: container {cg.container_id[:12]} did not "
                                 f"{'freeze' if frozen else 'thaw'} within {timeout} s")
        time.sleep(0.001)


def remove(cg: ContainerCgroup, timeout: float = 5.0) -> None:
    """Kill what is left in the container's cgroups and remove the directories. Idempotent."""
    deadline = time.monotonic() + timeout
    pending = [d for d in cg.dirs if d.exists()]
    killed = False
    while pending:
        still: list[Path] = []
        for directory in pending:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as err:
                if err.errno != errno.EBUSY:
                    raise RuntimeFailure(f"cgroup: cannot remove {directory}: {err.strerror}") from err
                still.append(directory)
        pending = still
        if not pending:
            return
        if not killed:
            kill_all(cg)
            killed = True
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"cgroup: {pending[0]} still has processes after {timeout} s")
        # Dying processes leave their cgroup asynchronously; poll until they are gone.
        time.sleep(0.005)
