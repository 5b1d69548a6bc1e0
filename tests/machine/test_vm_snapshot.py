"""Instant start under TCG: `machine stop` saves the guest, `machine start` resumes it (or boots cold).

One machine per backend for the module, driven through the real `dockyard` and
`docker` CLIs. The tests run in order: each leaves the machine running.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import pytest

from tests.machine.conftest import CliMachine, make_machine
from tests.support.processes import free_port
from tests.support.waiting import poll

pytestmark = pytest.mark.vm

HOUR = 3600
SHARES: dict[str, Path] = {}  # machine name -> its shared folder


@pytest.fixture(scope="module", params=["qemu", "libvirt"])
def machine(request, guest_image_env, tmp_path_factory):
    if request.param == "libvirt":
        request.getfixturevalue("libvirt_daemons")
    m = make_machine(f"snap{request.param}", tmp_path_factory, guest_image_env)
    # A 9p share, as the default machine has (the home): QEMU saves only with it unmounted.
    share = tmp_path_factory.mktemp(f"share-{request.param}")
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--mount", str(share), "--sharefs", "9p",
               "--backend", request.param)
    m.dockyard("start")
    SHARES[m.name] = share
    yield m
    m.dockyard("rm", "-f", check=False)


def _saved_files(m: CliMachine) -> list[str]:
    return sorted(p.name for p in (m.home / "data" / "machines" / m.name).glob("saved-state*"))


def _http(port: int) -> bytes | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/passwd", timeout=10).read()
    except OSError:
        return None


def _guest_clock_offset(m: CliMachine) -> float:
    """Guest clock minus host clock, in seconds (to within the ssh round trip)."""
    before = time.time()
    guest = float(m.dockyard("ssh", "date +%s.%N").stdout)
    after = time.time()
    return guest - (before + after) / 2


def _container_pid(m: CliMachine, name: str) -> str:
    return m.docker("inspect", "-f", "{{.State.Running}} {{.State.Pid}}", name).stdout.strip()


def test_stop_saves_and_start_resumes_with_containers_ports_and_clock(machine, test_images):
    port = free_port()
    machine.docker("run", "-d", "--name", "web", "-p", f"{port}:8080", test_images["busybox"],
                   "httpd", "-f", "-p", "8080", "-h", "/etc")
    poll(lambda: _http(port), 60, "the published port before the stop")
    running = _container_pid(machine, "web")
    assert running.startswith("true ")
    # Put the guest clock an hour behind: only the step after the resume brings it back.
    machine.dockyard("ssh", f"date -u -s @{int(time.time()) - HOUR} >/dev/null")
    assert _guest_clock_offset(machine) < -HOUR / 2

    stop = machine.dockyard("stop")
    assert "saved" in stop.stderr
    assert machine.status()["state"] == "stopped"
    assert _saved_files(machine)

    start = machine.dockyard("start")
    assert "booting cold" not in start.stderr and "could not be resumed" not in start.stderr, start.stderr
    assert machine.status()["start_kind"] == "restore"
    # The same container process, never restarted, and its port answers from the host again.
    assert _container_pid(machine, "web") == running
    assert b"root:x:0:0" in poll(lambda: _http(port), 60, "the published port after the resume")
    assert abs(_guest_clock_offset(machine)) < 60
    assert machine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    # The shared folder, unmounted for the save, is mounted again: a host file written now is seen.
    (SHARES[machine.name] / "after-resume.txt").write_text("written on the host after the resume\n")
    seen = machine.docker("run", "--rm", "-v", f"{SHARES[machine.name]}:/s", test_images["busybox"],
                          "cat", "/s/after-resume.txt")
    assert seen.stdout == "written on the host after the resume\n", seen.stderr
    # A resumed state is consumed: the next start could not resume it again.
    assert _saved_files(machine) == []


def test_changed_settings_boot_cold_and_say_why(machine):
    assert machine.status()["start_kind"] == "restore"
    machine.dockyard("stop")
    assert _saved_files(machine)
    changed = CliMachine(machine.name, dict(machine.env, DOCKYARD_MEMORY="1100M"), machine.home)
    start = changed.dockyard("start")
    assert "booting cold" in start.stderr and "memory" in start.stderr, start.stderr
    status = changed.status()
    assert status["start_kind"] == "cold" and status["memory_mib"] == 1100
    assert _saved_files(machine) == []
    # A cold boot: the container from before is not running any more.
    assert machine.docker("inspect", "-f", "{{.State.Running}}", "web").stdout.strip() == "false"


def test_a_corrupt_saved_state_boots_cold_and_is_removed(machine):
    changed = CliMachine(machine.name, dict(machine.env, DOCKYARD_MEMORY="1100M"), machine.home)
    changed.dockyard("stop")
    saved = machine.home / "data" / "machines" / machine.name / "saved-state.bin"
    if not saved.exists():  # libvirt (qemu:///system, as root here) keeps its managed save image itself
        saved = Path("/var/lib/libvirt/qemu/save") / f"{machine.domain_name}.save"
    with open(saved, "r+b") as f:
        f.seek(os.path.getsize(saved) // 2)
        f.write(os.urandom(1 << 20))
    start = changed.dockyard("start")
    assert "could not be resumed" in start.stderr, start.stderr
    assert changed.status()["start_kind"] == "cold"
    assert _saved_files(machine) == []
    assert changed.docker("version", "--format", "{{.Server.Version}}").stdout.strip()


def test_stop_cold_and_the_setting_shut_down(machine):
    changed = CliMachine(machine.name, dict(machine.env, DOCKYARD_MEMORY="1100M"), machine.home)
    assert "stopped" in changed.dockyard("stop", "--cold").stderr
    assert _saved_files(machine) == []
    changed.dockyard("start")
    assert changed.status()["start_kind"] == "cold"
    no_save = CliMachine(machine.name, dict(changed.env, DOCKYARD_SAVE_ON_STOP="false"), machine.home)
    assert "stopped" in no_save.dockyard("stop").stderr
    assert _saved_files(machine) == []


def test_a_container_using_a_shared_folder_makes_stop_shut_down(machine, test_images):
    """Its bind mount keeps the 9p share alive in the guest, so QEMU cannot save: stop says so."""
    machine.dockyard("start")
    share = SHARES[machine.name]
    machine.docker("run", "-d", "--name", "uses-share", "-v", f"{share}:/s", test_images["busybox"],
                   "sleep", "3600")
    stop = machine.dockyard("stop")
    assert "cannot be saved" in stop.stderr and "shutting it down" in stop.stderr, stop.stderr
    assert _saved_files(machine) == []
    machine.dockyard("start")
    assert machine.status()["start_kind"] == "cold"
