"""The interface every VM backend implements, and the launch description they share.

A backend knows how to turn a `LaunchSpec` into a running QEMU guest (through
libvirt or as a direct process) and how to query and stop it. It knows nothing
about SSH, the engine or the CLI: the manager ties those together.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeFailure

READY_CHANNEL_NAME = "org.dockyard.guest.0"
# QEMU user-mode networking: the guest reaches the host's loopback here.
HOST_LOOPBACK_IN_GUEST = "10.0.2.2"
NETDEV_ID = "dynet"


# qboot: QEMU's minimal firmware for direct kernel boots. Under TCG it reaches
# the kernel ~0.1 s sooner than SeaBIOS (0.10-0.11 s vs 0.17-0.32 s measured
# from `virDomainCreate` returning to the guest clock's zero).
QBOOT_PATHS = (Path("/usr/share/qemu/qboot.rom"), Path("/usr/share/qemu-kvm/qboot.rom"))


# TCG's translation cache, in MiB (QEMU's `-accel tcg,tb-size=`; libvirt's
# <features><tcg><tb-cache>). QEMU 7.2 reserves 1 GiB by default and every page
# of it that was ever filled stays resident: QEMU held ~0.9-1.1 GB with a guest
# using 163 MB. When the cache is full QEMU flushes it and retranslates what
# runs next. Measured here (2 GiB guest, direct backend): 128 MiB left QEMU at
# 448 MiB after a minute idle, 64 MiB at 382 MiB, with idle CPU unchanged
# (0.7-0.8 % of a core). Only TCG has this cache: KVM, HVF and WHPX run guest
# code natively.
TCG_TB_CACHE_MIB = 64


def tcg_tb_cache_mib(accel: str) -> int | None:
    """The translation-cache bound to apply for `accel`, None when the accelerator has none."""
    return TCG_TB_CACHE_MIB if accel == "tcg" else None


def minimal_firmware() -> Path | None:
    """QEMU's qboot ROM when installed (Debian's qemu-system-data has it), else None: SeaBIOS."""
    return next((p for p in QBOOT_PATHS if p.is_file()), None)


class SaveRefused(RuntimeFailure):
    """This VM cannot be saved (e.g. QEMU blocks migration while a 9p share is mounted); it keeps running."""


class VmState(enum.StrEnum):
    """Coarse VM state as seen by the host."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    UNDEFINED = "undefined"


@dataclass
class ShareMount:
    """One exported host folder: QEMU mount tag and host directory."""

    tag: str
    host_path: Path


@dataclass
class LaunchSpec:
    """Everything needed to boot one machine, independent of the backend."""

    name: str
    accel: str  # kvm, hvf, whpx or tcg
    cpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    rootfs: Path
    data_disk: Path
    cmdline: str
    ssh_port: int
    ready_socket: Path
    console_log: Path
    run_dir: Path
    sharefs: str = "none"  # 9p, virtiofs or none (sftp needs nothing from QEMU)
    shares: list[ShareMount] = field(default_factory=list)
    virtiofsd: Path = Path("/usr/lib/qemu/virtiofsd")
    # The user QEMU should run as (libvirt qemu:///system): share writes then
    # carry the owner of the shared folders instead of libvirt-qemu.
    run_as_uid: int | None = None
    run_as_gid: int | None = None
    # x86 firmware to use instead of QEMU's default SeaBIOS (see minimal_firmware()).
    firmware: Path | None = None
    # The VM's host-wide name (Machine.domain_name: unique per Dockyard home);
    # empty: dockyard-<name>.
    domain: str = ""
    # The Dockyard home that owns the VM, recorded in the libvirt domain's metadata.
    owner_home: str = ""

    @property
    def tcg_tb_cache_mib(self) -> int | None:
        """TCG's translation-cache bound for this machine, None when its accelerator has no such cache."""
        return tcg_tb_cache_mib(self.accel)

    @property
    def domain_name(self) -> str:
        return self.domain or f"dockyard-{self.name}"

    def hostfwd_ssh(self) -> str:
        return f"tcp:127.0.0.1:{self.ssh_port}-:22"


class Backend(ABC):
    """Lifecycle of one machine's VM. Implementations must be safe to call repeatedly."""

    name: str = "abstract"

    def __init__(self, domain_name: str, run_dir: Path, console_log: Path) -> None:
        self.domain_name = domain_name
        self.run_dir = run_dir
        self._console_log = console_log

    @abstractmethod
    def define(self, spec: LaunchSpec) -> None:
        """Record how to boot (libvirt domain definition / saved argv); does not start."""

    @abstractmethod
    def start(self) -> None:
        """Boot the defined VM; returns once QEMU runs (the guest is still booting)."""

    @abstractmethod
    def stop(self) -> None:
        """Ask the guest to power off via ACPI (may be ignored by a minimal guest)."""

    @abstractmethod
    def force_stop(self) -> None:
        """Kill the VM at once (like pulling the plug)."""

    @abstractmethod
    def state(self) -> VmState:
        """The VM's current state."""

    @abstractmethod
    def remove(self) -> None:
        """Forget the VM definition (the VM must be stopped)."""

    @abstractmethod
    def monitor_command(self, command: str) -> str:
        """Run a QEMU human-monitor (HMP) command, e.g. hostfwd_add; returns its output."""

    @property
    def console_log_path(self) -> Path:
        """File receiving the guest's serial console."""
        return self._console_log

    @property
    def ready_channel_path(self) -> Path:
        """Unix socket of the virtio-serial ready channel (QEMU listens, host connects)."""
        return self.run_dir / "ready.sock"

    @property
    @abstractmethod
    def ssh_port(self) -> int:
        """Host port forwarded to the guest's sshd."""

    def retire_legacy(self, legacy_name: str, data_disk: Path) -> None:  # noqa: B027 - optional hook, no-op by default
        """Forget this machine's VM as an older Dockyard named it (before names carried the
        home's tag), recognised by its data disk; refuse while it runs. Nothing by default."""

    def watch_exit(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Block until the VM ends, recording why where only a watcher can learn it (the
        supervisor runs this in a thread). Returns at once when the backend has nothing to watch."""

    def exit_reason(self) -> str | None:
        """Why a VM that was running has stopped, as far as the backend can know (None: it cannot)."""
        return None
    # -- saved state (instant start; see desktop.machine.instant_start) ------
    def save_state(self) -> dict[str, Any]:
        """Save the running guest to disk and end the VM; returns facts for the record (sizes).

        Raises SaveRefused, with the VM still running, when it cannot be saved.
        """
        raise SaveRefused(f"the {self.name} backend cannot save a running machine")

    def has_saved_state(self) -> bool:
        return False

    def discard_saved_state(self) -> None:  # noqa: B027 - optional hook, nothing saved by default
        """Delete the saved guest, if any."""

    def begin_restore(self, spec: LaunchSpec) -> None:
        """Start the VM from its saved state (as `spec` says, e.g. a new SSH port); it may still be loading."""
        raise SaveRefused(f"the {self.name} backend cannot restore a saved machine")

    def finish_restore(self, timeout: float) -> None:  # noqa: B027 - optional hook: begin_restore may do it all
        """Block until the restored guest runs; RuntimeFailure (VM stopped) when the state would not load."""

    def add_hostfwd(self, proto: str, host_port: int, guest_port: int) -> None:
        """Forward host 127.0.0.1:host_port to the guest (user-net hostfwd_add)."""
        out = self.monitor_command(f"hostfwd_add {NETDEV_ID} {proto}:127.0.0.1:{host_port}-:{guest_port}")
        _check_hmp(out, "hostfwd_add")

    def remove_hostfwd(self, proto: str, host_port: int) -> None:
        out = self.monitor_command(f"hostfwd_remove {NETDEV_ID} {proto}:127.0.0.1:{host_port}")
        _check_hmp(out, "hostfwd_remove")


def _check_hmp(output: str, what: str) -> None:
    text = output.strip()
    if text and any(word in text.lower() for word in ("invalid", "could not", "error", "not found")):
        raise RuntimeFailure(f"{what} failed: {text}")
