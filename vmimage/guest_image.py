"""The guest image the machine manager boots, built on demand and cached.

Layout of the cache (default: desktop.paths.image_cache_dir(), i.e. `images` in
Dockyard's data folder, which DOCKYARD_HOME relocates):

    parts/kernel-<package>_<version>/      unpacked Debian kernel package
    parts/vmlinux-<release>                its uncompressed ELF (booted via PVH)
    parts/rootfs-<hash>.img                root filesystem (slow: 25-70 s)
    parts/initrd-base-<hash>.cpio          busybox, boot modules, init (fast)
    parts/code-<hash>.cpio                 runtime + guest_agent (milliseconds)
    <recipe_hash>/{vmlinuz,rootfs.img,initrd.img,image.json}

A final image directory holds hard links to the parts and the initrd made of
the base and code archives concatenated. Every file is built under a temporary
name and renamed, so a crash never leaves a half-built image behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.atomic_file import read_json, write_json_atomic

from . import image_archive, initramfs, rootfs
from .kernel import extract_vmlinux, has_pvh_entry, resolve_kernel_package_cached, unpack_kernel
from .recipe import FORMAT_VERSION, VMIMAGE_DIR, Recipe, hash_files, hash_values

log = logging.getLogger(__name__)

KEEP_IMAGES = 4
PART_MIN_AGE_S = 3600


@dataclass
class GuestImage:
    """Files for a direct kernel boot: `rootfs` is attached read-only as vda."""

    kernel: Path
    initrd: Path
    rootfs: Path
    cmdline: str
    recipe_hash: str


@dataclass(frozen=True)
class PartHashes:
    """Cache keys of the three parts and of the whole image."""

    rootfs: str
    initramfs: str
    code: str
    image: str


def default_cache_dir() -> Path:
    """The image cache of the current Dockyard home (desktop.paths holds every host location)."""
    from desktop.paths import image_cache_dir

    return image_cache_dir()


def part_hashes(recipe: Recipe, kernel_id: str) -> PartHashes:
    """Hashes over what each part is built from (inputs, and the code that builds it)."""
    # recipe.py is left out on purpose: the fields the rootfs uses are hashed
    # one by one, so a change of e.g. the kernel command line costs no rebuild.
    builder = hash_files([VMIMAGE_DIR / "rootfs.py", VMIMAGE_DIR / "kernel.py"], VMIMAGE_DIR)
    rootfs_hash = hash_values(FORMAT_VERSION, kernel_id, recipe.suite, *recipe.sources,
                              *recipe.packages, *recipe.rootfs_module_dirs,
                              *recipe.dpkg_excludes, builder)
    init_files = initramfs.init_sources()
    initramfs_hash = hash_values(
        FORMAT_VERSION, kernel_id, *recipe.boot_modules,
        hash_files(init_files + [VMIMAGE_DIR / "initramfs.py", VMIMAGE_DIR / "cpio.py"], VMIMAGE_DIR.parent),
        hash_files([initramfs.BUSYBOX], initramfs.BUSYBOX.parent))
    code_files = initramfs.code_sources()
    code_hash = hash_values(FORMAT_VERSION, hash_files(code_files, initramfs.PROJECT_DIR) if code_files else "",
                            hash_files([VMIMAGE_DIR / "initramfs.py"], VMIMAGE_DIR))
    assembly = hash_files([VMIMAGE_DIR / "guest_image.py"], VMIMAGE_DIR)
    image_hash = hash_values(rootfs_hash, initramfs_hash, code_hash, recipe.cmdline, assembly)
    return PartHashes(rootfs_hash, initramfs_hash, code_hash, image_hash)


def _build_file(target: Path, build) -> Path:
    """Run build(tmp_path) unless `target` exists, then rename the result into place."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        build(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _prune(cache_dir: Path, keep: str) -> None:
    """Drop the oldest image directories, then the parts no remaining image uses.

    A running machine keeps its files open, and image directories hold hard
    links, so removing names here never pulls a disk from under a guest. The
    image imported last is kept too: it is what hosts that cannot build boot.
    """
    imported = image_archive.imported_record(cache_dir) or {}
    spared = {keep, imported.get("recipe_hash", "")}
    images = sorted((p for p in cache_dir.iterdir() if p.is_dir() and len(p.name) == 16
                     and p.name not in spared), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in images[KEEP_IMAGES - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    used: set[str] = set()
    for description in cache_dir.glob("*/image.json"):
        info = read_json(description, {})
        parts = info.get("parts")
        used.update(str(value) for value in (parts.values() if isinstance(parts, dict) else [parts]))
        used.update(str(info.get(key, "")) for key in ("kernel_package", "kernel_file"))
    used_text = " ".join(used)
    for part in (cache_dir / "parts").iterdir():
        # Young parts may belong to a build still running in another process.
        if part.name.startswith(".") or time.time() - part.stat().st_mtime < PART_MIN_AGE_S:
            continue
        if part.name.startswith(("rootfs-", "initrd-base-", "code-")):
            part_hash = part.name.split("-")[-1].split(".")[0]
        elif part.name.startswith("vmlinux-"):
            part_hash = part.name
        elif part.name.startswith("kernel-"):
            part_hash = part.name[len("kernel-"):].replace("_", "=", 1)
        else:
            continue
        if part_hash not in used_text:
            log.info("removing unused cache part %s", part.name)
            if part.is_dir():
                shutil.rmtree(part, ignore_errors=True)
            else:
                part.unlink(missing_ok=True)


def ensure_image(cache_dir: Path | None = None, force: bool = False,
                 recipe: Recipe | None = None) -> GuestImage:
    """Return the current guest image, building whatever part is missing or outdated.

    `force` rebuilds every part (the kernel download is kept).
    """
    recipe = recipe or Recipe()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    parts = cache_dir / "parts"
    package = resolve_kernel_package_cached(recipe.kernel_meta_package, parts / "kernel-resolution.json")
    hashes = part_hashes(recipe, f"{package.name}={package.version}")
    final = cache_dir / hashes.image
    if force and final.exists():
        shutil.rmtree(final)
    image = GuestImage(kernel=final / "vmlinuz", initrd=final / "initrd.img",
                       rootfs=final / "rootfs.img", cmdline=recipe.cmdline,
                       recipe_hash=hashes.image)
    if (final / "image.json").exists():
        return image

    kernel = unpack_kernel(package, parts)
    rootfs_img = parts / f"rootfs-{hashes.rootfs}.img"
    base = parts / f"initrd-base-{hashes.initramfs}.cpio"
    code = parts / f"code-{hashes.code}.cpio"
    for path in ((rootfs_img, base, code) if force else ()):
        path.unlink(missing_ok=True)

    def build_rootfs(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=parts, prefix=".rootfs-") as work:
            rootfs.build_rootfs(recipe, kernel, Path(work), tmp)

    kernel_file = kernel.vmlinuz
    if has_pvh_entry(kernel):
        kernel_file = _build_file(parts / f"vmlinux-{kernel.release}",
                                  lambda tmp: extract_vmlinux(kernel.vmlinuz, tmp))
    _build_file(rootfs_img, build_rootfs)
    _build_file(base, lambda tmp: initramfs.build_base_initramfs(kernel, list(recipe.boot_modules), tmp))
    _build_file(code, initramfs.build_code_archive)

    staging = Path(tempfile.mkdtemp(prefix=f".{hashes.image}.", dir=cache_dir))
    try:
        _link_or_copy(kernel_file, staging / "vmlinuz")
        _link_or_copy(rootfs_img, staging / "rootfs.img")
        with open(staging / "initrd.img", "wb") as out:
            for part in (base, code):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        description = asdict(image) | {"kernel_package": f"{package.name}={package.version}",
                                       "kernel_file": kernel_file.name, "parts": asdict(hashes)}
        write_json_atomic(staging / "image.json",
                          {k: v if isinstance(v, dict) else str(v) for k, v in description.items()})
        try:
            staging.rename(final)
        except OSError:
            # Another build of the same recipe finished first: keep its files,
            # which a machine may already be using.
            if not (final / "image.json").exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _prune(cache_dir, hashes.image)
    log.info("guest image %s ready in %s", hashes.image, final)
    return image
