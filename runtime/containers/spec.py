"""What the process launcher needs to start one container or one exec: plain data.

The engine fills these from the user's request and the image; `process`
turns them into namespaces, mounts, cgroups and an exec'd process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..linux.cgroup_limits import Limits

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# Docker's masked and read-only /proc and /sys paths (moby oci/defaults.go).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)


@dataclass
class BindMount:
    """A host path (file or directory) bound at `target` inside the container."""

    source: str
    target: str
    readonly: bool = False


@dataclass
class TmpfsMount:
    """A fresh tmpfs at `target`; `options` as for mount(8), e.g. "size=64m,mode=1777"."""

    target: str
    options: str = ""


# The profile name dockerd uses for its built-in default (`--security-opt seccomp=builtin`).
BUILTIN_SECCOMP_PROFILE = "builtin"


@dataclass(frozen=True)
class SeccompPolicy:
    """Which seccomp filter a process gets (compiled by `security.seccomp_filter`).

    `profile` is Docker's default ("builtin") or a custom profile's JSON text.
    `capabilities` is the bounding set its capability conditions are resolved
    against: None means the process's own; an exec passes its container's, as
    runc applies the container's filter to every process it starts there.
    """

    profile: str = BUILTIN_SECCOMP_PROFILE
    capabilities: tuple[str, ...] | None = None


@dataclass
class SharedNamespaces:
    """Which namespaces a container shares instead of getting its own (--pid, --ipc, --cgroupns)."""

    pid_host: bool = False
    pid_path: str | None = None        # join this pid namespace (--pid container:X)
    ipc_host: bool = False
    ipc_path: str | None = None        # join this ipc namespace (--ipc container:X)
    shm_source: str | None = None      # host directory bound at /dev/shm; None: a tmpfs of its own
    shm_own_dir: str | None = None     # --ipc shareable: the launcher mounts the tmpfs here first
    no_shm: bool = False               # --ipc none: no /dev/shm at all
    private_cgroupns: bool = True      # own cgroup namespace (Docker's default on cgroup v2)


@dataclass(frozen=True)
class DeviceNode:
    """A host device made available in the container (--device): node and cgroup access."""

    path: str            # inside the container
    host_path: str       # bound instead when the node cannot be made (no CAP_MKNOD)
    kind: str            # "c" or "b"
    major: int
    minor: int
    mode: int            # permission bits of the host node
    uid: int
    gid: int
    access: str          # cgroup access, a subset of "rwm"


@dataclass
class ProcessSpec:
    """The process to exec inside the container (pid 1 of a container, or an exec)."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: str = ""            # "", "name", "uid", "uid:gid", "name:group"; resolved in the container's /etc
    tty: bool = False
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    privileged: bool = False
    no_new_privileges: bool = False     # Docker sets it only for --security-opt no-new-privileges
    seccomp: SeccompPolicy | None = field(default_factory=SeccompPolicy)   # None: unconfined
    group_add: tuple[str, ...] = ()   # extra groups: names (looked up in the container's /etc/group) or gids
    rlimits: tuple[tuple[int, int, int], ...] = ()   # (resource, soft, hard) for setrlimit
    oom_score_adj: int = 0


@dataclass
class ContainerSpec:
    """Everything needed to start a container's first process."""

    id: str
    lower_dirs: list[Path]          # unpacked image layers, lowest first, read-only
    upper_dir: Path                 # container's writable layer
    work_dir: Path                  # overlayfs workdir (same filesystem as upper_dir)
    process: ProcessSpec
    hostname: str = ""
    domainname: str = ""
    mounts: list[BindMount | TmpfsMount] = field(default_factory=list)  # applied in order
    etc_files: dict[str, Path] = field(default_factory=dict)  # e.g. {"/etc/hosts": host_file}
    netns_path: str | None = None   # join this net namespace (bridge mode)
    host_network: bool = False      # share the host's; if neither, a fresh one with only loopback
    readonly_rootfs: bool = False
    shm_size: int = 64 * 1024 * 1024   # bytes of the /dev/shm tmpfs
    sysctls: dict[str, str] = field(default_factory=dict)   # written in the container's namespaces
    limits: Limits = field(default_factory=Limits)
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    namespaces: SharedNamespaces = field(default_factory=SharedNamespaces)
    devices: list[DeviceNode] = field(default_factory=list)
    device_rules: list[str] = field(default_factory=list)   # extra devices.allow rules ("c 1:3 rwm")


@dataclass
class Stdio:
    """File descriptors (owned by the caller) that become the process's 0, 1, 2.

    With a TTY all three are the pty slave; the launcher makes it the controlling terminal.
    """

    stdin: int
    stdout: int
    stderr: int
