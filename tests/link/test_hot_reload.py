"""The hot-reload forwarder over a real SSH link, with the guest helper run by the local sshd.

Here "host" and "guest" are one machine and the shared folder is the same
directory on both sides, so two things differ from the VM (where
tests/machine/test_vm_hot_reload.py checks the real thing):
* a content write by this test is seen by the helper's fanotify as a write made
  "in the guest": it counts as an echo and is not raised again;
* a change of times only (os.utime) is no write for fanotify: the helper re-applies
  it, which raises IN_MODIFY that a local inotify watch sees, and which the host's
  watcher then sees as a change of nothing (suppressed, not sent back).
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import sys
from pathlib import Path

import pytest

from desktop.hot_reload import HotReloadForwarder
from tests.support.waiting import poll

REPO = Path(__file__).resolve().parents[2]
HELPER = f"PYTHONPATH={REPO} exec {sys.executable} -S -m guest_agent.hot_reload"
IN_MODIFY = 0x2
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class Inotify:
    """A plain inotify watch on one directory: the (mask, name) events it got."""

    def __init__(self, directory: Path) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0 and _libc.inotify_add_watch(self.fd, str(directory).encode(), 0xFFF) >= 0
        self.events: list[tuple[int, str]] = []

    def read(self) -> list[tuple[int, str]]:
        while select.select([self.fd], [], [], 0)[0]:
            buf = os.read(self.fd, 65536)
            offset = 0
            while offset < len(buf):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", buf, offset)
                name = buf[offset + 16: offset + 16 + length].rstrip(b"\0").decode()
                self.events.append((mask, name))
                offset += 16 + length
        return self.events

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    (root / "app.py").write_text("print(1)\n")
    (root / "marker").write_text("")
    return root


@pytest.fixture
def forwarder(link, share, tmp_path):
    fw = HotReloadForwarder(link, [(str(share), str(share))], set(), tmp_path / "hot_reload.json",
                            guest_command=HELPER)
    fw.start()
    poll(lambda: fw.channel_starts == 1, what="the guest helper started")
    yield fw
    fw.stop()


def _touch(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _mark(fw: HotReloadForwarder, path: Path) -> int:
    """Change `path`'s times and wait until the guest applied it: earlier batches are done."""
    applied = fw.counts["applied"]
    _touch(path, 1_600_000_000_000_000_000 + applied)
    poll(lambda: fw.counts["applied"] > applied, what=f"{path.name} applied in the guest")
    return fw.forwarded


def test_a_host_change_is_raised_as_in_modify_and_its_echo_is_not_sent_back(forwarder, share):
    watch = Inotify(share)
    try:
        _touch(share / "app.py", 1_700_000_000_123_456_789)
        poll(lambda: forwarder.counts["applied"] == 1, what="the change applied in the guest")
        # The host's utime gave IN_ATTRIB; IN_MODIFY is the helper's re-applied mtime.
        assert (IN_MODIFY, "app.py") in watch.read()
        assert (share / "app.py").stat().st_mtime_ns == 1_700_000_000_123_456_789
        # Applying it touched the file on the host: the watcher saw that, found nothing new.
        poll(lambda: forwarder.snapshots.suppressed >= 1, what="the echo seen and suppressed")
        before = forwarder.forwarded
        assert _mark(forwarder, share / "marker") == before + 1
    finally:
        watch.close()


def test_a_write_made_on_the_guest_side_is_not_raised_again(forwarder, share):
    (share / "app.py").write_text("print(2)\n")   # fanotify sees this process write it
    poll(lambda: forwarder.counts["echo"] >= 1, what="the write recognised as the guest's own")
    assert forwarder.counts["applied"] == 0


def test_a_burst_of_a_thousand_edits_is_coalesced(forwarder, share):
    for i in range(1000):
        _touch(share / "app.py", 1_700_000_000_000_000_000 + i)
    sent = _mark(forwarder, share / "marker") - 1
    assert 1 <= sent <= 50
    assert forwarder.batches <= 51


def test_changes_made_while_the_link_is_down_arrive_after_the_reconnect(forwarder, link, share):
    _mark(forwarder, share / "app.py")
    assert forwarder.channel_starts == 1
    link.transport().close()              # the guest "restarted": the helper's channel is gone
    (share / "later.txt").write_bytes(b"")
    _touch(share / "later.txt", 1_650_000_000_000_000_000)
    poll(lambda: forwarder.channel_starts == 2 and forwarder.counts["applied"] >= 2,
         what="the change applied over a new channel")


def test_a_share_switched_off_is_not_watched(link, share, tmp_path):
    stats = tmp_path / "hot_reload.json"
    fw = HotReloadForwarder(link, [(str(share), str(share))], {str(share)}, stats, guest_command=HELPER)
    fw.start()
    try:
        _touch(share / "app.py", 1_700_000_000_000_000_000)
        assert fw._thread is None and fw.channel_starts == 0
        import json

        shown = json.loads(stats.read_text())
        assert shown["shares"][str(share)] == {"forwarding": "off (setting)", "forwarded": 0}
    finally:
        fw.stop()


def test_status_file_counts_what_was_forwarded(forwarder, share, tmp_path):
    import json

    _mark(forwarder, share / "app.py")
    stats = tmp_path / "hot_reload.json"
    shown = poll(lambda: (json.loads(stats.read_text()) if stats.exists() else {}).get("applied") == 1
                 and json.loads(stats.read_text()), what="the stats file updated")
    assert shown["shares"][str(share)] == {"forwarding": "on", "forwarded": 1}
