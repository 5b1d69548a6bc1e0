"""The base initramfs (busybox, boot modules, our init) and the code archive.

Both are uncompressed newc archives: the kernel unpacks plain cpio faster than
it decompresses gzip under TCG, and the files are small. The code archive holds
`runtime` and `guest_agent` with precompiled .pyc (the guest's python3 is the
same 3.11 as the host's Debian one), so imports in the guest skip compilation.
"""

from __future__ import annotations

import compileall
import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from .cpio import CpioWriter
from .kernel import UnpackedKernel, modules_in_load_order
from .recipe import PROJECT_DIR, VMIMAGE_DIR

log = logging.getLogger(__name__)

GUEST_INIT_DIR = VMIMAGE_DIR / "guest_init"
BUSYBOX = Path("/bin/busybox")
# Applets stage1.sh calls by name.
BUSYBOX_APPLETS = ("sh", "mount", "insmod", "mkdir", "cp", "cat", "echo", "ip", "usleep",
                   "switch_root", "umount")
CODE_PACKAGES = ("runtime", "guest_agent")
GUEST_PYTHON = (3, 11)

# Files copied over the root by stage 1: (source under guest_init/, target, mode).
OVERLAY_FILES = (
    ("files/sshd_config", "etc/dockyard/sshd_config", 0o644),
    ("files/poweroff", "usr/local/sbin/poweroff", 0o755),
    ("files/poweroff", "usr/local/sbin/halt", 0o755),
    ("files/reboot", "usr/local/sbin/reboot", 0o755),
    ("files/hostname", "etc/hostname", 0o644),
    ("files/hosts", "etc/hosts", 0o644),
    ("files/resolv.conf", "etc/resolv.conf", 0o644),
)


def render_early_sh() -> str:
    """early.sh with the agent and sshd command lines of guest_init.layout filled in."""
    from .guest_init import layout

    text = (GUEST_INIT_DIR / "early.sh").read_text()
    values = {
        "ENGINE_ROOT": layout.ENGINE_ROOT, "CODE_DIR": layout.CODE_DIR,
        "AGENT_CMD": shlex.join(layout.AGENT_ARGV), "AGENT_LOG": layout.AGENT_LOG,
        "SSHD_CMD": shlex.join(layout.SSHD_ARGV), "SSHD_LOG": layout.SSHD_LOG,
        "HOST_KEY": layout.HOST_KEY, "INIT_NICE": str(layout.INIT_NICE),
    }
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    if "@" in text.replace("$@", ""):
        raise ValueError("early.sh has an unknown @PLACEHOLDER@")
    return text


def init_sources() -> list[Path]:
    """Every file of the guest init (they all end up in the initramfs)."""
    return sorted(p for p in GUEST_INIT_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _compiled_copy(package_dir: Path, dest: Path) -> None:
    """Copy a package's .py files to dest and add unchecked-hash .pyc when versions match."""
    for src in package_dir.rglob("*.py"):
        if "__pycache__" in src.parts:
            continue
        target = dest / src.relative_to(package_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    if sys.version_info[:2] == GUEST_PYTHON:
        # Unchecked: the guest never compares mtimes, so the archive's fixed mtime is fine.
        import py_compile
        compileall.compile_dir(str(dest), quiet=1, workers=1,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def build_base_initramfs(kernel: UnpackedKernel, boot_modules: list[str], out: Path) -> None:
    """Write the base archive: /init, busybox, boot modules in load order, overlay files."""
    modules = modules_in_load_order(kernel.modules_dir, boot_modules)
    with tempfile.TemporaryDirectory() as tmp, open(out, "wb") as f:
        cpio = CpioWriter(f)
        for d in ("dev", "proc", "sys", "etc/dockyard", "lib/modules", "bin"):
            cpio.directory(d)
        cpio.char_device("dev/console", 5, 1)
        cpio.file("init", (GUEST_INIT_DIR / "stage1.sh").read_bytes(), 0o755)
        cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in BUSYBOX_APPLETS:
            cpio.symlink(f"bin/{applet}", "busybox")
        for module in modules:
            cpio.file(f"lib/modules/{module.name}", module.read_bytes())
        cpio.file("etc/dockyard/modules.boot", "".join(f"{m.name}\n" for m in modules).encode())
        package = Path(tmp) / "guest_init"
        _compiled_copy(GUEST_INIT_DIR, package)
        # /dockyard-opt is bind-mounted at /opt/dockyard; /dockyard-root is copied over /.
        cpio.tree(package, "dockyard-opt/init/guest_init")
        cpio.file("dockyard-opt/init/dockyard-init",
                  (GUEST_INIT_DIR / "files" / "dockyard-init").read_bytes(), 0o755)
        cpio.file("dockyard-opt/init/early.sh", render_early_sh().encode(), 0o755)
        for source, target, mode in OVERLAY_FILES:
            cpio.file(f"dockyard-root/{target}", (GUEST_INIT_DIR / source).read_bytes(), mode)
        cpio.close()
    log.info("base initramfs %s: %d modules, %d bytes", out, len(modules), out.stat().st_size)


def code_sources() -> list[Path]:
    """The Python sources of the packages the guest runs."""
    return sorted(p for name in CODE_PACKAGES for p in (PROJECT_DIR / name).rglob("*.py")
                  if "__pycache__" not in p.parts)


def build_code_archive(out: Path) -> None:
    """Write the code archive: runtime/ and guest_agent/ under /opt/dockyard/lib."""
    with tempfile.TemporaryDirectory() as tmp, open(out, "wb") as f:
        cpio = CpioWriter(f)
        for name in CODE_PACKAGES:
            _compiled_copy(PROJECT_DIR / name, Path(tmp) / name)
            cpio.tree(Path(tmp) / name, f"dockyard-opt/lib/{name}")
        cpio.close()
