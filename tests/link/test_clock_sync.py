"""ClockSync: jump detection with an injected clock, commands run through a real sshd.

The test sshd runs on this machine, so really setting its clock would set
the host's: the tests swap `date -s` for `date -d ... +%s.%N`, a real remote
command whose output shows exactly which time would have been set.
"""

from __future__ import annotations

from desktop.clock_sync import SET_CLOCK_COMMAND, ClockSync
from tests.support.waiting import poll

PRINT_COMMAND = "date -u -d @{seconds} +%s.%N"


class FakeClocks:
    """A wall clock and a monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 5_000.0

    def advance(self, seconds: float, suspended: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + suspended


def _clock_sync(link, clocks, **kw):
    return ClockSync(link, wall_clock=lambda: clocks.wall, monotonic=lambda: clocks.mono,
                     command_template=PRINT_COMMAND, **kw)


def test_default_command_sets_the_clock():
    assert SET_CLOCK_COMMAND.format(seconds="12.5") == "date -u -s @12.5"


def test_no_jump_no_sync(link):
    clocks = FakeClocks()
    cs = _clock_sync(link, clocks)
    clocks.advance(5)
    assert cs.check() is None
    clocks.advance(5, suspended=1.0)  # below the 2 s threshold: normal jitter
    assert cs.check() is None and cs.sync_count == 0


def test_suspend_is_detected_and_guest_clock_set(link):
    clocks = FakeClocks()
    cs = _clock_sync(link, clocks)
    clocks.advance(5, suspended=3600)
    result = cs.check()
    assert result is not None and "jumped +3600.0 s" in result.reason
    assert result.exit_status == 0
    # The remote command received exactly the host's current wall time.
    assert result.output.decode().strip() == f"{clocks.wall:.9f}"
    assert cs.check() is None  # the jump is consumed


def test_backward_step_is_detected(link):
    clocks = FakeClocks()
    cs = _clock_sync(link, clocks)
    clocks.advance(5, suspended=-30)
    assert cs.check() is not None


def test_failing_command_is_reported(link):
    clocks = FakeClocks()
    cs = ClockSync(link, wall_clock=lambda: clocks.wall, monotonic=lambda: clocks.mono,
                   command_template="date -u -s @{seconds} --no-such-option")
    result = cs.sync_now()
    assert result.exit_status != 0 and b"option" in result.output


def test_reconnect_triggers_sync_in_background(link, sshd):
    clocks = FakeClocks()
    cs = _clock_sync(link, clocks, check_interval_s=3600, sync_on_start=False)
    cs.start()
    try:
        old = link.transport()
        sshd.kill_sessions()
        poll(lambda: not old.is_active(), what="the transport to die")
        assert link.run("true")[0] == 0  # reconnects, which wakes the clock thread
        poll(lambda: cs.sync_count == 1, what="a clock sync after the reconnect")
        assert cs.last_result.reason == "SSH link reconnected"
        assert cs.last_result.output.decode().strip() == f"{clocks.wall:.9f}"
    finally:
        cs.stop()


def test_background_thread_detects_a_jump(link):
    clocks = FakeClocks()
    cs = _clock_sync(link, clocks, check_interval_s=0.05, sync_on_start=False)
    cs.start()
    try:
        clocks.advance(1, suspended=120)
        poll(lambda: cs.sync_count >= 1, what="the periodic check to sync")
        assert "jumped +120.0 s" in cs.last_result.reason
    finally:
        cs.stop()


def test_start_syncs_once(link):
    clocks = FakeClocks()
    cs = _clock_sync(link, clocks, check_interval_s=3600)
    cs.start()
    try:
        poll(lambda: cs.sync_count == 1, what="the initial sync")
        assert cs.last_result.reason == "clock sync started"
        assert cs.last_result.output.decode().strip() == f"{clocks.wall:.9f}"
    finally:
        cs.stop()
