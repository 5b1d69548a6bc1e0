"""The real guest under QEMU/TCG: readiness, SSH, code, shares, clock, supervision, power off.

The session's one bare guest (the `vm` fixture) serves this module and the
link tests; the power-off test runs last in the session because it stops it.
What must persist across boots (data disk, host keys) is checked through the
machine manager's stop/start in tests/machine/test_vm_libvirt.py.
"""

from __future__ import annotations

import base64
import time

import paramiko
import pytest

from tests.support.guest_vm import run

pytestmark = pytest.mark.vm


def test_ready_message_carries_host_key_socket_and_timings(vm):
    ready = vm.ready
    assert ready["agent_socket"] == "/run/dockyard/docker.sock"
    key = base64.b64decode(ready["host_keys"]["ssh-ed25519"])
    assert key[4:15] == b"ssh-ed25519"
    for phase in ("kernel_s", "init_s", "sshd_s", "agent_s"):
        assert ready["timings"][phase] > 0
    assert ready["timings"]["kernel_s"] < ready["timings"]["agent_s"]
    assert ready["data_disk"] == "formatted"  # the session disk starts blank
    assert ready["errors"] == []


def test_sshd_ready_comes_first_with_the_same_host_key(vm):
    names = [e.get("event") for e in vm.guest.events]
    assert names.index("sshd-ready") < names.index("ready")
    early = vm.guest.events[names.index("sshd-ready")]
    assert early["host_keys"] == vm.ready["host_keys"]
    assert early["timings"]["sshd_s"] == vm.ready["timings"]["sshd_s"]


def test_ssh_with_key_and_pinned_host_key(vm):
    with vm.ssh() as client:
        status, out, _ = run(client, "hostname; id -u")
    assert status == 0
    assert out.split() == ["dockyard", "0"]


def test_ssh_refuses_passwords(vm):
    with paramiko.Transport(("127.0.0.1", vm.guest.ssh_port)) as transport:
        transport.start_client(timeout=30)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("root", "root")
    assert refused.value.allowed_types == ["publickey"]


def test_ssh_rejects_a_different_host_key(vm):
    client = paramiko.SSHClient()
    other = paramiko.Ed25519Key.from_private_key_file(str(vm.key_path))  # not the host's key
    client.get_host_keys().add(f"[127.0.0.1]:{vm.guest.ssh_port}", "ssh-ed25519", other)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect("127.0.0.1", vm.guest.ssh_port, username="root", pkey=other,
                       allow_agent=False, look_for_keys=False, timeout=30)
    client.close()


def test_guest_python_imports_our_code_and_the_agent_answers(vm):
    probe = ("import sys, socket, runtime, guest_agent; s = socket.socket(socket.AF_UNIX); "
             "s.connect('/run/dockyard/docker.sock'); "
             "s.sendall(b'GET /_ping HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'); "
             "print(runtime.__file__, guest_agent.__file__, s.recv(100).split(b'\\r\\n')[0].decode())")
    with vm.ssh() as client:
        status, out, err = run(client, f'PYTHONPATH=/opt/dockyard/lib python3 -c "{probe}"')
    assert status == 0, err
    runtime_file, agent_file, http_status = out.split(" ", 2)
    assert runtime_file.startswith("/opt/dockyard/lib/runtime/")
    assert agent_file.startswith("/opt/dockyard/lib/guest_agent/")
    assert http_status.strip() == "HTTP/1.1 200 OK"


def test_share_is_mounted_at_the_host_path_and_guest_writes_reach_the_host(vm):
    (vm.share_dir / "from-host.txt").write_text("host says hi\n")
    with vm.ssh() as client:
        status, out, err = run(client, f"cat {vm.share_dir}/from-host.txt && "
                                       f"echo guest says hi > {vm.share_dir}/from-guest.txt && "
                                       f"grep ' {vm.share_dir} ' /proc/mounts")
    assert status == 0, err
    assert out.startswith("host says hi\n")
    assert " 9p " in out
    assert (vm.share_dir / "from-guest.txt").read_text() == "guest says hi\n"


def test_clock_follows_dockyard_time_not_the_wrong_rtc(vm):
    with vm.ssh() as client:
        _, out, _ = run(client, "date +%s")
    # The RTC says 2001; dockyard.time was taken just before boot.
    assert abs(int(out) - time.time()) < 60


def test_cgroup_v2_only_with_controllers_delegated(vm):
    with vm.ssh() as client:
        _, mounts, _ = run(client, "cat /proc/mounts")
        _, controllers, _ = run(client, "cat /sys/fs/cgroup/cgroup.subtree_control")
    assert "cgroup2 /sys/fs/cgroup cgroup2" in mounts
    assert " cgroup " not in mounts  # no v1 hierarchy
    assert {"cpu", "memory", "pids", "io"} <= set(controllers.split())


def test_stage1_loaded_every_boot_module_it_tried(vm):
    """No failed insmod at boot: under TCG (no SSE4.2) crc32c-intel is not even tried."""
    with vm.ssh() as client:
        _, log, _ = run(client, "cat /run/dockyard/stage1.log")
        _, flags, _ = run(client, "grep -m1 '^flags' /proc/cpuinfo")
        _, loaded, _ = run(client, "ls /sys/module")
    assert "insmod" not in log, log   # (a blank data disk fails to mount on a first boot: expected)
    assert {"ext4", "overlay", "virtio_blk", "crc32c_generic"} <= set(loaded.split())
    assert ("crc32c_intel" in loaded.split()) == ("sse4_2" in flags.split())


def test_network_and_hostname_are_static(vm):
    with vm.ssh() as client:
        _, addr, _ = run(client, "ip -4 -o addr show dev eth0; ip route show default; cat /etc/resolv.conf")
    assert "10.0.2.15/24" in addr
    assert "default via 10.0.2.2" in addr
    assert "nameserver 10.0.2.3" in addr


def test_guest_has_the_tools_the_runtime_and_host_use(vm):
    with vm.ssh() as client:
        status, out, err = run(client, "command -v sshfs iptables ip mkfs.ext4 && modprobe -a fuse veth "
                                       "bridge && ls -d /sys/module/fuse /sys/module/veth /sys/module/bridge")
    assert status == 0, err
    assert sorted(out.split()[-3:]) == ["/sys/module/bridge", "/sys/module/fuse", "/sys/module/veth"]


def test_status_request_repeats_the_ready_message(vm):
    vm.guest.send("status")
    again = vm.guest.wait_for("ready", 30)
    assert again["host_keys"] == vm.ready["host_keys"]


def test_agent_is_restarted_when_it_dies(vm):
    with vm.ssh() as client:
        _, pid, _ = run(client, "cat /proc/1/task/1/children")
        agent_pids = [p for p in pid.split()
                      if "guest_agent.cli" in run(client, f"cat /proc/{p}/cmdline")[1]]
        assert len(agent_pids) == 1
        run(client, f"kill -9 {agent_pids[0]}")
        exited = vm.guest.wait_for("agent-exited", 30)
        assert exited["code"] == -9
        # The restarted agent answers again (checked in the guest, no host-side timing).
        status, out, err = run(client, (
            "for i in $(seq 1 600); do python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); "
            "s.connect('/run/dockyard/docker.sock')\" 2>/dev/null && echo up && break; "
            "sleep 0.1; done"), timeout=90)
    assert out.strip() == "up", err


@pytest.mark.powers_off_vm
def test_poweroff_in_the_guest_stops_qemu_cleanly(vm):
    """Last in the session (see tests/conftest.py): it powers the shared guest off."""
    with vm.ssh() as client:
        status, _, err = run(client, "echo kept > /var/lib/dockyard/persist.txt && sync")
        assert status == 0, err
        client.exec_command("poweroff")
    assert vm.guest.wait_for("shutdown", 30)
    assert vm.guest.wait_exit(timeout=60) == 0
