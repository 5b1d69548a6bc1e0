"""The shared base root filesystem: Debian minbase by mmdebstrap, as a raw ext4 image.

No systemd or udev (our init does their job); docs, man pages and locales are
never unpacked. Kernel modules the guest may load later (shares, container
networking) are copied in and indexed with the rootfs's own depmod. The image
has no journal: it is attached read-only and never written.

Nothing here needs root. mmdebstrap runs in its unshare mode for a normal user
(an unprivileged user namespace with the user's subordinate ids, which needs
`newuidmap` from Debian's uidmap package and a line in /etc/subuid and
/etc/subgid; `useradd` adds those) and in root mode for root. Every step that
needs root inside the tree (module ownership, `chroot depmod`, removing
per-machine files) is a mmdebstrap customize hook, so it runs inside that
namespace. mmdebstrap writes a tarball, whose entries carry the guest's owners;
fakeroot turns it into the ext4 image with those owners without root on the
host. Linux-only, like all of vmimage's building.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import tarfile
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
# Mount points our init uses; the image itself is read-only at run time.
MOUNT_POINTS = ("var/lib/dockyard", "etc/dockyard", "opt/dockyard")
SLACK_BYTES = 64 << 20
BLOCK = 4096


def _run(cmd: list[str]) -> None:
    from .build_host import tool_path

    log.info("running %s", " ".join(cmd[:3]))
    try:
        # mmdebstrap's hooks (chroot, depmod) and mkfs.ext4 live in sbin folders.
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PATH": tool_path()})
    except FileNotFoundError as err:
        raise RuntimeFailure(f"{cmd[0]} is not installed (apt-get install {cmd[0]})") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise RuntimeFailure(f"{cmd[0]} failed ({done.returncode}):\n" + "\n".join(tail))


def unprivileged_blocker(user: str | None = None) -> str | None:
    """Why mmdebstrap's unshare mode cannot run for this (non-root) user, or None if it can."""
    if os.geteuid() == 0:
        return None
    if not shutil.which("newuidmap") or not shutil.which("newgidmap"):
        return "building as a normal user needs newuidmap and newgidmap (apt-get install uidmap)"
    import pwd

    user = user or pwd.getpwuid(os.getuid()).pw_name
    for table in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(table) as f:
                owners = {line.split(":", 1)[0] for line in f if ":" in line}
        except OSError:
            owners = set()
        if user not in owners and str(os.getuid()) not in owners:
            return (f"building as a normal user needs subordinate ids for {user} in {table} "
                    f"(usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user})")
    return None


def customize_script(release: str) -> str:
    """The shell run inside the tree (as its root) once the packages are installed."""
    removals = " ".join(PER_MACHINE_FILES)
    return " && ".join([
        'cd "$1"',
        "chown -R 0:0 usr/lib/modules",
        f"chroot . depmod {shlex.quote(release)}",
        f"rm -f {removals}",
        "rm -rf var/cache/apt/* var/lib/apt/lists/*",
        f"mkdir -p {' '.join(MOUNT_POINTS)}",
    ])


def bootstrap(recipe: Recipe, kernel: UnpackedKernel, workdir: Path, out_tar: Path) -> None:
    """mmdebstrap the package list plus the module subset into the tarball `out_tar`."""
    blocker = unprivileged_blocker()
    if blocker:
        raise RuntimeFailure(blocker)
    modules = workdir / "modules"
    copy_module_subset(kernel, modules, list(recipe.rootfs_module_dirs))
    mode = "root" if os.geteuid() == 0 else "unshare"
    cmd = ["mmdebstrap", f"--mode={mode}", "--format=tar", "--variant=minbase",
           f"--include={','.join(recipe.packages)}",
           "--aptopt=Apt::Install-Recommends \"false\""]
    cmd += [f"--dpkgopt=path-exclude={pattern}" for pattern in recipe.dpkg_excludes]
    cmd += ["--dpkgopt=path-include=/usr/share/doc/*/copyright",
            # sync-in goes through mmdebstrap itself: the namespace's root cannot
            # read the user's private work directory, mmdebstrap's outer half can.
            '--customize-hook=mkdir -p "$1/usr/lib/modules"',
            f"--customize-hook=sync-in {modules} /usr/lib/modules",
            f"--customize-hook={customize_script(kernel.release)}",
            recipe.suite, str(out_tar), *recipe.sources]
    started = time.monotonic()
    _run(cmd)
    log.info("mmdebstrap (%s mode) took %.1fs", mode, time.monotonic() - started)


def tar_tree_size(archive: Path) -> int:
    """Bytes the tarball's entries take once unpacked (block-rounded, like tree_size)."""
    total = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            total += (member.size + BLOCK - 1) // BLOCK * BLOCK if member.isfile() else BLOCK
    return total


def make_ext4(archive: Path, unpack_dir: Path, image: Path) -> None:
    """A raw ext4 image holding the tarball's tree and owners, sized to fit with some slack.

    fakeroot records the owners and device nodes tar cannot set as a normal
    user, and mkfs.ext4 -d, run in the same fakeroot session, reads them back.
    """
    size = int(tar_tree_size(archive) * 1.15) + SLACK_BYTES
    unpack_dir.mkdir()
    script = ('tar --numeric-owner -C "$1" -xpf "$2" && '
              'mkfs.ext4 -q -F -L dockyard-root -O ^has_journal -m 0 -d "$1" "$3" "$4"')
    _run(["fakeroot", "--", "sh", "-c", script, "sh", str(unpack_dir), str(archive), str(image),
          f"{size // 1024}k"])


def remove_tree(path: Path) -> None:
    """rmtree that also empties directories the guest's tree left without write permission."""
    def retry(function, name, _exc) -> None:
        os.chmod(os.path.dirname(name), 0o700)
        function(name)

    if path.exists():
        shutil.rmtree(path, onerror=retry)


def build_rootfs(recipe: Recipe, kernel: UnpackedKernel, workdir: Path, image: Path) -> None:
    """Full build: bootstrap into workdir/root.tar, unpack under fakeroot, write `image`."""
    archive = workdir / "root.tar"
    try:
        bootstrap(recipe, kernel, workdir, archive)
        make_ext4(archive, workdir / "root", image)
    finally:
        remove_tree(workdir / "root")
        remove_tree(workdir / "modules")
        archive.unlink(missing_ok=True)
