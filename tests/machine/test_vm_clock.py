"""The guest clock, read inside a container against the host's: after boot, after a suspend, after
five minutes, and brought back by the periodic check when something puts it off.

Offsets are NTP-style (tests/support/container_clock.py) and checked against
the 50 ms the issue asks for plus the reading's own uncertainty (half its
round trip). Two machines: `steady` has the periodic check turned off (one an
hour), so what holds its clock is the step at start, the suspend handling and
the guest's clock source alone; `checked` runs the check every 5 s.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from desktop.clock_sync import ClockSync
from desktop.machine.qemu_backend import QemuBackend
from desktop.ssh_link import SshLink
from tests.machine.conftest import CliMachine, make_machine
from tests.support.container_clock import ContainerClock, ContainerOffset
from tests.support.waiting import poll

pytestmark = pytest.mark.vm

BOUND_S = 0.050
SOAK_S = 300
PAUSE_S = 3.0
# Run as the guest's root over `machine ssh`: moves the clock by N ns, relative, so the
# command's own (slow) start does not matter. /usr/bin/python3: the guest's, by path.
SHIFT_GUEST_CLOCK = ("/usr/bin/python3 -c 'import time; c = time.CLOCK_REALTIME; "
                     "time.clock_settime_ns(c, time.clock_gettime_ns(c) + {ns})'")


def _boot(name: str, tmp_path_factory, image_env, check_s: float) -> CliMachine:
    m = make_machine(name, tmp_path_factory, image_env)
    m.env["DOCKYARD_CLOCK_CHECK"] = str(check_s)
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--backend", "qemu")
    m.dockyard("start")
    return m


def _state(m: CliMachine) -> dict:
    return json.loads((m.home / "data" / "machines" / m.name / "state.json").read_text())


def _offset(m: CliMachine, image: str) -> ContainerOffset:
    with ContainerClock(m.docker_host, image) as clock:
        return clock.measure()


def _within_bound(offset: ContainerOffset) -> bool:
    return abs(offset.offset_s) <= BOUND_S + offset.error_s


@pytest.fixture(scope="module")
def steady(guest_image_env, tmp_path_factory):
    m = _boot("clksteady", tmp_path_factory, guest_image_env, check_s=3600)
    yield m
    m.dockyard("rm", "-f", check=False)


def test_clock_is_right_right_after_boot(steady, test_images):
    # Before the fix: -8.5 s (`date -s` with a time taken before a 8.5 s command), and
    # without the step at start still the RTC's truncated second (-0.5 s here).
    offset = _offset(steady, test_images["busybox"])
    assert _within_bound(offset), f"guest clock {offset} off right after boot"
    source = steady.dockyard("ssh", "cat", "/sys/devices/system/clocksource/clocksource0/current_clocksource")
    assert source.stdout.strip() == "acpi_pm"  # the TCG clock source (desktop/machine/guest_clock.py)


def test_clock_is_stepped_after_a_simulated_host_suspend(steady, test_images):
    state = _state(steady)
    backend = QemuBackend(steady.domain_name, steady.home / "run" / steady.name, steady.home / "console.log")
    # A host suspend freezes the VM: its clock stops while the host's goes on.
    backend.monitor_command("stop")
    try:
        paused_at = time.monotonic()
        poll(lambda: time.monotonic() - paused_at >= PAUSE_S, timeout=PAUSE_S + 5, what="the simulated sleep")
    finally:
        backend.monitor_command("cont")
    behind = _offset(steady, test_images["busybox"])
    assert behind.offset_s < -PAUSE_S + 0.5, f"the pause did not put the guest clock behind: {behind}"

    # What the supervisor's ClockSync sees on resume: wall time jumped past monotonic time.
    wall, mono = [1_700_000_000.0], [1000.0]
    link = SshLink("127.0.0.1", state["ssh_port"], "root", steady.home / "data" / "machines" / steady.name /
                   "id_ed25519", state["host_key"])
    link.connect(timeout=60)
    try:
        sync = ClockSync(link, check_interval_s=3600, wall_clock=lambda: wall[0], monotonic=lambda: mono[0])
        mono[0] += 5
        wall[0] += 5 + PAUSE_S
        result = sync.check()
    finally:
        link.close()
    assert result is not None and "jumped" in result.reason and result.correction.action == "step"
    assert result.offset_s == pytest.approx(behind.offset_s, abs=0.5)
    offset = _offset(steady, test_images["busybox"])
    assert _within_bound(offset), f"guest clock {offset} off after the simulated suspend"


def test_periodic_check_steps_and_slews_a_wrong_clock(guest_image_env, tmp_path_factory, test_images):
    m = _boot("clkcheck", tmp_path_factory, guest_image_env, check_s=5)
    log = m.home / "data" / "machines" / m.name / "supervisor.log"

    def corrections(action: str) -> list[float]:
        # "guest clock was +3000.4 ms off (+-1.2 ms): stepped by -3000.4 ms (periodic check)"
        return [float(x) for x in re.findall(rf"was ([-+][\d.]+) ms off \S+ ms\): {action} by \S+ ms "
                                             r"\(periodic check\)", log.read_text())]

    try:
        m.dockyard("ssh", SHIFT_GUEST_CLOCK.format(ns=3_000_000_000))
        found = poll(lambda: [x for x in corrections("stepped") if 2500 < x < 3500], timeout=120,
                     what="a periodic check to step the 3 s away")
        assert found
        offset = _offset(m, test_images["busybox"])
        assert _within_bound(offset), f"guest clock {offset} off after the step"

        m.dockyard("ssh", SHIFT_GUEST_CLOCK.format(ns=-300_000_000))
        poll(lambda: [x for x in corrections("slewing") if -400 < x < -200], timeout=120,
             what="a periodic check to slew the -0.3 s away")

        def settled() -> ContainerOffset | None:
            offset = _offset(m, test_images["busybox"])
            return offset if _within_bound(offset) else None

        poll(settled, timeout=120, interval=1, what="the slew to bring the clock within 50 ms")
    finally:
        m.dockyard("rm", "-f", check=False)


def test_clock_holds_five_minutes_after_boot(steady, test_images):
    # Last, so the other tests' time counts: nothing corrects `steady` periodically, so this
    # measures what its clock source drifted since the last step (ACPI PM timer: about nothing).
    booted_at = _state(steady)["booted_at"]
    poll(lambda: time.time() - booted_at >= SOAK_S, timeout=SOAK_S + 60, interval=1, what="five minutes of uptime")
    offset = _offset(steady, test_images["busybox"])
    assert _within_bound(offset), f"guest clock {offset} off after {SOAK_S} s"
