"""The shared base root filesystem: Debian minbase by mmdebstrap, as a raw ext4 image.

No systemd or udev (our init does their job); docs, man pages and locales are
never unpacked. Kernel modules the guest may load later (shares, container
networking) are copied in and indexed with the rootfs's own depmod. The image
has no journal: it is attached read-only and never written.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from runtime.errors import RuntimeFailure

from .kernel import UnpackedKernel, copy_module_subset
from .recipe import Recipe

log = logging.getLogger(__name__)

# Files that must not be shared by every machine using the image.
PER_MACHINE_FILES = ("etc/ssh/ssh_host_*", "etc/machine-id", "var/lib/dbus/machine-id",
                     # Written by our init files; a symlink here would redirect the copy.
                     "etc/resolv.conf", "etc/hostname", "etc/hosts")
SLACK_BYTES = 64 << 20


def _run(cmd: list[str]) -> None:
    log.info("running %s", " ".join(cmd[:3]))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise RuntimeFailure(f"{cmd[0]} is not installed (apt-get install {cmd[0]})") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise RuntimeFailure(f"{cmd[0]} failed ({done.returncode}):\n" + "\n".join(tail))


def bootstrap(recipe: Recipe, target: Path) -> None:
    """mmdebstrap the package list into the directory `target` (must not exist)."""
    if os.geteuid() != 0:
        raise RuntimeFailure("building the guest rootfs needs root (mmdebstrap, chroot depmod)")
    cmd = ["mmdebstrap", "--mode=root", "--variant=minbase",
           f"--include={','.join(recipe.packages)}",
           "--aptopt=Apt::Install-Recommends \"false\""]
    cmd += [f"--dpkgopt=path-exclude={pattern}" for pattern in recipe.dpkg_excludes]
    cmd += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", recipe.suite, str(target),
            *recipe.sources]
    started = time.monotonic()
    _run(cmd)
    log.info("mmdebstrap took %.1fs", time.monotonic() - started)


def customise(target: Path, kernel: UnpackedKernel, recipe: Recipe) -> None:
    """Add kernel modules, drop per-machine files, point resolv.conf at our static one."""
    copy_module_subset(kernel, target / "usr/lib/modules", list(recipe.rootfs_module_dirs))
    _run(["chroot", str(target), "depmod", kernel.release])
    for pattern in PER_MACHINE_FILES:
        for path in target.glob(pattern):
            if path.is_symlink() or path.exists():
                path.unlink()
    for cache in ("var/cache/apt", "var/lib/apt/lists"):
        for path in (target / cache).glob("*"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    # Mount points our init uses; the image itself is read-only at run time.
    for directory in ("var/lib/dockyard", "etc/dockyard", "opt/dockyard"):
        (target / directory).mkdir(parents=True, exist_ok=True)


def tree_size(target: Path) -> int:
    """Bytes used by the files under `target` (apparent sizes, block-rounded)."""
    total = 0
    for root, dirs, files in os.walk(target):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            total += (st.st_size + 4095) // 4096 * 4096
    return total


def make_ext4(source: Path, image: Path) -> None:
    """A raw ext4 image holding `source`, sized to fit with some slack."""
    size = int(tree_size(source) * 1.15) + SLACK_BYTES
    _run(["mkfs.ext4", "-q", "-F", "-L", "dockyard-root", "-O", "^has_journal", "-m", "0",
          "-d", str(source), str(image), f"{size // 1024}k"])


def build_rootfs(recipe: Recipe, kernel: UnpackedKernel, workdir: Path, image: Path) -> None:
    """Full build: bootstrap into workdir/root, customise, write `image`."""
    root = workdir / "root"
    bootstrap(recipe, root)
    customise(root, kernel, recipe)
    make_ext4(root, image)
    shutil.rmtree(root)
