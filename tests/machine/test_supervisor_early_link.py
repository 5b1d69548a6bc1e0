"""The supervisor's early SSH connect: started on "sshd-ready", kept when "ready" pins the same key.

The link is a stand-in here (a real SSH connect to a guest is covered by the vm
tests); what is checked is the hand-over between the event and `_connect`.
"""

from __future__ import annotations

import threading

from desktop.machine.ready_channel import ReadyEvent
from desktop.machine.supervisor import Supervisor

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ39FD283"


class FakeLink:
    def __init__(self, host_key: str, fail: bool = False, block: threading.Event | None = None) -> None:
        self.host_key_type, self.host_key_b64 = host_key.split()[:2]
        self.fail = fail
        self.block = block
        self.is_connected = False
        self.closed = False
        self.connects = 0

    def connect(self, timeout: float = 10) -> None:
        self.connects += 1
        if self.block is not None:
            self.block.wait(5)
        if self.fail:
            raise OSError("connection refused")
        self.is_connected = True

    def close(self) -> None:
        self.closed = True
        self.is_connected = False


def _supervisor(links: list[FakeLink]) -> Supervisor:
    sup = Supervisor.__new__(Supervisor)  # no machine on disk needed for this part
    sup._early_link = None
    sup._early_thread = None
    sup._new_link = lambda port, host_key: links.pop(0)  # type: ignore[method-assign]  # the test stands in for the SSH dial
    return sup


def test_early_link_is_connected_on_sshd_ready_and_kept_for_the_same_key():
    link = FakeLink(KEY)
    sup = _supervisor([link])
    sup._connect_early(2222, ReadyEvent(host_keys={"ssh-ed25519": KEY.split()[1]}), timeout=30)
    sup._connect_early(2222, ReadyEvent(host_keys={"ssh-ed25519": KEY.split()[1]}), timeout=30)  # once only
    assert sup._take_early_link(KEY, timeout=30) is link
    assert link.connects == 1 and not link.closed


def test_early_link_is_dropped_when_ready_pins_another_key_or_it_failed():
    for link, pinned in ((FakeLink(KEY), "ssh-ed25519 AAAAotherkey"), (FakeLink(KEY, fail=True), KEY)):
        sup = _supervisor([link])
        sup._connect_early(2222, ReadyEvent(host_keys={"ssh-ed25519": KEY.split()[1]}), timeout=30)
        assert sup._take_early_link(pinned, timeout=30) is None
        assert link.closed


def test_no_early_link_without_an_ed25519_key_or_without_the_event():
    sup = _supervisor([])
    sup._connect_early(2222, ReadyEvent(host_keys={"ssh-rsa": "AAAA"}), timeout=30)
    assert sup._early_thread is None
    assert sup._take_early_link(KEY, timeout=30) is None
