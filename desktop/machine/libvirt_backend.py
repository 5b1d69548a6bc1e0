"""Runs the machine as a libvirt domain (visible in `virsh list`).

The domain XML is generated from a `LaunchSpec`: direct kernel boot, the shared
read-only base rootfs (vda) and the per-machine data disk (vdb), a virtio-serial
ready channel on a unix socket, virtio-rng, host folders as 9p or virtiofs, and
QEMU user-mode networking with an SSH hostfwd. libvirt 9.0 has no user-net port
forwarding of its own (only with passt), so the NIC is passed through
`<qemu:commandline>`.

Ownership of shared folders: under qemu:///system QEMU runs as libvirt-qemu and
9p writes into the user's root-owned folders fail. The domain therefore carries
a static DAC label with the invoking user's uid:gid (and relabel='no', so libvirt
never chowns the shared base image); unprivileged users get qemu:///session,
where QEMU runs as themselves anyway.

Ownership: qemu:///system is one namespace for every Dockyard home on the
host. Domain names carry a tag of the home (Machine.domain_name), and the
domain's <metadata> records the owning home under our own XML namespace; a
backend refuses to drive a domain whose recorded owner is another home.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from desktop.machine.backend import NETDEV_ID, READY_CHANNEL_NAME, Backend, LaunchSpec, SaveRefused, VmState
from desktop.machine.processes import wait_until
from runtime.errors import Conflict, NotFound, RuntimeFailure

log = logging.getLogger(__name__)

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
# Our own metadata namespace in domain XML (libvirt keeps one element per namespace).
METADATA_NS = "https://dockyard.invalid/xmlns/libvirt-domain/1"
SYSTEM_SOCKET = Path("/var/run/libvirt/libvirt-sock")
VIRTLOGD_SOCKET = Path("/var/run/libvirt/virtlogd-sock")
DEFAULT_EMULATOR = "/usr/bin/qemu-system-x86_64"
NIC_PCI_SLOT = "0x10"


def default_uri() -> str:
    """qemu:///system for root (QEMU then runs as root via the DAC label), else qemu:///session."""
    return "qemu:///system" if os.getuid() == 0 else "qemu:///session"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def ninep_accessmode(run_as_uid: int | None) -> str:
    """passthrough keeps guest ownership when QEMU runs as root; otherwise chown would fail, so squash."""
    uid = os.getuid() if run_as_uid is None else run_as_uid
    return "passthrough" if uid == 0 else "squash"


def domain_xml(spec: LaunchSpec, emulator: str = DEFAULT_EMULATOR, uuid: str | None = None) -> str:
    """The libvirt domain definition for `spec`, as a string.

    `uuid` must be the existing domain's when redefining it (libvirt refuses
    a second definition of the same name with another UUID).
    """
    ET.register_namespace("qemu", QEMU_NS)
    ET.register_namespace("dockyard", METADATA_NS)
    dom = ET.Element("domain", {"type": "kvm" if spec.accel == "kvm" else "qemu"})
    _sub(dom, "name", spec.domain_name)
    if uuid:
        _sub(dom, "uuid", uuid)
    _sub(dom, "title", f"Dockyard machine {spec.name}")
    if spec.owner_home:
        meta = _sub(dom, "metadata")
        ET.SubElement(meta, f"{{{METADATA_NS}}}owner", {"home": spec.owner_home, "machine": spec.name})
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.cpus))
    if spec.sharefs == "virtiofs":
        # vhost-user needs guest RAM that virtiofsd can map.
        backing = _sub(dom, "memoryBacking")
        _sub(backing, "source", type="memfd")
        _sub(backing, "access", mode="shared")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if spec.firmware is not None:
        _sub(os_el, "loader", str(spec.firmware), type="rom")
    _sub(os_el, "kernel", str(spec.kernel))
    _sub(os_el, "initrd", str(spec.initrd))
    _sub(os_el, "cmdline", spec.cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    tb_cache = spec.tcg_tb_cache_mib
    if tb_cache is not None:
        # libvirt >= 8.0 turns this into -accel tcg,tb-size=N (domain type qemu only).
        _sub(_sub(features, "tcg"), "tb-cache", str(tb_cache), unit="MiB")
    if spec.accel == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    else:
        _sub(dom, "cpu", mode="maximum")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    # A guest reboot or panic (panic=-1 reboots) ends the VM: the ready channel
    # then closes and `start` fails at once instead of waiting out a boot loop.
    _sub(dom, "on_reboot", "destroy")
    _sub(dom, "on_crash", "destroy")

    dev = _sub(dom, "devices")
    _sub(dev, "emulator", emulator)
    root = _sub(dev, "disk", type="file", device="disk")
    _sub(root, "driver", name="qemu", type="raw")
    _sub(root, "source", file=str(spec.rootfs))
    _sub(root, "target", dev="vda", bus="virtio")
    _sub(root, "readonly")
    # Several machines share the base image read-only.
    _sub(root, "shareable")
    data = _sub(dev, "disk", type="file", device="disk")
    _sub(data, "driver", name="qemu", type="qcow2", discard="unmap")
    _sub(data, "source", file=str(spec.data_disk))
    _sub(data, "target", dev="vdb", bus="virtio")

    for share in spec.shares if spec.sharefs in ("9p", "virtiofs") else []:
        if spec.sharefs == "virtiofs":
            fs = _sub(dev, "filesystem", type="mount", accessmode="passthrough")
            _sub(fs, "driver", type="virtiofs")
            _sub(fs, "binary", path=str(spec.virtiofsd))
        else:
            fs = _sub(dev, "filesystem", type="mount", accessmode=ninep_accessmode(spec.run_as_uid))
            _sub(fs, "driver", type="path")
        _sub(fs, "source", dir=str(share.host_path))
        _sub(fs, "target", dir=share.tag)

    chan = _sub(dev, "channel", type="unix")
    _sub(chan, "source", mode="bind", path=str(spec.ready_socket))
    _sub(chan, "target", type="virtio", name=READY_CHANNEL_NAME)
    serial = _sub(dev, "serial", type="file")
    _sub(serial, "source", path=str(spec.console_log))
    _sub(serial, "target", port="0")
    rng = _sub(dev, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(dev, "controller", type="usb", model="none")
    # Free page reporting gives pages the guest freed back to the host (see
    # qemu_backend). No <stats period>: libvirt then sets no polling timer.
    _sub(dev, "memballoon", model="virtio", freePageReporting="on")
    video = _sub(dev, "video")
    _sub(video, "model", type="none")

    if spec.run_as_uid is not None:
        label = _sub(dom, "seclabel", type="static", model="dac", relabel="no")
        _sub(label, "label", f"+{spec.run_as_uid}:+{spec.run_as_gid or 0}")

    cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    # QEMU creates this NIC before libvirt's own devices, so without an explicit
    # address it takes pcie.0 slot 1, which libvirt reserves for its root ports.
    for arg in (
        "-netdev",
        f"user,id={NETDEV_ID},hostfwd={spec.hostfwd_ssh()}",
        "-device",
        # romfile= (empty): no iPXE option ROM for SeaBIOS to run at every boot
        # (we never boot from the network); measured ~0.2 s of firmware time under TCG.
        f"virtio-net-pci,netdev={NETDEV_ID},bus=pcie.0,addr={NIC_PCI_SLOT},romfile=",
    ):
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", {"value": arg})
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def owner_from_xml(xml: str) -> str | None:
    """The Dockyard home recorded in a domain's metadata, None when it records none."""
    owner = ET.fromstring(xml).find(f"metadata/{{{METADATA_NS}}}owner")
    return owner.get("home") if owner is not None else None


class ForeignDomain(Conflict):
    """The libvirt domain of this name belongs to another Dockyard home (or to no Dockyard home)."""


def ssh_port_from_xml(xml: str) -> int:
    """The SSH hostfwd port recorded in a domain's <qemu:commandline>, 0 if absent."""
    match = re.search(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22", xml)
    return int(match.group(1)) if match else 0


def socket_is_live(path: Path) -> bool:
    """True when something accepts connections on the unix socket at `path`.

    A socket file alone proves nothing: a daemon killed without cleanup (a
    container restart, a machine snapshot) leaves it behind, and then every
    connect fails with "Connection refused".
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def ensure_system_daemons(deadline_s: float = 20.0) -> bool:
    """Start virtlogd and libvirtd when running as root without them (no systemd here).

    Both daemons replace a stale socket file themselves when they bind.
    Returns True when this call started libvirtd.
    """
    if os.getuid() != 0 or not shutil.which("libvirtd") or socket_is_live(SYSTEM_SOCKET):
        return False
    log.info("libvirtd is not running: starting virtlogd and libvirtd")
    if shutil.which("virtlogd") and not socket_is_live(VIRTLOGD_SOCKET):
        subprocess.run(["virtlogd", "-d"], check=False)
    subprocess.run(["libvirtd", "-d"], check=False)
    if not wait_until(lambda: socket_is_live(SYSTEM_SOCKET), deadline_s):
        raise RuntimeFailure(f"libvirtd did not listen on {SYSTEM_SOCKET} within {deadline_s:.0f} s")
    return True


def align_kvm_device_group(dev_kvm: Path = Path("/dev/kvm")) -> bool:
    """Give /dev/kvm the group and mode Debian's udev rules would (root:kvm 0660).

    Without udev the node stays root-only. libvirtd then probes QEMU with KVM
    (as root) but finds /dev/kvm inaccessible to libvirt-qemu, declares its
    capability cache outdated and re-probes QEMU on every API call (8-90 s
    each here). Returns True when it changed the node.
    """
    import grp
    import stat

    if os.getuid() != 0:
        return False
    try:
        st = dev_kvm.stat()
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (FileNotFoundError, KeyError):
        return False
    if st.st_gid == kvm_gid and stat.S_IMODE(st.st_mode) & 0o060 == 0o060:
        return False
    log.info("giving %s group kvm, mode 0660 (as udev would), so libvirt can cache QEMU capabilities", dev_kvm)
    os.chown(dev_kvm, -1, kvm_gid)
    os.chmod(dev_kvm, stat.S_IMODE(st.st_mode) | 0o660)
    return True


# virDomainShutoffReason, as `virsh domstate --reason` names them.
SHUTOFF_REASONS = {0: "unknown", 1: "shutdown", 2: "destroyed", 3: "crashed", 4: "migrated", 5: "saved",
                   6: "failed", 7: "from snapshot", 8: "daemon"}


class LibvirtBackend(Backend):
    """A machine as a libvirt domain (named by Machine.domain_name).

    With `owner_home`, every operation first checks that the domain records
    that home as its owner and refuses (ForeignDomain) otherwise.
    """

    name = "libvirt"

    def __init__(self, domain_name: str, run_dir: Path, console_log: Path, uri: str | None = None,
                 owner_home: str | None = None) -> None:
        super().__init__(domain_name, run_dir, console_log)
        self.uri = uri or default_uri()
        self.owner_home = owner_home
        self._conn: Any = None
        self._ssh_port = 0
        self._checked_uuid: str | None = None

    # -- connection -------------------------------------------------------
    def connection(self) -> Any:
        if self._conn is None:
            try:
                import libvirt
            except ImportError as err:
                raise RuntimeFailure(
                    "the libvirt backend needs the libvirt-python package (or use --backend qemu)"
                ) from err
            if self.uri == "qemu:///system":
                align_kvm_device_group()
                ensure_system_daemons()
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as err:
                raise RuntimeFailure(f"cannot connect to libvirt at {self.uri}: {err.get_error_message()}") from err
        return self._conn

    def _domain(self) -> Any:
        import libvirt

        try:
            dom = self.connection().lookupByName(self.domain_name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"libvirt domain {self.domain_name} is not defined") from err
            raise RuntimeFailure(f"libvirt: {err.get_error_message()}") from err
        if self.owner_home is not None:
            self._check_owner(dom)
        return dom

    def _check_owner(self, dom: Any) -> None:
        """Refuse a domain that records another home (or none) as its owner."""
        uuid = dom.UUIDString()
        if uuid == self._checked_uuid:
            return
        owner = owner_from_xml(dom.XMLDesc(0))
        if owner != self.owner_home:
            whose = f"the Dockyard home {owner}" if owner else "no Dockyard home (it was not defined by Dockyard)"
            raise ForeignDomain(
                f"libvirt domain {self.domain_name} at {self.uri} belongs to {whose}, not to this one "
                f"({self.owner_home}): Dockyard will not drive it")
        self._checked_uuid = uuid

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # -- lifecycle --------------------------------------------------------
    def define(self, spec: LaunchSpec) -> None:
        import libvirt

        if self.state() in (VmState.RUNNING, VmState.PAUSED):
            raise Conflict(f"domain {self.domain_name} is running; stop it before redefining")
        try:
            uuid = self._domain().UUIDString()
        except NotFound:
            uuid = None
        try:
            self.connection().defineXML(domain_xml(spec, uuid=uuid))
        except libvirt.libvirtError as err:
            raise RuntimeFailure(f"libvirt refused the domain definition: {err.get_error_message()}") from err
        self._ssh_port = spec.ssh_port

    def start(self) -> None:
        import libvirt

        try:
            self._domain().create()
        except libvirt.libvirtError as err:
            raise RuntimeFailure(f"cannot start {self.domain_name}: {err.get_error_message()}") from err

    def stop(self) -> None:
        import libvirt

        try:
            self._domain().shutdown()
        except (NotFound, libvirt.libvirtError):
            pass

    def force_stop(self) -> None:
        import libvirt

        try:
            dom = self._domain()
        except NotFound:
            return
        try:
            dom.destroy()
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # already shut off
                raise RuntimeFailure(f"cannot stop {self.domain_name}: {err.get_error_message()}") from err

    def state(self) -> VmState:
        import libvirt

        try:
            dom = self._domain()
        except NotFound:
            return VmState.UNDEFINED
        code = dom.state()[0]
        if code in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
            return VmState.PAUSED
        # VIR_DOMAIN_SHUTDOWN means "being shut down": QEMU is still running and
        # starting the domain again fails until it has exited, so it counts as running.
        return VmState.RUNNING if dom.isActive() else VmState.STOPPED

    def exit_reason(self) -> str | None:
        """libvirt's reason for a shut-off domain ("crashed" when QEMU died under it)."""
        import libvirt

        try:
            code, reason = self._domain().state()
        except (NotFound, libvirt.libvirtError):
            return None
        if code != libvirt.VIR_DOMAIN_SHUTOFF:
            return None
        return f"libvirt: shut off, reason {SHUTOFF_REASONS.get(reason, str(reason))}"

    def remove(self) -> None:
        import libvirt

        try:
            dom = self._domain()
        except NotFound:
            return
        if self.state() in (VmState.RUNNING, VmState.PAUSED):
            raise Conflict(f"domain {self.domain_name} is running")
        try:
            # A managed save (see save_state) would make a plain undefine fail.
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        except libvirt.libvirtError as err:
            raise RuntimeFailure(f"cannot undefine {self.domain_name}: {err.get_error_message()}") from err

    # -- saved state: libvirt's managed save (restored by the next create()) --
    def save_state(self) -> dict[str, Any]:
        import libvirt

        try:
            self._domain().managedSave(0)
        except libvirt.libvirtError as err:
            raise SaveRefused(err.get_error_message()) from err
        return {"compression": "libvirt save_image_format"}

    def has_saved_state(self) -> bool:
        import libvirt

        try:
            return bool(self._domain().hasManagedSaveImage(0))
        except (NotFound, libvirt.libvirtError):
            return False

    def discard_saved_state(self) -> None:
        import libvirt

        try:
            self._domain().managedSaveRemove(0)
        except (NotFound, libvirt.libvirtError) as err:
            log.info("no managed save to remove: %s", err)

    def begin_restore(self, spec: LaunchSpec) -> None:
        """create() restores the managed save, with the domain XML saved in it; only the SSH port,
        which may be taken by now, is changed in that XML."""
        import libvirt

        dom = self._domain()
        try:
            saved = dom.managedSaveGetXMLDesc(0)
            if ssh_port_from_xml(saved) != spec.ssh_port:
                dom.managedSaveDefineXML(re.sub(r"(hostfwd=tcp:127\.0\.0\.1:)\d+(-:22)",
                                                rf"\g<1>{spec.ssh_port}\g<2>", saved), 0)
            dom.create()
        except libvirt.libvirtError as err:
            raise RuntimeFailure(f"cannot restore {self.domain_name}: {err.get_error_message()}") from err
        except SystemError as err:
            # QEMU's error can quote bytes of a damaged state file (a section name), which
            # libvirt-python then fails to decode: the restore failed all the same.
            raise RuntimeFailure(f"cannot restore {self.domain_name}: the saved state does not load "
                                 f"(libvirt's error message was unreadable: {err})") from err
        self._ssh_port = spec.ssh_port

    def retire_legacy(self, legacy_name: str, data_disk: Path) -> None:
        import libvirt

        try:
            dom = self.connection().lookupByName(legacy_name)
            xml = dom.XMLDesc(0)
        except libvirt.libvirtError:
            return
        disks = {source.get("file") for source in ET.fromstring(xml).findall("devices/disk/source")}
        if owner_from_xml(xml) is not None or str(data_disk) not in disks:
            return  # not this machine's: another home's, or not Dockyard's at all
        if dom.isActive():
            raise Conflict(
                f"this machine still runs as libvirt domain {legacy_name}, defined by an older Dockyard: "
                f"stop it once with `virsh shutdown {legacy_name}`, then start it again")
        log.info("undefining %s, this machine's domain under an older Dockyard's name", legacy_name)
        try:
            dom.undefine()
        except libvirt.libvirtError as err:
            raise RuntimeFailure(f"cannot undefine {legacy_name}: {err.get_error_message()}") from err

    def monitor_command(self, command: str) -> str:
        import libvirt
        import libvirt_qemu

        try:
            return libvirt_qemu.qemuMonitorCommand(
                self._domain(), command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
            )
        except libvirt.libvirtError as err:
            raise RuntimeFailure(f"QEMU monitor command {command!r} failed: {err.get_error_message()}") from err

    def xml(self) -> str:
        return self._domain().XMLDesc(0)

    @property
    def ssh_port(self) -> int:
        if not self._ssh_port:
            try:
                self._ssh_port = ssh_port_from_xml(self.xml())
            except NotFound:
                return 0
        return self._ssh_port
