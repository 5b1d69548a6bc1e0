"""The rough edges of issue 11 on a booted machine, through the real CLI and docker CLI.

One machine (direct QEMU backend) goes through: Mounts denied for a
non-shared path; `machine ssh` in a clean login environment over the
supervisor's link; a changed host key refused with both fingerprints, then
re-pinned; QEMU killed -> "crashed" with the console's last lines and the
reason -> `machine start` recovers it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from desktop.machine.host_key_pin import fingerprint
from desktop.machine.processes import pid_alive
from tests.machine.conftest import make_machine
from tests.support.waiting import poll

pytestmark = pytest.mark.vm

# A syntactically valid ed25519 key that is not the guest's.
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def machine(guest_image_env, tmp_path_factory):
    m = make_machine("rough", tmp_path_factory, guest_image_env)
    share = tmp_path_factory.mktemp("roughshare")
    (share / "note.txt").write_text("shared\n")
    m.share = share
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--mount", str(share),
               "--backend", "qemu")
    m.dockyard("start")
    yield m
    m.dockyard("rm", "-f", check=False)


def _pin(m):
    return next(m.home.rglob("host_key.pin"))


def test_a_non_shared_path_is_denied_and_a_shared_one_works(machine, test_images):
    denied = machine.docker("run", "--rm", "-v", "/etc:/x", test_images["busybox"], "true", check=False)
    assert denied.returncode == 125
    assert "Mounts denied:" in denied.stderr
    assert "The path /etc is not shared from the host and is not known to Docker." in denied.stderr
    assert "dockyard machine init --mount" in denied.stderr
    out = machine.docker("run", "--rm", "-v", f"{machine.share}:/data", test_images["busybox"], "cat",
                         "/data/note.txt")
    assert out.stdout == "shared\n"


def test_machine_ssh_is_a_clean_login_over_the_live_link(machine):
    # Dotfiles where sshd's login HOME used to be (/root: the host's home when that is shared).
    machine.dockyard("ssh", "echo 'echo DOTFILE-SOURCED' | tee /root/.bashrc /root/.profile >/dev/null")
    out = machine.dockyard("ssh", "echo HOME=$HOME; pwd; env | grep -c ^SSH_ || true")
    assert "DOTFILE-SOURCED" not in out.stdout + out.stderr
    assert out.stdout.split() == ["HOME=/var/lib/dockyard/home", "/var/lib/dockyard/home", "0"]
    # Over the supervisor's link: the guest's sshd logs no new connection for it.
    def logins() -> str:
        return machine.dockyard("ssh", "grep -c 'Accepted publickey' /run/dockyard/sshd.log").stdout

    before = logins()
    assert machine.dockyard("ssh", "exit 3", check=False).returncode == 3
    assert logins() == before


def test_a_changed_host_key_is_refused_until_reset(machine):
    real = _pin(machine).read_text().strip()
    _pin(machine).write_text(OTHER_KEY + "\n")
    refused = machine.dockyard("ssh", "true", check=False)
    assert refused.returncode != 0
    assert fingerprint(real) in refused.stderr and fingerprint(OTHER_KEY) in refused.stderr
    machine.dockyard("stop")
    boot = machine.dockyard("start", check=False)
    assert boot.returncode != 0
    assert fingerprint(real) in boot.stderr and fingerprint(OTHER_KEY) in boot.stderr
    assert "reset-host-key" in boot.stderr
    machine.dockyard("reset-host-key")
    machine.dockyard("start")
    assert _pin(machine).read_text().strip() == real
    assert machine.dockyard("ssh", "echo ok").stdout == "ok\n"


def test_killed_qemu_is_crashed_then_start_recovers(machine, test_images):
    assert machine.status()["state"] == "running"
    status = machine.status()
    assert status["boot_stage"] == "agent-ready" and status["uptime_s"] >= 0
    # The guest boots with a quiet console: give it last words, as a kernel oops would.
    machine.dockyard("ssh", "echo 'rough-edges: last words on the console' > /dev/ttyS0")
    pid = int((machine.home / "run" / machine.name / "qemu.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    poll(lambda: not pid_alive(pid), timeout=30, what="QEMU to exit")
    # The reason is QMP's SHUTDOWN event, which the supervisor records as QEMU exits.
    def crashed_by_signal() -> dict | None:
        s = machine.status()
        return s if s["state"] == "crashed" and "host-signal" in s["exit_reason"] else None

    try:
        crashed = poll(crashed_by_signal, timeout=60, what="status to say crashed by a signal")
    except AssertionError:
        raise AssertionError(f"status: {machine.status()}") from None
    assert crashed["console_tail"][-1] == "rough-edges: last words on the console", crashed
    text = machine.dockyard("status").stdout
    assert "crashed" in text and "last console lines:\n  rough-edges: last words on the console" in text
    machine.dockyard("start")
    assert machine.status()["state"] == "running"
    out = machine.docker("run", "--rm", test_images["busybox"], "echo", "back")
    assert out.stdout == "back\n"
    machine.dockyard("stop")
    assert machine.status()["state"] == "stopped"
    assert json.loads(machine.dockyard("status", "--json").stdout)["state"] == "stopped"


def test_libvirt_reports_a_killed_domain_as_crashed(libvirt_daemons, guest_image_env, tmp_path_factory,
                                                    test_images):
    m = make_machine("roughlv", tmp_path_factory, guest_image_env)
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--no-mount", "--backend", "libvirt")
    try:
        m.dockyard("start")
        pid = int(Path(f"/run/libvirt/qemu/{m.domain_name}.pid").read_text().strip())
        # SIGKILL: QEMU sends no SHUTDOWN event, so libvirt records the domain as crashed.
        os.kill(pid, signal.SIGKILL)
        crashed = poll(lambda: (s := m.status())["state"] == "crashed" and s, timeout=60,
                       what="status to say crashed")
        assert crashed["exit_reason"] == "libvirt: shut off, reason crashed"
        m.dockyard("start")
        assert m.docker("run", "--rm", test_images["busybox"], "echo", "back").stdout == "back\n"
    finally:
        m.dockyard("rm", "-f", check=False)
