"""The real machine under libvirt and TCG, booted once for this module, driven by the real CLIs."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import time
import urllib.request

import pytest

from tests.machine.conftest import make_machine
from tests.support.processes import free_port

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def share(tmp_path_factory):
    # A space and a comma: the share list on the kernel command line must escape them.
    return tmp_path_factory.mktemp("host share,")


@pytest.fixture(scope="module")
def machine(libvirt_daemons, guest_image_env, tmp_path_factory, share):
    m = make_machine("vmt", tmp_path_factory, guest_image_env)
    m.dockyard("init", "--cpus", "2", "--memory", "1536M", "--disk", "8G", "--mount", str(share),
               "--backend", "libvirt")
    m.start = m.dockyard("start")
    yield m
    m.dockyard("rm", "-f", check=False)


def test_start_prints_docker_host_and_docker_cli_works(machine):
    assert machine.start.stdout.strip() == f"export DOCKER_HOST={machine.docker_host}"
    # The accelerator choice is one log line with its reason (TCG on this host, see REFERENCE.md).
    assert re.search(r"accelerator: (TCG|KVM) \(.+\)", machine.start.stderr)
    version = machine.docker("version", "--format", "{{.Server.Version}} {{.Server.Os}}")
    assert version.stdout.strip().endswith("linux")
    # docker-py, the host side's client (desktop.engine_client), over the same socket.
    client = machine.client()
    try:
        assert client.version()["Os"] == "linux"
    finally:
        client.close()


def test_ssh_link_was_connected_on_sshd_ready(machine):
    # The guest announces sshd before its agent answers; the link is opened then, not after "ready".
    log = machine.dockyard("logs", "--supervisor").stdout
    assert "SSH link up" in log and "after sshd-ready" in log


def test_domain_is_visible_in_virsh(machine):
    out = subprocess.run(["virsh", "list"], capture_output=True, text=True, check=True).stdout
    assert machine.domain_name.startswith("dockyard-vmt-")
    assert re.search(rf"\b{re.escape(machine.domain_name)}\s+running", out)


def test_domain_records_its_home_and_another_home_s_machine_of_the_same_name_is_apart(
        machine, guest_image_env, tmp_path_factory):
    """Two DOCKYARD_HOMEs with a machine of the same name: two domains, neither touches the other."""
    from desktop.machine.libvirt_backend import owner_from_xml

    xml = subprocess.run(["virsh", "dumpxml", machine.domain_name], capture_output=True, text=True,
                         check=True).stdout
    assert owner_from_xml(xml) == str(machine.home.resolve())
    other = make_machine("vmt", tmp_path_factory, guest_image_env)
    other.dockyard("init", "--no-mount", "--disk", "1G", "--backend", "libvirt")
    try:
        assert other.domain_name != machine.domain_name
        assert other.status()["state"] == "stopped"   # ours runs, under the same machine name
        other.dockyard("stop")
        other.dockyard("rm", "-f")
        assert machine.status()["state"] == "running"
        assert machine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    finally:
        other.dockyard("rm", "-f", check=False)


def test_status_json(machine):
    st = machine.status()
    assert st["state"] == "running"
    assert st["engine"] == "ok"
    assert st["docker_host"] == machine.docker_host
    assert st["backend"] == "libvirt" and st["libvirt_uri"] == "qemu:///system"
    assert st["ssh_port"] > 0 and st["supervisor_pid"] > 0
    assert {"kernel_s", "sshd_s", "agent_s"} <= set(st["guest_timings"])
    sock = machine.home / "run" / "vmt" / "docker.sock"
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600


def test_udp_hostfwd_through_the_libvirt_monitor(machine):
    from desktop.machine.libvirt_backend import LibvirtBackend

    backend = LibvirtBackend(machine.domain_name, machine.home / "run" / "vmt", machine.home / "console.log",
                             owner_home=str(machine.home.resolve()))
    backend.add_hostfwd("udp", 45354, 53)
    assert "127.0.0.1 45354" in " ".join(backend.monitor_command("info usernet").split())
    backend.remove_hostfwd("udp", 45354)
    assert "45354" not in backend.monitor_command("info usernet")
    backend.close()


def test_second_start_is_a_no_op(machine):
    before = machine.status()
    again = machine.dockyard("start")
    assert "already running" in again.stderr
    assert again.stdout.strip() == f"export DOCKER_HOST={machine.docker_host}"
    after = machine.status()
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert after["ssh_port"] == before["ssh_port"]


def test_ssh_runs_commands(machine):
    assert machine.dockyard("ssh", "uname", "-s").stdout.strip() == "Linux"
    # Several words keep their boundaries; one word is a shell command line.
    assert machine.dockyard("ssh", "sh", "-c", "echo a b").stdout.strip() == "a b"
    assert machine.dockyard("ssh", "echo x | tr x y").stdout.strip() == "y"
    failed = machine.dockyard("ssh", "exit 3", check=False)
    assert failed.returncode == 3


def _link_connections(port: int) -> set[str]:
    out = subprocess.run(["ss", "-Htn", "state", "established", f"dport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[2] for line in out.splitlines() if line.strip()}


def test_ssh_link_survives_a_killed_connection(machine):
    port = machine.status()["ssh_port"]
    before = _link_connections(port)
    assert before, "the supervisor's SSH connection should be established"
    subprocess.run(["ss", "-K", "-tn", f"dport = :{port}"], check=True, capture_output=True)
    assert not (_link_connections(port) & before)
    # The next request reconnects transparently.
    assert machine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert _link_connections(port) - before


def test_host_folder_is_shared_at_the_same_path(machine, share):
    (share / "from-host.txt").write_text("hello guest\n")
    assert machine.dockyard("ssh", "cat", str(share / "from-host.txt")).stdout == "hello guest\n"
    machine.dockyard("ssh", "sh", "-c", f"echo hello host > {shlex.quote(str(share))}/from-guest.txt")
    assert (share / "from-guest.txt").read_text() == "hello host\n"


def test_start_reattaches_when_the_supervisor_died(machine):
    import os
    import signal

    from desktop.machine.manager import pid_alive

    old = machine.status()["supervisor_pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert machine.status()["engine"] == "unreachable: supervisor not running"
    again = machine.dockyard("start")
    assert "already running" not in again.stderr
    st = machine.status()
    assert st["engine"] == "ok" and st["supervisor_pid"] != old
    assert machine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()


def test_logs_prints_the_console(machine):
    assert machine.dockyard("logs").returncode == 0
    assert "guest ready" in machine.dockyard("logs", "--supervisor").stdout


def test_docker_run_rm(machine, test_images):
    out = machine.docker("run", "--rm", test_images["busybox"], "echo", "hi from the vm")
    assert out.stdout == "hi from the vm\n"


def test_bind_mount_of_a_host_folder(machine, share, test_images):
    machine.docker("run", "--rm", "-v", f"{share}:/data", test_images["busybox"],
                   "sh", "-c", "echo written-in-container > /data/bind.txt")
    assert (share / "bind.txt").read_text() == "written-in-container\n"



def test_published_port_is_reachable_from_the_host(machine, test_images):
    port = free_port()
    machine.docker("run", "-d", "--name", "web", "-p", f"{port}:8080", test_images["busybox"],
                   "httpd", "-f", "-p", "8080", "-h", "/etc")
    try:
        # The forwarder learns of the port from /events: poll until it listens.
        deadline = time.monotonic() + 60
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=10).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert b"root:x:0:0" in body
    finally:
        machine.docker("rm", "-f", "web", check=False)


def _pinned_host_key(machine) -> str:
    return json.loads((machine.home / "data" / "machines" / machine.name / "state.json").read_text())["host_key"]


def test_named_volume_survives_stop_and_start(machine, test_images):
    """The data disk (volumes, the guest's SSH host keys) outlives a shutdown and a cold boot
    (`--cold`: a plain stop saves the guest, tests/machine/test_vm_snapshot.py covers that)."""
    host_key = _pinned_host_key(machine)
    assert host_key.startswith("ssh-ed25519 ")
    machine.docker("volume", "create", "keep")
    machine.docker("run", "--rm", "-v", "keep:/data", test_images["busybox"],
                   "sh", "-c", "echo persisted > /data/f")
    stop = machine.dockyard("stop", "--cold")
    assert "stopped" in stop.stderr
    assert machine.status()["state"] == "stopped"
    assert machine.dockyard("stop").stderr.strip().endswith("is not running")
    start = machine.dockyard("start")
    assert start.stdout.strip() == f"export DOCKER_HOST={machine.docker_host}"
    out = machine.docker("run", "--rm", "-v", "keep:/data", test_images["busybox"], "cat", "/data/f")
    assert out.stdout == "persisted\n"
    assert _pinned_host_key(machine) == host_key   # generated once, kept on the data disk


def test_compose_project_comes_up_through_the_machine(machine, share, test_images, tmp_path):
    """The Compose test project, driven by the real Compose v2 through the machine's socket:
    its bind-mount sources sit in a shared folder (the same path in the guest), and the
    web service's published port answers on the host through the port forwarder."""
    from tests.compose.project_copy import ComposeProject
    from tests.compose.scenarios import up_serves_backend_answer

    project = ComposeProject.copy(
        "v2", "dockyard", machine.docker_host, machine.docker, tmp_path / "docker-config",
        share / "compose-project", "vmcompose",
        {"BUSYBOX_IMAGE": test_images["busybox"], "DEBIAN_IMAGE": test_images["debian"]})
    try:
        up_serves_backend_answer(project)
    finally:
        project.cleanup()
    assert "vmcompose" not in machine.docker("ps", "-a", "--format", "{{.Names}}").stdout
