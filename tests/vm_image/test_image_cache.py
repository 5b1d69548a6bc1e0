"""The image cache: which input changes rebuild which part, and that a cached image is reused."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.guest_vm import IMAGE_CACHE
from vmimage import guest_image as guest_image_module
from vmimage import initramfs
from vmimage.cpio import read_newc
from vmimage.recipe import Recipe


@pytest.fixture
def fake_project(tmp_path, monkeypatch):
    """A stand-in project tree for the code packages, so a test can edit 'the code'."""
    for name in initramfs.CODE_PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'"""{name}"""\n')
    monkeypatch.setattr(initramfs, "PROJECT_DIR", tmp_path)
    return tmp_path


def test_a_code_change_only_changes_the_code_part(fake_project):
    before = guest_image_module.part_hashes(Recipe(), "linux-image-x=1")
    (fake_project / "runtime" / "engine.py").write_text("x = 2\n")
    after = guest_image_module.part_hashes(Recipe(), "linux-image-x=1")
    assert after.code != before.code and after.image != before.image
    assert (after.rootfs, after.initramfs) == (before.rootfs, before.initramfs)


def test_package_list_and_kernel_changes_rebuild_the_rootfs(fake_project):
    base = guest_image_module.part_hashes(Recipe(), "linux-image-x=1")
    more = guest_image_module.part_hashes(
        dataclasses.replace(Recipe(), packages=Recipe().packages + ("strace",)), "linux-image-x=1")
    newer = guest_image_module.part_hashes(Recipe(), "linux-image-x=2")
    assert more.rootfs != base.rootfs and more.initramfs == base.initramfs
    assert newer.rootfs != base.rootfs and newer.initramfs != base.initramfs


def test_cmdline_change_rebuilds_nothing_but_the_image_entry(fake_project):
    base = guest_image_module.part_hashes(Recipe(), "k=1")
    other = guest_image_module.part_hashes(dataclasses.replace(Recipe(), cmdline="console=hvc0"), "k=1")
    assert other.image != base.image
    assert (other.rootfs, other.initramfs, other.code) == (base.rootfs, base.initramfs, base.code)


def test_code_archive_holds_sources_and_precompiled_bytecode(fake_project, tmp_path):
    out = tmp_path / "code.cpio"
    initramfs.build_code_archive(out)
    names = set(read_newc(out.read_bytes()))
    assert "dockyard-opt/lib/runtime/__init__.py" in names
    assert "dockyard-opt/lib/guest_agent/__pycache__/__init__.cpython-311.pyc" in names


def test_early_sh_is_rendered_from_the_shared_layout():
    from vmimage.guest_init import layout

    text = initramfs.render_early_sh()
    assert "@" not in text.replace("$@", "")
    assert " ".join(layout.AGENT_ARGV) in text
    assert layout.HOST_KEY in text


@pytest.mark.vm
def test_second_ensure_image_reuses_every_file(guest_image):
    """Asking twice builds at most once (the tree may have changed since the session fixture)."""
    first = guest_image_module.ensure_image(IMAGE_CACHE)
    stats = {p: p.stat() for p in (first.kernel, first.initrd, first.rootfs)}
    again = guest_image_module.ensure_image(IMAGE_CACHE)
    assert again == first
    for path, st in stats.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_kernel_resolution_is_remembered_until_apt_lists_change(tmp_path, monkeypatch):
    from vmimage import kernel

    calls = []

    def resolve(meta):
        calls.append(meta)
        return kernel.KernelPackage(name="linux-image-9.9.9-amd64", version=f"9.9.{len(calls)}")

    monkeypatch.setattr(kernel, "resolve_kernel_package", resolve)
    monkeypatch.setattr(kernel, "_apt_state", lambda: "lists-v1")
    cache = tmp_path / "resolution.json"
    first = kernel.resolve_kernel_package_cached("linux-image-amd64", cache)
    assert kernel.resolve_kernel_package_cached("linux-image-amd64", cache) == first
    assert len(calls) == 1
    monkeypatch.setattr(kernel, "_apt_state", lambda: "lists-v2")  # apt-get update ran
    assert kernel.resolve_kernel_package_cached("linux-image-amd64", cache).version == "9.9.2"
