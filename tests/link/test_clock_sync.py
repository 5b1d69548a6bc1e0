"""Clock sync through a real sshd to the guest's clock service (on a simulated clock, see the support module).

The measuring (NTP-style), the policy (step when far off, slew when close),
the periodic check, suspend detection with injected host clocks, reconnects
and `sync_now` run for real over the link; only the guest's kernel clock is
simulated, since setting this host's clock would move it under every other
process. tests/machine/test_vm_clock.py covers the real guest.
"""

from __future__ import annotations

import pytest

from desktop.clock_discipline import GuestClock, GuestClockError, correct
from desktop.clock_sync import ClockSync
from desktop.ssh_link import ChannelOpenRefused
from tests.support.simulated_guest_clock import ServedGuestClock
from tests.support.waiting import poll

# Allowance for the simulated offset moving while a test looks at it (it is exact
# otherwise) on top of the measurement's own uncertainty (half the round trip).
SLACK_S = 0.002


class FakeClocks:
    """The host's wall and monotonic clocks as ClockSync sees them, advanced by hand."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 5_000.0

    def advance(self, seconds: float, suspended: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + suspended


@pytest.fixture
def guest(tmp_path):
    served = ServedGuestClock(tmp_path / "clock.sock")
    yield served
    served.stop()


def _clock_sync(link, guest, clocks=None, **kw):
    if clocks is not None:
        kw.update(wall_clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    return ClockSync(link, socket_path=str(guest.path), **kw)


def test_offset_is_measured_against_the_round_trip(link, guest):
    guest.clock.set_offset(1.234)
    with GuestClock(link, str(guest.path)) as clock:
        sample = clock.measure()
    assert sample.rtt_s > 0
    assert abs(sample.offset_s - 1.234) <= sample.error_s + SLACK_S
    assert sample.slewing_s == 0


def test_far_off_clock_is_stepped(link, guest):
    guest.clock.set_offset(-3.0)
    with GuestClock(link, str(guest.path)) as clock:
        done = correct(clock)
    assert done.action == "step" and done.amount_s == pytest.approx(3.0, abs=0.01)
    assert abs(guest.clock.offset_s) <= done.measured.error_s + SLACK_S
    assert guest.clock.ticks_set == []  # a step leaves the tick alone


def test_close_clock_is_slewed_until_it_is_right(link, guest):
    guest.clock.set_offset(0.040)
    with GuestClock(link, str(guest.path)) as clock:
        done = correct(clock)
        assert done.action == "slew" and done.amount_s == pytest.approx(-0.040, abs=0.003)
        # While it runs, the guest reports what the slew has yet to take away.
        running = clock.measure()
        assert running.slewing_s < 0
        assert abs(running.settled_offset_s) <= running.error_s + SLACK_S
        assert correct(clock).action == "none"  # a running slew is not corrected again
    assert guest.clock.ticks_set == [9500]  # 5 % slow
    poll(lambda: guest.clock.ticks_set == [9500, 10000], what="the slew to end and the tick to be put back")
    assert abs(guest.clock.offset_s) <= done.measured.error_s + SLACK_S


def test_a_right_clock_is_left_alone(link, guest):
    with GuestClock(link, str(guest.path)) as clock:
        assert correct(clock).action == "none"
    assert guest.clock.ticks_set == []


def test_sync_now_steps_even_a_small_offset(link, guest):
    guest.clock.set_offset(0.2)
    result = ClockSync(link, socket_path=str(guest.path), check_interval_s=3600).sync_now("restored a snapshot")
    assert result.correction.action == "step" and result.reason == "restored a snapshot"
    assert result.offset_s == pytest.approx(0.2, abs=result.correction.measured.error_s + SLACK_S)
    assert abs(guest.clock.offset_s) <= result.correction.measured.error_s + SLACK_S


def test_start_steps_the_clock_at_once(link, guest):
    guest.clock.set_offset(-8.5)  # what `date -s` over SSH used to leave after a boot
    cs = _clock_sync(link, guest, check_interval_s=3600)
    cs.start()
    try:
        poll(lambda: cs.sync_count == 1, what="the step at start")
        assert cs.last_result.reason == "clock sync started"
        assert abs(guest.clock.offset_s) <= cs.last_result.correction.measured.error_s + SLACK_S
    finally:
        cs.stop()


def test_periodic_check_brings_a_drifted_clock_back(link, guest):
    cs = _clock_sync(link, guest, check_interval_s=0.2, sync_on_start=False)
    cs.start()
    try:
        guest.clock.set_offset(0.3)  # drifted (or set by hand): slewed, not stepped
        poll(lambda: cs.last_result is not None and cs.last_result.correction.action == "slew",
             what="a periodic check to slew")
        poll(lambda: abs(guest.clock.offset_s) < 0.005, timeout=60, what="the slew to bring the clock back")
        guest.clock.set_offset(-2.0)
        poll(lambda: cs.last_result.correction.action == "step", what="a periodic check to step")
        assert abs(guest.clock.offset_s) < 0.005 + cs.last_result.correction.measured.error_s
        assert cs.sync_count == 0 and cs.check_count >= 2
    finally:
        cs.stop()


def test_no_jump_no_sync(link, guest):
    clocks = FakeClocks()
    cs = _clock_sync(link, guest, clocks, check_interval_s=3600)
    clocks.advance(5)
    assert cs.check() is None
    clocks.advance(5, suspended=1.0)  # below the 2 s threshold: normal jitter
    assert cs.check() is None and cs.sync_count == 0


def test_host_suspend_is_detected_and_the_guest_clock_stepped(link, guest):
    clocks = FakeClocks()
    cs = _clock_sync(link, guest, clocks, check_interval_s=3600)
    guest.clock.set_offset(-3600)  # the VM was frozen while the host slept
    clocks.advance(5, suspended=3600)
    result = cs.check()
    assert result is not None and "jumped +3600.0 s" in result.reason
    assert result.correction.action == "step"
    assert abs(guest.clock.offset_s) <= result.correction.measured.error_s + SLACK_S
    assert cs.check() is None  # the jump is consumed


def test_backward_host_step_is_detected(link, guest):
    clocks = FakeClocks()
    cs = _clock_sync(link, guest, clocks, check_interval_s=3600)
    clocks.advance(5, suspended=-30)
    assert cs.check() is not None and cs.sync_count == 1


def test_reconnect_triggers_a_step_in_the_background(link, sshd, guest):
    cs = _clock_sync(link, guest, check_interval_s=3600, sync_on_start=False)
    cs.start()
    try:
        guest.clock.set_offset(5.0)
        old = link.transport()
        sshd.kill_sessions()
        poll(lambda: not old.is_active(), what="the transport to die")
        assert link.run("true")[0] == 0  # reconnects, which wakes the clock thread
        poll(lambda: cs.sync_count == 1, what="a clock step after the reconnect")
        assert cs.last_result.reason == "SSH link reconnected"
        assert abs(guest.clock.offset_s) <= cs.last_result.correction.measured.error_s + SLACK_S
    finally:
        cs.stop()


def test_a_guest_without_the_service_is_reported_not_fatal(link, tmp_path, caplog):
    missing = str(tmp_path / "no-clock.sock")
    with pytest.raises(ChannelOpenRefused):
        ClockSync(link, socket_path=missing, check_interval_s=3600).sync_now()
    cs = ClockSync(link, socket_path=missing, check_interval_s=3600)
    cs.start()  # logs once and goes on: an older guest image has no clock service
    try:
        poll(lambda: "the guest has no clock service" in caplog.text, what="the missing service to be reported")
        assert cs.sync_count == 0 and cs.last_result is None
    finally:
        cs.stop()


def test_service_refusals_are_errors_not_hangs(link, guest):
    with GuestClock(link, str(guest.path)) as clock:
        with pytest.raises(GuestClockError, match="unknown request"):
            clock.request("reboot")
        with pytest.raises(GuestClockError, match="step instead"):
            clock.slew(60)
        with pytest.raises(GuestClockError, match="invalid literal"):
            clock.request("step soon")
        assert abs(clock.measure().offset_s) < 0.1  # the session still works
