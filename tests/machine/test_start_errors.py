"""`start` failures with the real QEMU but no guest: port races and unbootable kernels.

The "kernel" is a file of zeros, so QEMU stops right after parsing its
options; no VM ever boots here.
"""

from __future__ import annotations

import json
import socket

import pytest

from desktop.machine import manager as manager_mod
from desktop.machine.config import MachineConfig
from desktop.machine.manager import MachineManager
from desktop.machine.ready_channel import GuestNotReady
from runtime.errors import RuntimeFailure


@pytest.fixture
def bogus_image(tmp_path, monkeypatch):
    img = tmp_path / "image"
    img.mkdir()
    for part in ("vmlinuz", "initrd.img", "rootfs.img"):
        (img / part).write_bytes(b"\0" * 4096)
    (img / "image.json").write_text(json.dumps({
        "kernel": str(img / "vmlinuz"), "initrd": str(img / "initrd.img"), "rootfs": str(img / "rootfs.img"),
        "cmdline": "console=ttyS0", "recipe_hash": "bogus"}))
    monkeypatch.setenv("DOCKYARD_GUEST_IMAGE", str(img))
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    return img


def test_taken_ssh_port_is_retried_once_then_the_real_error_surfaces(bogus_image, monkeypatch):
    m = MachineManager("ports")
    m.init(MachineConfig(name="ports", backend="qemu", memory_mib=256, disk_mib=1024))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ports = [busy.getsockname()[1]]

    def next_port() -> int:
        if ports:
            return ports.pop()
        ports_used.append(real_free_port())
        return ports_used[-1]

    ports_used: list[int] = []
    real_free_port = manager_mod.free_local_port
    monkeypatch.setattr(manager_mod, "free_local_port", next_port)
    with pytest.raises(RuntimeFailure) as err:
        m.start(timeout=5)
    busy.close()
    # The second attempt got past the port and failed on the zero-filled kernel instead.
    assert len(ports_used) == 1
    assert "forwarding" not in str(err.value)
    assert str(err.value).startswith("QEMU failed to start:")
    assert m.backend().state().value == "stopped"
    m.remove()


@pytest.mark.vm
def test_a_stalled_boot_is_killed_and_retried_once(guest_image, tmp_path, monkeypatch, caplog):
    """A real kernel that panics without `panic=` hangs, as a stalled boot does: no ready ever comes.

    The first boot is given up after the stall limit and the machine is booted
    again; the second boot stalls too, so the error surfaces, naming the panic.
    """
    img = tmp_path / "image"
    img.mkdir()
    for part in ("initrd.img", "rootfs.img"):
        (img / part).write_bytes(b"\0" * 4096)
    (img / "image.json").write_text(json.dumps({
        "kernel": str(guest_image.kernel), "initrd": str(img / "initrd.img"), "rootfs": str(img / "rootfs.img"),
        "cmdline": "console=ttyS0", "recipe_hash": "stalls"}))
    monkeypatch.setenv("DOCKYARD_GUEST_IMAGE", str(img))
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKYARD_BOOT_STALL", "6")
    m = MachineManager("stall")
    m.init(MachineConfig(name="stall", backend="qemu", memory_mib=256, disk_mib=1024))
    caplog.set_level("WARNING", logger=manager_mod.__name__)
    try:
        with pytest.raises(GuestNotReady) as err:
            m.start(timeout=14)
        retries = [r for r in caplog.records if "booting it again" in r.getMessage()]
        assert len(retries) == 1, caplog.text
        assert "did not report ready within 6 s" in retries[0].getMessage()
        assert "panic" in str(err.value).lower(), err.value   # the console hint of the second boot
        assert m.backend().state().value == "stopped"
    finally:
        m.remove()
