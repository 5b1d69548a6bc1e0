"""What the guest image is made of, and the hashes that decide when to rebuild it.

The image has three parts with very different build costs, so each has its own
hash and cache entry:

* the root filesystem (mmdebstrap, 25-70 s): Debian packages + kernel modules;
* the base initramfs (well under a second): busybox, boot modules, our init;
* the code archive (milliseconds): the `runtime` and `guest_agent` packages,
  which change with every commit and therefore must never force a rootfs build.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

VMIMAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = VMIMAGE_DIR.parent

# Bump to invalidate every cached part after a change of layout the hashes miss.
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class Recipe:
    """Inputs of an image build; `parts_hash` values key the cache."""

    suite: str = "bookworm"
    sources: tuple[str, ...] = (
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    )
    # openssh-server: the host link; python3: agent and init; iproute2/iptables:
    # container networking; e2fsprogs: formatting the data disk; kmod: module
    # autoloading (veth, bridge, nf_tables) when the runtime asks the kernel;
    # ca-certificates: TLS to registries; procps: `docker top`; sshfs: the
    # host's reverse-SFTP shared-folder fallback (desktop/sftp_share.py); tini:
    # `docker run --init` (its static build, runtime/containers/init.py); libseccomp2:
    # the runtime compiles containers' seccomp filters with it (runtime/containers/security/seccomp_filter.py),
    # named here rather than left to apt's own dependency on it.
    packages: tuple[str, ...] = (
        "openssh-server", "python3", "iproute2", "iptables", "e2fsprogs",
        "kmod", "ca-certificates", "procps", "sshfs", "tini", "libseccomp2",
    )
    # The generic flavour: the cloud one lacks 9p (see docs/REFERENCE).
    kernel_meta_package: str = "linux-image-amd64"
    # Loaded by the initramfs, in dependency order, before the root is mounted.
    # crc32c is asked for through the crypto API when ext4 mounts (metadata_csum),
    # and the initramfs has no modprobe to autoload it; crc32c_intel fails
    # harmlessly on CPUs without SSE4.2. virtio_mmio: QEMU's microvm machine
    # (measured 0.45 s less kernel time than q35 under TCG; it needs
    # tsc_early_khz=<host TSC kHz> on the command line). button+evdev: the ACPI power button
    # (libvirt's shutdown, QMP system_powerdown) as an input device the init reads.
    boot_modules: tuple[str, ...] = (
        "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng",
        "crc32c_generic", "crc32c_intel", "ext4", "overlay", "button", "evdev",
    )
    # Kernel module directories copied into the rootfs for later modprobe
    # (shares, container networking); the rest (sound, gpu, wifi...) is dropped.
    rootfs_module_dirs: tuple[str, ...] = (
        "kernel/fs", "kernel/net", "kernel/lib", "kernel/crypto", "kernel/arch",
        "kernel/block", "kernel/mm", "kernel/virt",
        "kernel/drivers/virtio", "kernel/drivers/block", "kernel/drivers/char",
        "kernel/drivers/net/veth.ko", "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/dummy.ko",
        "kernel/drivers/net/tun.ko", "kernel/drivers/net/macvlan.ko",
        "kernel/drivers/net/ipvlan", "kernel/drivers/net/vxlan",
        "kernel/drivers/net/wireguard", "kernel/drivers/md", "kernel/drivers/vhost",
    )
    # Base kernel arguments; the machine manager appends the dockyard.* ones.
    # Each flag was measured under TCG: crypto self-tests cost ~0.2 s, TSC
    # checks ~0.1 s; quiet because every console byte is a slow trap.
    cmdline: str = (
        "console=ttyS0 quiet loglevel=3 panic=-1 cgroup_no_v1=all "
        "random.trust_cpu=on mitigations=off cryptomgr.notests tsc=reliable "
        "no_timer_check pci=noaer"
    )
    dpkg_excludes: tuple[str, ...] = field(default=(
        "/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*",
        "/usr/share/locale/*", "/usr/share/lintian/*",
    ))


def hash_files(paths: list[Path], root: Path) -> str:
    """sha256 over the relative names and contents of `paths` (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def python_sources(package_dir: Path) -> list[Path]:
    """The .py files of a package tree, without caches."""
    return [p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts]


def hash_values(*values: str) -> str:
    """A short stable hash of strings (the cache key of a part)."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(value.encode() + b"\0")
    return digest.hexdigest()[:16]
