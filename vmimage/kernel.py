"""The guest kernel: Debian's generic linux-image package, and its module graph.

The package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`
(never installed on the host). Module dependencies are read from each module's
ELF `.modinfo` section, so the host needs neither kmod nor a generated
modules.dep to pick the initramfs modules in load order.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import RuntimeFailure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelPackage:
    """A resolved Debian kernel package: `name` (linux-image-6.1.0-57-amd64) and `version`."""

    name: str
    version: str


@dataclass(frozen=True)
class UnpackedKernel:
    """A kernel package unpacked in the cache: vmlinuz and its module tree."""

    root: Path
    release: str

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def _run(cmd: list[str], **kwargs) -> str:
    try:
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as err:
        raise RuntimeFailure(f"{cmd[0]} is not installed: {err}") from err
    except subprocess.CalledProcessError as err:
        raise RuntimeFailure(f"{' '.join(cmd)} failed ({err.returncode}): {err.stderr.strip()}") from err
    return done.stdout


def resolve_kernel_package(meta_package: str) -> KernelPackage:
    """Follow the meta package (linux-image-amd64) to the real one, from the local apt lists."""
    name = ""
    for line in _run(["apt-cache", "depends", meta_package]).splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            name = line.split(":", 1)[1].strip()
            break
    if not name:
        raise RuntimeFailure(f"apt-cache knows no kernel behind {meta_package}; run apt-get update")
    version = ""
    for line in _run(["apt-cache", "policy", name]).splitlines():
        line = line.strip()
        if line.startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
    if not version or version == "(none)":
        raise RuntimeFailure(f"no installable version of {name} in the apt lists")
    return KernelPackage(name=name, version=version)


APT_STATE_FILES = ("/var/cache/apt/pkgcache.bin", "/var/lib/apt/lists")


def _apt_state() -> str:
    """Changes whenever `apt-get update` ran (mtimes of apt's cache and lists)."""
    stamps = []
    for path in APT_STATE_FILES:
        try:
            stamps.append(str(os.stat(path).st_mtime_ns))
        except OSError:
            stamps.append("-")
    return ":".join(stamps)


def resolve_kernel_package_cached(meta_package: str, cache_file: Path) -> KernelPackage:
    """resolve_kernel_package, remembered until apt's lists change.

    apt-cache takes 0.3-3 s here, and ensure_image runs on every machine start.
    """
    from runtime.atomic_file import read_json, write_json_atomic

    state = _apt_state()
    cached = read_json(cache_file, {}) or {}
    entry = cached.get(meta_package)
    if entry and entry.get("apt_state") == state:
        return KernelPackage(name=entry["name"], version=entry["version"])
    package = resolve_kernel_package(meta_package)
    cached[meta_package] = {"apt_state": state, "name": package.name, "version": package.version}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache_file, cached)
    return package


def unpack_kernel(package: KernelPackage, parts_dir: Path) -> UnpackedKernel:
    """Download and unpack `package` into parts_dir once (atomic rename of a temp dir)."""
    target = parts_dir / f"kernel-{package.name}_{package.version}"
    if not target.is_dir():
        parts_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parts_dir, prefix=".kernel-") as tmp:
            tmp_path = Path(tmp)
            download = tmp_path / "download"
            download.mkdir()
            # _apt cannot write into root's private temp dirs; that only costs a warning.
            _run(["apt-get", "download", f"{package.name}={package.version}"], cwd=download)
            debs = list(download.glob("*.deb"))
            if len(debs) != 1:
                raise RuntimeFailure(f"apt-get download {package.name} produced {debs}")
            tree = tmp_path / "tree"
            _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
            tree.rename(target)
            log.info("unpacked %s %s", package.name, package.version)
    releases = [p.name for p in (target / "lib" / "modules").iterdir()]
    if len(releases) != 1:
        raise RuntimeFailure(f"{target} holds modules for {releases}, expected one release")
    return UnpackedKernel(root=target, release=releases[0])


def read_modinfo(path: Path) -> dict[str, str]:
    """Key/values of a kernel module's `.modinfo` ELF section (first value per key)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise RuntimeFailure(f"{path} is not a 64-bit ELF kernel module")
    endian = "<" if data[5] == 1 else ">"
    (shoff,) = struct.unpack_from(endian + "Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, = struct.unpack_from(endian + "I", data, base)
        offset, size = struct.unpack_from(endian + "QQ", data, base + 0x18)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for index in range(shnum):
        name_off, offset, size = section(index)
        name = data[str_off + name_off:data.index(b"\0", str_off + name_off)]
        if name == b".modinfo":
            info: dict[str, str] = {}
            for entry in data[offset:offset + size].split(b"\0"):
                key, sep, value = entry.partition(b"=")
                if sep and key.decode() not in info:
                    info[key.decode()] = value.decode(errors="replace")
            return info
    return {}


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name (underscores) -> .ko path, for every module of the release."""
    return {p.name[:-3].replace("-", "_"): p for p in modules_dir.rglob("*.ko")}


def modules_in_load_order(modules_dir: Path, wanted: list[str]) -> list[Path]:
    """`wanted` modules plus their dependencies, each after what it depends on.

    Names not found as modules are assumed built into the kernel and skipped.
    """
    index = module_index(modules_dir)
    ordered: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen or name not in index:
            return
        seen.add(name)
        for dep in filter(None, read_modinfo(index[name]).get("depends", "").split(",")):
            visit(dep)
        ordered.append(index[name])

    for name in wanted:
        visit(name)
    return ordered


def copy_module_subset(kernel: UnpackedKernel, dest_modules_root: Path, subdirs: list[str]) -> None:
    """Copy the listed module files/dirs (relative to the release dir) under dest/<release>/."""
    dest = dest_modules_root / kernel.release
    for rel in subdirs:
        src = kernel.modules_dir / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, dirs_exist_ok=True)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
        else:
            log.warning("kernel %s has no %s", kernel.release, rel)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (kernel.modules_dir / name).is_file():
            shutil.copy2(kernel.modules_dir / name, dest / name)


def has_pvh_entry(kernel: UnpackedKernel) -> bool:
    """True if the kernel was built with a PVH entry point (QEMU can boot its ELF directly)."""
    config = kernel.root / "boot" / f"config-{kernel.release}"
    try:
        return "CONFIG_PVH=y" in config.read_text().splitlines()
    except OSError:
        return False


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Write the uncompressed ELF kernel embedded in a bzImage (xz or gzip payload).

    Booting the ELF through its PVH entry skips the in-guest decompression,
    which takes ~3 s under TCG for Debian's xz-compressed kernel.
    """
    import gzip
    import lzma
    import zlib

    data = vmlinuz.read_bytes()
    for magic, decompressor in ((b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor()),
                                (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))):
        start = data.find(magic)
        while start != -1:
            try:
                elf = decompressor().decompress(data[start:])
            except (lzma.LZMAError, zlib.error, gzip.BadGzipFile):
                elf = b""
            if elf[:4] == b"\x7fELF":
                out.write_bytes(elf)
                return
            start = data.find(magic, start + 1)
    raise RuntimeFailure(f"{vmlinuz}: no xz or gzip compressed ELF kernel inside")
