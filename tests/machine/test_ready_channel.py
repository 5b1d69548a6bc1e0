"""The ready channel reader against a real unix socket standing in for QEMU's chardev.

QEMU itself is exercised by the vm tests; here the peer is a socketpair so the
protocol cases (noise, early events, a VM that dies, odd fields) are explicit.
"""

from __future__ import annotations

import json
import socket

import pytest

from desktop.machine.ready_channel import ReadyChannel, console_problem, parse_ready
from runtime.errors import RuntimeFailure

READY = {"event": "ready", "host_keys": {"ssh-ed25519": "AAAAC3Nz"}, "timings": {"kernel_s": 1.5, "note": "x"},
         "agent_socket": "/run/dockyard/docker.sock", "errors": []}


def _pair() -> tuple[ReadyChannel, socket.socket]:
    host, guest = socket.socketpair()
    return ReadyChannel(host), guest


def test_ready_after_noise_and_other_events():
    chan, guest = _pair()
    guest.sendall(b"\x00garbage from a previous boot\n" + json.dumps({"event": "hello"}).encode() + b"\n"
                  + json.dumps(READY).encode()[:10])
    guest.sendall(json.dumps(READY).encode()[10:] + b"\n")
    ready = chan.wait_ready(timeout=5)
    assert ready.host_key_line() == "ssh-ed25519 AAAAC3Nz"
    assert ready.timings == {"kernel_s": 1.5}  # non-numeric timings dropped
    guest.sendall(json.dumps({"event": "agent-exited", "code": 1}).encode() + b"\n")
    guest.close()
    events = []
    chan.follow(events.append)  # returns when the VM closes the channel
    assert events == [{"event": "agent-exited", "code": 1}]


def test_sshd_ready_is_passed_on_before_ready_and_a_bad_one_is_ignored():
    chan, guest = _pair()
    early = {"event": "sshd-ready", "host_keys": {"ssh-ed25519": "AAAAC3Nz"}, "timings": {"sshd_s": 3.2}}
    for event in ({"event": "sshd-ready", "host_keys": "nope"}, early, READY):
        guest.sendall(json.dumps(event).encode() + b"\n")
    seen = []
    ready = chan.wait_ready(timeout=5, on_sshd_ready=lambda ev: seen.append((ev.host_key_line(), ev.timings)))
    assert seen == [("ssh-ed25519 AAAAC3Nz", {"sshd_s": 3.2})]
    assert ready.host_key_line() == "ssh-ed25519 AAAAC3Nz"
    # Without a callback (or from an older guest without the event) "ready" alone still does.
    chan, guest = _pair()
    guest.sendall(json.dumps(early).encode() + b"\n" + json.dumps(READY).encode() + b"\n")
    assert chan.wait_ready(timeout=5).timings == {"kernel_s": 1.5}


def test_vm_that_dies_during_boot_fails_at_once_with_console_hint(tmp_path):
    console = tmp_path / "console.log"
    console.write_text("[ 1.0] booting\n[ 3.0] Kernel panic - not syncing: Attempted to kill init!\n[ 3.1] CPU: 1\n")
    chan, guest = _pair()
    guest.close()
    with pytest.raises(RuntimeFailure, match=r"closed its ready channel.*Kernel panic - not syncing"):
        chan.wait_ready(timeout=60, console_log=console)


def test_timeout(tmp_path):
    chan, _guest = _pair()
    with pytest.raises(RuntimeFailure, match="did not report ready within 0 s"):
        chan.wait_ready(timeout=0.01, console_log=tmp_path / "missing.log")


def test_missing_host_key():
    with pytest.raises(RuntimeFailure, match="no host_keys"):
        parse_ready({"event": "ready", "host_keys": "nope"})
    with pytest.raises(RuntimeFailure, match="no ssh-ed25519"):
        parse_ready({"event": "ready", "host_keys": {"ssh-rsa": "AAAA"}}).host_key_line()


def test_console_problem_prefers_error_lines(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("a\nmount: cannot find device\nlast line\n")
    assert console_problem(log) == "mount: cannot find device"
    log.write_text("a\nlast line\n")
    assert console_problem(log) == "last line"


def _answer_resume(guest: socket.socket, answer: dict) -> str:
    """Read the host's "resumed" line as the guest init does, then answer it after another event."""
    line = guest.recv(4096).decode()
    guest.sendall(json.dumps({"event": "agent-exited", "code": 0}).encode() + b"\n"
                  + json.dumps(answer).encode() + b"\n")
    return line


def test_a_resume_is_announced_with_the_host_time_and_the_answer_read():
    chan, guest = _pair()
    import threading
    import time

    before = time.time()
    seen: list[str] = []
    answer = {"event": "resumed", "seconds": "1", "shares": ["/Users/me"], "errors": []}
    peer = threading.Thread(target=lambda: seen.append(_answer_resume(guest, answer)))
    peer.start()
    report = chan.announce_resume(timeout=5)
    peer.join()
    verb, seconds = seen[0].split()
    assert verb == "resumed" and before <= float(seconds) <= time.time()
    assert report.clock_stepped and report.errors == []


@pytest.mark.parametrize(("answer", "stepped", "errors"), [
    ({"event": "resumed", "clock_error": "EPERM", "shares": [], "errors": []}, False, []),
    ({"event": "resumed", "shares": [], "errors": ["share dyshare0 at /x: [Errno 2]"]}, True,
     ["share dyshare0 at /x: [Errno 2]"]),
])
def test_a_resume_answer_reports_the_clock_and_the_shares_apart(answer, stepped, errors):
    chan, guest = _pair()
    import threading

    peer = threading.Thread(target=_answer_resume, args=(guest, answer))
    peer.start()
    report = chan.announce_resume(timeout=5)
    peer.join()
    assert (report.clock_stepped, report.errors) == (stepped, errors)


def test_a_resume_nobody_answers_is_an_error():
    chan, guest = _pair()
    guest.close()
    report = chan.announce_resume(timeout=5)
    assert not report.clock_stepped
    assert report.errors and "did not answer" in report.errors[0]
