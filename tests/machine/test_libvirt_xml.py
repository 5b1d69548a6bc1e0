"""Domain XML from the typed config, checked by libvirt's schema and its test:///default driver."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from desktop.machine.backend import LaunchSpec, ShareMount, VmState
from desktop.machine.libvirt_backend import QEMU_NS, LibvirtBackend, domain_xml, owner_from_xml, ssh_port_from_xml


def make_spec(tmp_path: Path, sharefs: str = "9p", accel: str = "tcg", uid: int | None = 0) -> LaunchSpec:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    return LaunchSpec(
        name="t1", accel=accel, cpus=2, memory_mib=1536,
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd", rootfs=tmp_path / "rootfs.img",
        data_disk=tmp_path / "data.qcow2", cmdline="console=ttyS0 quiet dockyard.sharefs=9p",
        ssh_port=40222, ready_socket=tmp_path / "ready.sock", console_log=tmp_path / "console.log",
        run_dir=tmp_path, sharefs=sharefs, shares=[ShareMount("dyshare0", share)],
        run_as_uid=uid, run_as_gid=uid,
    )


def validate(xml: str, tmp_path: Path) -> None:
    if not shutil.which("xmllint"):
        pytest.fail("virt-xml-validate needs xmllint: apt-get install libxml2-utils")
    f = tmp_path / "domain.xml"
    f.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(f), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


@pytest.mark.parametrize("sharefs", ["9p", "virtiofs", "none"])
def test_xml_validates_against_libvirt_schema(tmp_path, sharefs):
    validate(domain_xml(make_spec(tmp_path, sharefs)), tmp_path)


def test_xml_content(tmp_path):
    spec = make_spec(tmp_path)
    root = ET.fromstring(domain_xml(spec))
    assert root.get("type") == "qemu"  # TCG
    assert root.findtext("name") == "dockyard-t1"
    assert root.find("os/kernel").text == str(spec.kernel)
    assert root.find("os/initrd").text == str(spec.initrd)
    assert root.find("os/cmdline").text == spec.cmdline
    disks = root.findall("devices/disk")
    assert [(d.find("target").get("dev"), d.find("driver").get("type")) for d in disks] == [
        ("vda", "raw"), ("vdb", "qcow2")]
    assert disks[0].find("readonly") is not None and disks[1].find("readonly") is None
    assert disks[1].find("source").get("file") == str(spec.data_disk)
    chan = root.find("devices/channel")
    assert chan.get("type") == "unix"
    assert chan.find("source").attrib == {"mode": "bind", "path": str(spec.ready_socket)}
    assert chan.find("target").attrib == {"type": "virtio", "name": "org.dockyard.guest.0"}
    assert root.find("devices/rng/backend").text == "/dev/urandom"
    assert root.find("devices/serial/source").get("path") == str(spec.console_log)
    fs = root.find("devices/filesystem")
    assert fs.get("accessmode") == "passthrough"
    assert fs.find("source").get("dir") == str(tmp_path / "share")
    assert fs.find("target").get("dir") == "dyshare0"
    assert root.find("memoryBacking") is None  # only virtiofs needs shared memory
    label = root.find("seclabel")
    assert label.attrib == {"type": "static", "model": "dac", "relabel": "no"}
    assert label.findtext("label") == "+0:+0"
    args = [a.get("value") for a in root.find(f"{{{QEMU_NS}}}commandline")]
    assert args == ["-netdev", "user,id=dynet,hostfwd=tcp:127.0.0.1:40222-:22",
                    "-device", "virtio-net-pci,netdev=dynet,bus=pcie.0,addr=0x10,romfile="]
    assert ssh_port_from_xml(domain_xml(spec)) == 40222


def test_no_firmware_work_for_devices_we_do_not_boot_from(tmp_path):
    """Boot-time settings: no NIC option ROM, no USB controller, no video."""
    root = ET.fromstring(domain_xml(make_spec(tmp_path)))
    args = [a.get("value") for a in root.find(f"{{{QEMU_NS}}}commandline")]
    assert args[args.index("-device") + 1].endswith(",romfile=")
    assert root.find("devices/controller[@type='usb']").get("model") == "none"
    assert root.find("devices/video/model").get("type") == "none"


def test_tcg_translation_cache_is_bounded_and_freed_pages_go_back_to_the_host(tmp_path):
    from desktop.machine.backend import TCG_TB_CACHE_MIB

    xml = domain_xml(make_spec(tmp_path))
    validate(xml, tmp_path)
    root = ET.fromstring(xml)
    cache = root.find("features/tcg/tb-cache")
    assert (cache.text, cache.get("unit")) == (str(TCG_TB_CACHE_MIB), "MiB")
    balloon = root.find("devices/memballoon")
    assert (balloon.get("model"), balloon.get("freePageReporting")) == ("virtio", "on")
    assert balloon.find("stats") is None   # no polling timer
    data = next(d for d in root.findall("devices/disk") if d.find("target").get("dev") == "vdb")
    assert data.find("driver").get("discard") == "unmap"
    kvm = ET.fromstring(domain_xml(make_spec(tmp_path, accel="kvm")))
    assert kvm.find("features/tcg") is None


def test_minimal_firmware_is_the_domain_loader_when_given(tmp_path):
    spec = make_spec(tmp_path)
    assert ET.fromstring(domain_xml(spec)).find("os/loader") is None  # QEMU's default SeaBIOS
    spec.firmware = Path("/usr/share/qemu/qboot.rom")
    xml = domain_xml(spec)
    validate(xml, tmp_path)
    loader = ET.fromstring(xml).find("os/loader")
    assert loader.get("type") == "rom" and loader.text == "/usr/share/qemu/qboot.rom"


def test_virtiofs_uses_shared_memfd_and_virtiofsd(tmp_path):
    root = ET.fromstring(domain_xml(make_spec(tmp_path, "virtiofs")))
    assert root.find("memoryBacking/source").get("type") == "memfd"
    assert root.find("memoryBacking/access").get("mode") == "shared"
    fs = root.find("devices/filesystem")
    assert fs.find("driver").get("type") == "virtiofs"
    assert fs.find("binary").get("path") == "/usr/lib/qemu/virtiofsd"


def test_unprivileged_qemu_squashes_9p_and_kvm_passes_cpu(tmp_path):
    root = ET.fromstring(domain_xml(make_spec(tmp_path, "9p", accel="kvm", uid=1000)))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("devices/filesystem").get("accessmode") == "squash"
    assert root.findtext("seclabel/label") == "+1000:+1000"


def test_no_share_devices_without_sharefs(tmp_path):
    root = ET.fromstring(domain_xml(make_spec(tmp_path, "none")))
    assert root.find("devices/filesystem") is None


def test_lifecycle_on_libvirt_test_driver(tmp_path):
    """define/start/state/force_stop/remove through libvirt's in-memory test driver (boots nothing)."""
    spec = make_spec(tmp_path)
    backend = LibvirtBackend(spec.domain_name, tmp_path, spec.console_log, uri="test:///default")
    assert backend.state() is VmState.UNDEFINED
    backend.define(spec)
    assert backend.state() is VmState.STOPPED
    uuid = ET.fromstring(backend.xml()).findtext("uuid")
    spec.cmdline += " dockyard.time=2"
    backend.define(spec)  # every start redefines (the command line carries the time)
    assert ET.fromstring(backend.xml()).findtext("uuid") == uuid
    assert ET.fromstring(backend.xml()).findtext("os/cmdline").endswith("dockyard.time=2")
    xml = backend.xml()
    root = ET.fromstring(xml)
    assert [d.find("target").get("dev") for d in root.findall("devices/disk")] == ["vda", "vdb"]
    assert root.find("devices/channel/target").get("name") == "org.dockyard.guest.0"
    assert root.find("devices/filesystem/target").get("dir") == "dyshare0"
    backend.start()
    assert backend.state() is VmState.RUNNING
    with pytest.raises(Exception, match="running"):
        backend.remove()
    backend.force_stop()
    backend.force_stop()  # idempotent
    assert backend.state() is VmState.STOPPED
    backend.remove()
    assert backend.state() is VmState.UNDEFINED
    backend.close()


def test_owner_metadata_validates_and_reads_back(tmp_path):
    spec = make_spec(tmp_path)
    assert owner_from_xml(domain_xml(spec)) is None  # no owner given: none recorded
    spec.owner_home, spec.domain = "/home/u/dockyard home", "dockyard-t1-0123abcd"
    xml = domain_xml(spec)
    validate(xml, tmp_path)
    assert ET.fromstring(xml).findtext("name") == "dockyard-t1-0123abcd"
    assert owner_from_xml(xml) == "/home/u/dockyard home"
