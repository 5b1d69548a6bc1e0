"""A second guest in the product's layout: QEMU owns the ready socket and the host
connects late; host folders through virtiofs (QEMU's virtiofsd) instead of 9p."""

from __future__ import annotations

import base64
import socket
import time

import paramiko
import pytest

from tests.support import qemu_boot
from tests.support.guest_vm import READY_TIMEOUT_S, WRONG_RTC, GuestVM, guest_cmdline, run

pytestmark = pytest.mark.vm


def wait_for_ssh_banner(port: int, timeout: float) -> None:
    """Poll the forwarded port until sshd greets (slirp accepts before the guest listens)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if sock.recv(4) == b"SSH-":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no sshd banner on port {port} within {timeout}s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def late_vm(guest_image, vm_files, tmp_path_factory):
    base = tmp_path_factory.mktemp("late")
    _, key_path, _, _ = vm_files
    share = base / "shared folder"  # a space: the path must be escaped on the command line
    share.mkdir()
    disk = qemu_boot.create_data_disk(base / "data.qcow2")
    cmdline = guest_cmdline(guest_image, key_path, share, sharefs="virtiofs")
    guest = qemu_boot.boot(guest_image.kernel, guest_image.initrd, guest_image.rootfs, disk, cmdline,
                           base / "boot", shares=[("share0", share)], extra_args=WRONG_RTC,
                           sharefs="virtiofs", host_listens=False)
    yield GuestVM(guest, {}, key_path, share, disk, cmdline, base / "boot")
    guest.kill()


def test_ready_waits_for_a_late_host_without_spinning(late_vm):
    vm = late_vm
    wait_for_ssh_banner(vm.guest.ssh_port, READY_TIMEOUT_S)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # checked against ready below
    client.connect("127.0.0.1", vm.guest.ssh_port, username="root",
                   pkey=paramiko.Ed25519Key.from_private_key_file(str(vm.key_path)),
                   allow_agent=False, look_for_keys=False, timeout=30)
    seen_key = client.get_transport().get_remote_server_key()
    with client:
        # Wait (in the guest) until the agent is up, i.e. the init has its ready line queued.
        status, _, err = run(client, "for i in $(seq 1 900); do [ -S /run/dockyard/docker.sock ] "
                                     "&& exit 0; sleep 0.1; done; exit 1", timeout=120)
        assert status == 0, err
        # With no host on the channel, the port polls as hung up: the init must
        # not spin on it. Measure pid 1's CPU time over a 2 s window.
        _, out, _ = run(client, "a=$(cut -d' ' -f14,15 /proc/1/stat); sleep 2; "
                                "b=$(cut -d' ' -f14,15 /proc/1/stat); echo $a $b")
    u1, s1, u2, s2 = map(int, out.split())
    assert (u2 + s2) - (u1 + s1) < 50  # clock ticks (1/100 s): under 0.5 s of CPU in 2 s

    vm.guest.connect_channel()
    ready = vm.guest.wait_for("ready", 60)  # queued in the guest, delivered on connect
    assert base64.b64decode(ready["host_keys"]["ssh-ed25519"]) == seen_key.asbytes()
    vm.ready.update(ready)


def test_virtiofs_share_with_a_space_is_mounted_and_writable_both_ways(late_vm):
    vm = late_vm
    if not vm.ready:
        vm.guest.connect_channel()
        vm.ready.update(vm.guest.wait_for("ready", READY_TIMEOUT_S))
    assert vm.ready["errors"] == []
    assert vm.ready["shares"] == [str(vm.share_dir)]
    (vm.share_dir / "host.txt").write_text("from host\n")
    with vm.ssh() as client:
        status, out, err = run(client, f"cat '{vm.share_dir}/host.txt' && "
                                       f"echo from guest > '{vm.share_dir}/guest.txt' && "
                                       f"findmnt -n -o FSTYPE '{vm.share_dir}'")
    assert status == 0, err
    assert out.split("\n")[:2] == ["from host", "virtiofs"]
    assert (vm.share_dir / "guest.txt").read_text() == "from guest\n"


def test_acpi_power_button_powers_the_guest_off(late_vm):
    """What libvirt's shutdown and QMP system_powerdown do; last test of this module."""
    vm = late_vm
    if vm.guest.channel is None:
        vm.guest.connect_channel()
    assert "return" in vm.guest.qmp("system_powerdown")
    assert vm.guest.wait_for("shutdown", 60)
    assert vm.guest.wait_exit(timeout=60) == 0
