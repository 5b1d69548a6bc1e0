"""The direct-QEMU command line generated from a LaunchSpec (the boot itself is a vm test)."""

from __future__ import annotations

from pathlib import Path

from desktop.machine.qemu_backend import qemu_argv
from tests.machine.test_libvirt_xml import make_spec


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_9p(tmp_path):
    spec = make_spec(tmp_path, "9p")
    argv = qemu_argv(spec, "qemu-system-x86_64", tmp_path / "qmp.sock", tmp_path / "qemu.pid")
    assert argv[-1] == "-daemonize"
    assert _pairs(argv, "-machine") == ["q35"]
    assert _pairs(argv, "-append") == [spec.cmdline]
    drives = _pairs(argv, "-drive")
    assert drives[0].startswith(f"file={spec.rootfs},") and "readonly=on" in drives[0] and "format=raw" in drives[0]
    assert drives[1].startswith(f"file={spec.data_disk},") and "format=qcow2" in drives[1]
    assert "user,id=dynet,hostfwd=tcp:127.0.0.1:40222-:22" in _pairs(argv, "-netdev")
    # Boot-time settings: no iPXE ROM on the NIC, no default devices, no VGA.
    assert "virtio-net-pci,netdev=dynet,romfile=" in _pairs(argv, "-device")
    assert {"-nodefaults", "-no-user-config"} <= set(argv) and _pairs(argv, "-vga") == ["none"]
    chardevs = _pairs(argv, "-chardev")
    assert f"socket,id=ready,path={spec.ready_socket},server=on,wait=off" in chardevs
    assert "virtserialport,chardev=ready,name=org.dockyard.guest.0" in _pairs(argv, "-device")
    assert "virtio-rng-pci,rng=rng0" in _pairs(argv, "-device")
    assert f"local,id=fs0,path={tmp_path / 'share'},security_model=passthrough" in _pairs(argv, "-fsdev")
    assert "virtio-9p-pci,fsdev=fs0,mount_tag=dyshare0" in _pairs(argv, "-device")
    assert _pairs(argv, "-qmp") == [f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off",
                                    f"unix:{tmp_path / 'qmp-events.sock'},server=on,wait=off"]
    assert _pairs(argv, "-pidfile") == [str(tmp_path / "qemu.pid")]


def test_minimal_firmware_replaces_seabios_when_given(tmp_path):
    spec = make_spec(tmp_path, "9p")
    assert "-bios" not in qemu_argv(spec, "qemu-system-x86_64", tmp_path / "qmp.sock", tmp_path / "qemu.pid")
    spec.firmware = Path("/usr/share/qemu/qboot.rom")
    argv = qemu_argv(spec, "qemu-system-x86_64", tmp_path / "qmp.sock", tmp_path / "qemu.pid")
    assert _pairs(argv, "-bios") == ["/usr/share/qemu/qboot.rom"]


def test_argv_virtiofs(tmp_path):
    spec = make_spec(tmp_path, "virtiofs")
    argv = qemu_argv(spec, "qemu-system-x86_64", Path("q"), Path("p"), daemonize=False)
    assert "-daemonize" not in argv
    assert "memory-backend-memfd,id=mem,size=1536M,share=on" in _pairs(argv, "-object")
    assert _pairs(argv, "-machine") == ["q35,memory-backend=mem"]
    assert f"socket,id=vfs0,path={tmp_path / 'virtiofs-dyshare0.sock'}" in _pairs(argv, "-chardev")
    assert "vhost-user-fs-pci,chardev=vfs0,tag=dyshare0" in _pairs(argv, "-device")
    assert "-fsdev" not in argv


def test_commas_in_paths_are_escaped(tmp_path):
    from desktop.machine.qemu_backend import _fuse_opt

    spec = make_spec(tmp_path, "9p")
    odd = tmp_path / "a,b"
    odd.mkdir()
    spec.shares[0].host_path = odd
    spec.data_disk = tmp_path / "d,isk.qcow2"
    argv = qemu_argv(spec, "qemu-system-x86_64", tmp_path / "qmp.sock", tmp_path / "qemu.pid")
    assert f"local,id=fs0,path={tmp_path}/a,,b,security_model=passthrough" in _pairs(argv, "-fsdev")
    assert _pairs(argv, "-drive")[1].startswith(f"file={tmp_path}/d,,isk.qcow2,if=none")
    assert _fuse_opt("/x,y\\z") == "/x\\,y\\\\z"


def test_tcg_translation_cache_is_bounded_and_freed_pages_go_back_to_the_host(tmp_path):
    from desktop.machine.backend import TCG_TB_CACHE_MIB

    spec = make_spec(tmp_path, "9p")
    argv = qemu_argv(spec, "qemu-system-x86_64", tmp_path / "qmp.sock", tmp_path / "qemu.pid")
    assert _pairs(argv, "-accel") == [f"tcg,tb-size={TCG_TB_CACHE_MIB}"]
    assert "virtio-balloon-pci,free-page-reporting=on" in _pairs(argv, "-device")
    assert "discard=unmap" in _pairs(argv, "-drive")[1].split(",")
    # Hardware accelerators have no translation cache to bound.
    for accel in ("kvm", "hvf", "whpx"):
        spec.accel = accel
        assert _pairs(qemu_argv(spec, "q", tmp_path / "s", tmp_path / "p"), "-accel") == [accel]
