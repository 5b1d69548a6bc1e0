"""The host watcher of shared folders (desktop/share_watch.py) on real inotify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from desktop.share_watch import ChangeSet, ShareWatch, Snapshots, Watchers

REPO = Path(__file__).resolve().parents[2]

# Run in a user namespace whose inotify watch limit (user.max_inotify_watches, per
# namespace since Linux 5.11) is 10: the real limit of the machine is left alone.
LIMITED = """
import json, sys
from desktop.share_watch import ChangeSet, ShareWatch, Watchers
with open("/proc/sys/user/max_inotify_watches", "w") as f:
    f.write("10")
shares = [ShareWatch(p, p, state="on") for p in sys.argv[1:]]
changes = ChangeSet()
watchers = Watchers(shares, changes)
watchers.start()
with open(sys.argv[2] + "/f", "w") as f:
    f.write("x")
seen = changes.wait(10) and changes.take()
watchers.stop()
print(json.dumps({"states": [s.state for s in shares], "seen": seen}))
"""


def test_a_folder_over_the_inotify_watch_limit_is_turned_off_alone(tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    for i in range(30):
        (big / f"d{i}").mkdir(parents=True)
    small.mkdir()
    out = subprocess.run(["unshare", "-U", "-r", sys.executable, "-c", LIMITED, str(big), str(small)],
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["states"][0].startswith("off: the inotify watch limit")
    assert "max_user_watches" in result["states"][0]
    assert result["states"][1] == "on"
    assert result["seen"] == [[1, str(small / "f")]]


def test_changes_are_coalesced_per_path(tmp_path):
    shares = [ShareWatch(str(tmp_path), str(tmp_path), state="on")]
    changes = ChangeSet()
    watchers = Watchers(shares, changes)
    watchers.start()
    try:
        for i in range(200):
            (tmp_path / "f").write_text(str(i))
        (tmp_path / "g").write_text("last")
        (tmp_path / "f").unlink()
        from tests.support.waiting import poll

        poll(lambda: (0, str(tmp_path)) in changes.pending(), what="the deletion seen")
        # f's 200 writes and its deletion: f once, g once, and the folder (f's parent) for the deletion.
        assert changes.take() == [(0, str(tmp_path / "f")), (0, str(tmp_path / "g")), (0, str(tmp_path))]
    finally:
        watchers.stop()


def test_a_state_already_sent_is_not_sent_again(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    snaps = Snapshots()
    first = snaps.changed(str(f))
    assert first == f.stat().st_mtime_ns
    import os

    os.utime(f, ns=(0, first))   # what the guest's re-application does: the same mtime again
    assert snaps.changed(str(f)) is None and snaps.suppressed == 1
    f.write_text("y")
    assert snaps.changed(str(f)) == f.stat().st_mtime_ns
    f.unlink()
    assert snaps.changed(str(f)) is None
