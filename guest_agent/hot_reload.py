"""`python3 -m guest_agent.hot_reload [SHARED_FOLDER...]`: host changes to shared folders become inotify events here.

9p and virtiofs carry no change notifications from the host, so a watcher in a
container (nodemon, webpack, uvicorn --reload, air) never hears of an edit made
on the host. The host's watcher (desktop/share_watch.py) sends what changed over
the SSH link, to this helper's stdin, one JSON line per batch:

    {"root": "/home/me/app", "items": [["src/app.py", 1733380000123456789], ["", 1733...]]}

Each item is a path relative to the shared folder's mount point ("" is the folder
itself) and the mtime (ns) the host saw. For each, the helper re-applies the
file's own mtime (runtime/linux/file_events.set_mtime), so the guest kernel raises
IN_MODIFY on it for every watcher in every container that mounts it. Nothing of
the file changes: the time written is the time it already has.

An item is left alone when:
* the path is gone ("gone"): a later change removed it, and its parent's item says so;
* its mtime is not the one the host saw ("stale"): a newer change is on its way;
* a process in the guest wrote exactly that state ("echo"): its watchers already saw
  that write as it happened; re-raising it would echo it back (fanotify tells).

After each batch the helper answers one JSON line with those counts and "applied".
It runs as root (fanotify needs CAP_SYS_ADMIN); without fanotify it still works,
with no echo detection.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
from collections import OrderedDict

from runtime.linux.file_events import WriteWatch, fresh_stat, set_mtime

log = logging.getLogger("dockyard-hot-reload")

# The guest-written states remembered for echo detection (dev, ino -> mtime_ns).
WRITTEN_LIMIT = 65536


class Applier:
    """Applies batches of host changes; remembers what the guest wrote itself."""

    def __init__(self, watch: WriteWatch | None) -> None:
        self.watch = watch
        self.marked: set[str] = set()
        self.written: OrderedDict[tuple[int, int], int] = OrderedDict()

    def record_writes(self) -> None:
        if self.watch is None:
            return
        for dev, ino, mtime in self.watch.drain():
            self.written[(dev, ino)] = mtime
            self.written.move_to_end((dev, ino))
        while len(self.written) > WRITTEN_LIMIT:
            self.written.popitem(last=False)

    def mark(self, root: str) -> None:
        if self.watch is None or root in self.marked:
            return
        try:
            self.watch.watch_filesystem(root)
        except OSError as err:
            log.warning("no echo detection on %s: %s", root, err)
        self.marked.add(root)

    def apply(self, root: str, items: list[list[object]]) -> dict[str, int]:
        self.mark(root)
        # The guest's own writes were queued by the kernel as they happened, long
        # before the host saw them and sent them back here: read them first.
        self.record_writes()
        counts = {"applied": 0, "echo": 0, "stale": 0, "gone": 0, "refused": 0}
        for item in items:
            rel, mtime_ns = item if len(item) == 2 else ("", None)
            parts = rel.split("/") if isinstance(rel, str) and rel else []
            if not isinstance(rel, str) or any(part in ("", ".", "..") for part in parts) \
                    or not isinstance(mtime_ns, int):
                counts["refused"] += 1
                continue
            path = os.path.join(root, *parts)
            try:
                dev, ino, mtime_now = fresh_stat(path)
            except OSError:
                counts["gone"] += 1
                continue
            if mtime_now != mtime_ns:
                counts["stale"] += 1
            elif self.written.get((dev, ino)) == mtime_ns:
                counts["echo"] += 1
            else:
                try:
                    set_mtime(path, mtime_ns)
                    counts["applied"] += 1
                except OSError:
                    counts["gone"] += 1
        return counts


def serve(stdin: int, stdout: int, roots: list[str]) -> None:
    try:
        watch: WriteWatch | None = WriteWatch()
    except OSError as err:
        log.warning("fanotify unavailable, guest writes may be echoed: %s", err)
        watch = None
    applier = Applier(watch)
    for root in roots:  # before "ready": a guest write from then on is known
        applier.mark(root)
    os.write(stdout, b'{"ready": true}\n')
    fds = [stdin] + ([watch.fd] if watch is not None else [])
    pending = b""
    while True:
        readable, _, _ = select.select(fds, [], [])
        if watch is not None and watch.fd in readable:
            applier.record_writes()
        if stdin not in readable:
            continue
        data = os.read(stdin, 1 << 20)
        if not data:
            return  # the host closed the channel
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
                counts = applier.apply(str(message["root"]), list(message["items"]))
            except (ValueError, KeyError, TypeError) as err:
                counts = {"error": 1}
                log.warning("bad batch: %s", err)
            os.write(stdout, json.dumps(counts).encode() + b"\n")


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="hot-reload: %(message)s")
    serve(0, 1, sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
