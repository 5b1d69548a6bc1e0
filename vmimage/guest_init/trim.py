"""When to trim the data disk, so that blocks freed in the guest are freed on the host too.

The host's data disk is a qcow2 file attached with discard=unmap: a discard
from the guest frees the clusters and punches a hole in the file. ext4 is
mounted without `-o discard` (a discard per deleted extent is slow under TCG),
so freed blocks are discarded in batches by fstrim. The init asks `due()` on
its existing once-a-minute wakeup: a statvfs and one sysfs read when nothing
happened, no timer of its own, so an idle guest stays idle.
"""

from __future__ import annotations

import os

from .layout import DATA_MOUNT

# Below this much freed space a trim is not worth a process start under TCG.
MIN_FREED_BYTES = 64 << 20
# ext4's count of bytes written to the data disk (vdb) since it was mounted.
WRITTEN_KB = "/sys/fs/ext4/vdb/lifetime_write_kbytes"


def used_bytes(mountpoint: str) -> int:
    st = os.statvfs(mountpoint)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def written_bytes(path: str = WRITTEN_KB) -> int:
    with open(path) as f:
        return int(f.read()) * 1024


class TrimSchedule:
    """Decides when freed space on `mountpoint` is worth an fstrim.

    Space freed since the last trim is what was written since then minus how
    much the used space grew: a file written and deleted between two checks
    counts, and so does deleting data older than the last trim. Overwrites and
    the journal make it an overestimate, which only costs an fstrim that finds
    little to do (ext4 skips block groups with no frees since its last trim).
    The first call only takes the measure: the first fstrim after a mount walks
    every block group (ext4 remembers trimmed groups per mount only), seconds of
    CPU under TCG for an 8 GB disk, which an idle boot should not pay.
    """

    def __init__(self, mountpoint: str = DATA_MOUNT, written_path: str = WRITTEN_KB,
                 min_freed: int = MIN_FREED_BYTES) -> None:
        self.mountpoint = mountpoint
        self.written_path = written_path
        self.min_freed = min_freed
        self.mark: tuple[int, int] | None = None   # (written, used) at the last trim

    def due(self) -> bool:
        """True when a trim should run now (the caller runs it: `argv()`)."""
        try:
            return self.observe(written_bytes(self.written_path), used_bytes(self.mountpoint))
        except (OSError, ValueError):
            return False

    def observe(self, written: int, used: int) -> bool:
        """The decision for these counters now; a due trim resets the mark."""
        if self.mark is not None and (written - self.mark[0]) - (used - self.mark[1]) < self.min_freed:
            return False
        first = self.mark is None
        self.mark = (written, used)
        return not first

    def argv(self) -> list[str]:
        return ["fstrim", "--verbose", self.mountpoint]
