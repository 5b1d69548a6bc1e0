"""The rough edges of issue 11 on a booted machine, through the real CLI and docker CLI.

One machine (direct QEMU backend) goes through: QEMU killed -> "crashed"
with the console's last lines and the reason -> `machine start` recovers it;
a libvirt machine shows libvirt's own reason.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from desktop.machine.processes import pid_alive
from tests.machine.conftest import make_machine
from tests.support.waiting import poll

pytestmark = pytest.mark.vm

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


def test_killed_qemu_is_crashed_then_start_recovers(machine, test_images):
    assert machine.status()["state"] == "running"
    status = machine.status()
    assert status["boot_stage"] == "agent-ready" and status["uptime_s"] >= 0
    # The guest boots with a quiet console: give it last words, as a kernel oops would.
    machine.dockyard("ssh", "echo 'rough-edges: last words on the console' > /dev/ttyS0")
    pid = int((machine.home / "run" / machine.name / "qemu.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    poll(lambda: not pid_alive(pid), timeout=30, what="QEMU to exit")
    crashed = poll(lambda: (s := machine.status())["state"] == "crashed" and s, timeout=30,
                   what="status to say crashed")
    assert "host-signal" in crashed["exit_reason"]
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
