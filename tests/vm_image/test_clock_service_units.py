"""The guest clock service on this host: adjtimex's struct layout read for real, the socket's limits.

Reading adjtimex (no mode bits) changes nothing, so the ctypes layout is
checked against this host's kernel; what sets the clock runs in the VM tests.
"""

from __future__ import annotations

import os
import socket
import stat

from tests.support.simulated_guest_clock import ServedGuestClock
from tests.support.waiting import poll
from vmimage.guest_init import clock_service, timex


def test_adjtimex_layout_reads_the_kernel_tick():
    # The tick is 1/USER_HZ seconds in microseconds unless someone slews it.
    assert timex.read_tick() == 1_000_000 // os.sysconf("SC_CLK_TCK")
    state = timex._adjtimex(0)
    assert state.tolerance == 500 << 16  # the kernel's MAXFREQ in its scaled ppm: the fields line up
    assert abs(state.time.tv_sec - int(__import__("time").time())) <= 1


def _connect(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def test_socket_is_root_only_and_answers_lines(tmp_path):
    served = ServedGuestClock(tmp_path / "clock.sock", offset_s=2.0)
    try:
        assert stat.S_IMODE(os.stat(served.path).st_mode) == 0o600
        with _connect(served.path) as sock:
            sock.sendall(b"now\nnow\n")  # two requests in one packet: two replies
            data = b""
            while data.count(b"\n") < 2:
                data += sock.recv(4096)
        assert data.count(b'"slewing_ns":0') == 2
    finally:
        served.stop()


def test_overlong_lines_and_extra_clients_are_dropped(tmp_path):
    served = ServedGuestClock(tmp_path / "clock.sock")
    try:
        with _connect(served.path) as sock:
            sock.sendall(b"x" * (clock_service.MAX_LINE + 1))
            assert sock.recv(100) == b""  # closed, nothing answered
        held = [_connect(served.path) for _ in range(clock_service.MAX_CLIENTS)]
        try:
            for sock in held:  # each is served
                sock.sendall(b"now\n")
                assert sock.recv(4096).startswith(b'{"ns":')
            with _connect(served.path) as extra:
                assert extra.recv(100) == b""  # over the limit: closed at once
        finally:
            for sock in held:
                sock.close()
        poll(lambda: not served.service.clients, what="the service to drop the closed clients")
    finally:
        served.stop()
