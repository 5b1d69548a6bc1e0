"""Chooses the VM accelerator: KVM, HVF or WHPX when they really work, else TCG.

On Linux `/dev/kvm` existing is not enough: inside some cloud VMs it is a
paravirtual KVM (e.g. kvm_pvm) that opens and creates VMs but cannot run a
normal guest. Such hosts expose neither `vmx` nor `svm` in /proc/cpuinfo, so
the probe requires the CPU flag as well as a working /dev/kvm. The decision is
logged once, with the reason, because "why is my VM slow" starts there.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator QEMU should use and the human-readable reason for it."""

    name: str  # "kvm", "hvf", "whpx" or "tcg"
    reason: str

    @property
    def libvirt_domain_type(self) -> str:
        # libvirt calls TCG "qemu"; HVF and WHPX are not libvirt domain types here.
        return "kvm" if self.name == "kvm" else "qemu"


def _cpu_virt_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return flags & {"vmx", "svm"}


def _kvm_api_version(dev_kvm: Path) -> int | str:
    """The KVM API version from the device, or a string saying why it cannot be read."""
    import fcntl

    try:
        fd = os.open(dev_kvm, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{dev_kvm} does not exist (kvm module not loaded?)"
    except PermissionError:
        return f"{dev_kvm} is not accessible to this user (add it to the 'kvm' group)"
    except OSError as err:
        return f"{dev_kvm} cannot be opened: {err.strerror}"
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as err:
        return f"{dev_kvm} does not answer KVM_GET_API_VERSION: {err.strerror}"
    finally:
        os.close(fd)


def probe_linux(dev_kvm: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo")) -> AccelChoice:
    """KVM when /dev/kvm answers AND the CPU has hardware virtualisation, else TCG."""
    version = _kvm_api_version(dev_kvm)
    if isinstance(version, str):
        return AccelChoice("tcg", f"KVM unusable: {version}")
    if version != KVM_API_VERSION:
        return AccelChoice("tcg", f"KVM unusable: {dev_kvm} reports API version {version}, expected {KVM_API_VERSION}")
    flags = _cpu_virt_flags(cpuinfo)
    if not flags:
        return AccelChoice(
            "tcg",
            f"{dev_kvm} opens but {cpuinfo} shows neither vmx nor svm: this host is itself a VM "
            "without nested virtualisation (a paravirtual KVM cannot run normal guests)",
        )
    return AccelChoice("kvm", f"{dev_kvm} works and the CPU has {'/'.join(sorted(flags))}")


def probe_macos() -> AccelChoice:
    try:
        out = subprocess.run(["sysctl", "-n", "kern.hv_support"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as err:
        return AccelChoice("tcg", f"cannot query kern.hv_support: {err}")
    if out.stdout.strip() == "1":
        return AccelChoice("hvf", "kern.hv_support=1 (Hypervisor.framework available)")
    return AccelChoice("tcg", "kern.hv_support is not 1: Hypervisor.framework unavailable")


def probe_windows() -> AccelChoice:
    # WHPX is present when the Windows Hypervisor Platform DLL loads.
    try:
        import ctypes

        ctypes.WinDLL("WinHvPlatform.dll")  # type: ignore[attr-defined]  # exists on Windows only
    except (OSError, AttributeError) as err:
        return AccelChoice("tcg", f"Windows Hypervisor Platform unavailable: {err}")
    return AccelChoice("whpx", "WinHvPlatform.dll loads (Windows Hypervisor Platform enabled)")


_cached: AccelChoice | None = None


def choose_accelerator(log_choice: bool = True) -> AccelChoice:
    """Probe once per process; the accel setting (`DOCKYARD_ACCEL`) forces a choice (logged as such)."""
    global _cached
    if _cached is None:
        from desktop import settings

        current = settings.load()
        system = platform.system()
        if current.accel:
            _cached = AccelChoice(current.accel, f"forced by {current.source('accel')}")
        elif system == "Linux":
            _cached = probe_linux()
        elif system == "Darwin":
            _cached = probe_macos()
        elif system == "Windows":
            _cached = probe_windows()
        else:
            _cached = AccelChoice("tcg", f"no hardware accelerator known for {system}")
        if log_choice:
            log.info("accelerator: %s (%s)", _cached.name.upper(), _cached.reason)
    return _cached
