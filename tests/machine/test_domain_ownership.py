"""libvirt domains per Dockyard home: two homes' `default` machines never share or touch one domain.

libvirt's test:///default driver is one in-memory hypervisor for the whole
process, as qemu:///system is one for the whole host: both homes' machines
are defined in it side by side (nothing boots).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from desktop.machine.backend import VmState
from desktop.machine.config import MachineConfig
from desktop.machine.libvirt_backend import ForeignDomain, LibvirtBackend, domain_xml, owner_from_xml
from desktop.machine.manager import MachineManager, PinnedImage
from runtime.errors import Conflict

URI = "test:///default"


def make_machine(home: Path, monkeypatch) -> MachineManager:
    """Machine `default` in DOCKYARD_HOME=`home` (its paths are fixed when it is made)."""
    monkeypatch.setenv("DOCKYARD_HOME", str(home))
    machine = MachineManager("default")
    machine.init(MachineConfig(name="default", backend="libvirt", libvirt_uri=URI, memory_mib=256,
                               disk_mib=1024))
    return machine


def define_and_start(machine: MachineManager, image: PinnedImage, port: int) -> LibvirtBackend:
    backend = machine.backend()
    assert isinstance(backend, LibvirtBackend)
    backend.define(machine.launch_spec(machine.config(), image, "tcg", port, backend))
    backend.start()
    return backend


@pytest.fixture
def image(tmp_path) -> PinnedImage:
    parts = [tmp_path / name for name in ("vmlinuz", "initrd.img", "rootfs.img")]
    for part in parts:
        part.write_bytes(b"")
    return PinnedImage(*parts, cmdline="console=ttyS0", recipe_hash="test")


@pytest.fixture
def cleanup():
    backends: list[LibvirtBackend] = []
    yield backends
    for backend in backends:
        dom = backend.connection().lookupByName(backend.domain_name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        backend.close()


def test_two_homes_with_a_machine_named_default_each_have_their_own_domain(tmp_path, monkeypatch, image,
                                                                             cleanup):
    a = make_machine(tmp_path / "home-a", monkeypatch)
    b = make_machine(tmp_path / "home-b", monkeypatch)
    assert a.domain_name != b.domain_name
    assert a.domain_name.startswith("dockyard-default-") and b.domain_name.startswith("dockyard-default-")

    backend_a = define_and_start(a, image, 40001)
    cleanup.append(backend_a)
    xml_a = backend_a.xml()
    assert owner_from_xml(xml_a) == str((tmp_path / "home-a").resolve())
    # B's machine is not defined yet: it must not see A's running VM as its own.
    assert b.backend().state() is VmState.UNDEFINED

    backend_b = define_and_start(b, image, 40002)
    cleanup.append(backend_b)
    assert backend_b.state() is VmState.RUNNING
    assert owner_from_xml(backend_b.xml()) == str((tmp_path / "home-b").resolve())
    backend_b.force_stop()
    backend_b.remove()
    cleanup.remove(backend_b)
    # Starting, stopping and removing B's machine left A's domain as it was.
    assert backend_a.state() is VmState.RUNNING
    assert backend_a.xml() == xml_a


def test_a_domain_owned_by_another_home_is_refused_by_name(tmp_path, monkeypatch, image, cleanup):
    a = make_machine(tmp_path / "home-a", monkeypatch)
    backend_a = define_and_start(a, image, 40003)
    cleanup.append(backend_a)
    xml_a = backend_a.xml()
    home_b = str((tmp_path / "home-b").resolve())
    # Another home reaching the same domain name (an older Dockyard's dockyard-<name>, or a copied home).
    intruder = LibvirtBackend(a.domain_name, tmp_path / "run-b", tmp_path / "console-b.log", uri=URI,
                              owner_home=home_b)
    spec = a.launch_spec(a.config(), image, "tcg", 40004, backend_a)
    for action in (intruder.state, intruder.start, intruder.stop, intruder.force_stop, intruder.remove,
                   lambda: intruder.define(spec)):
        with pytest.raises(ForeignDomain) as err:
            action()
        assert str(err.value) == (
            f"libvirt domain {a.domain_name} at {URI} belongs to the Dockyard home "
            f"{(tmp_path / 'home-a').resolve()}, not to this one ({home_b}): Dockyard will not drive it")
    intruder.close()
    assert backend_a.state() is VmState.RUNNING
    assert backend_a.xml() == xml_a


def test_a_domain_without_our_metadata_is_not_driven(tmp_path, monkeypatch, image, cleanup):
    a = make_machine(tmp_path / "home-a", monkeypatch)
    backend = a.backend()
    assert isinstance(backend, LibvirtBackend)
    spec = a.launch_spec(a.config(), image, "tcg", 40005, backend)
    spec.owner_home = ""  # defined by hand or by a Dockyard that recorded no owner
    backend.connection().defineXML(domain_xml(spec))
    cleanup.append(backend)
    assert ET.fromstring(backend.connection().lookupByName(a.domain_name).XMLDesc(0)).find("metadata") is None
    with pytest.raises(ForeignDomain, match="belongs to no Dockyard home"):
        backend.start()


def test_the_domain_an_older_dockyard_defined_for_this_machine_is_retired(tmp_path, monkeypatch, image):
    """Before names carried the home's tag a machine's domain was dockyard-<name>, without metadata:
    recognised by its data disk, it is refused while it runs and undefined once stopped."""
    a = make_machine(tmp_path / "home-a", monkeypatch)
    backend = a.backend()
    assert isinstance(backend, LibvirtBackend)
    legacy = a.launch_spec(a.config(), image, "tcg", 40006, backend)
    legacy.domain, legacy.owner_home = "dockyard-default", ""
    conn = backend.connection()
    conn.defineXML(domain_xml(legacy)).create()
    stranger = a.launch_spec(a.config(), image, "tcg", 40007, backend)
    stranger.domain, stranger.owner_home, stranger.data_disk = "dockyard-other", "", tmp_path / "other.qcow2"
    conn.defineXML(domain_xml(stranger))
    try:
        with pytest.raises(Conflict, match="still runs as libvirt domain dockyard-default, defined by an older"):
            a.remove()
        conn.lookupByName("dockyard-default").destroy()
        backend.retire_legacy("dockyard-other", a.data_disk)   # another machine's disk: left alone
        a.remove()
        assert "dockyard-default" not in conn.listDefinedDomains()
        assert "dockyard-other" in conn.listDefinedDomains()
    finally:
        for name in ("dockyard-default", "dockyard-other"):
            if name in conn.listDefinedDomains():
                conn.lookupByName(name).undefine()
        backend.close()
