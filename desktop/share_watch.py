"""Host-side watchers of shared folders: which paths changed, coalesced, minus our own echoes.

One watchdog `Observer` watches every shared folder recursively while the
machine runs. watchdog uses the platform's native notifications (inotify on
Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows); there is no polling,
so an idle tree costs nothing. On Linux, inotify needs one watch per directory:
watchdog adds them once, walking the tree a single time at start (and each new
directory as it appears), and never walks again. Each watch counts against
/proc/sys/fs/inotify/max_user_watches (Linux-only; a per-user limit shared by
every program of the user); when the limit is hit, that share is left
unwatched, and `ShareWatch.state` says so with the limit and how to raise it.

Events only name paths: `ChangeSet` keeps the set of changed paths. A burst of
writes to one file is one entry until the forwarder takes the set, which it
does at most once per debounce window, so a burst of N edits becomes one item
per window, not N. When it takes them, `Snapshots.changed` stats each path and
drops those whose state (inode, size, mtime, mode) is exactly the one last sent:
the guest re-applying a file's own mtime through the share (desktop/hot_reload.py)
shows up here as a change, but of nothing, and is not sent back.

What an item is, per kind of change on the host (the guest raises IN_MODIFY on
each item; see guest_agent/hot_reload.py):
* created or modified file or directory: the path itself;
* deleted: its parent directory;
* moved: the destination, and the source's parent directory.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Path states remembered for echo suppression; an evicted entry costs at most one echo.
SNAPSHOT_LIMIT = 65536
MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"


@dataclass
class ShareWatch:
    """One watched shared folder and what happened to its watch."""

    host_path: str
    guest_path: str
    state: str = "off"             # "on", "off (setting)", "off: <why>"
    forwarded: int = 0


class ChangeSet:
    """Changed paths per share, coalesced, in the order first seen; thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paths: dict[tuple[int, str], None] = {}
        self.first_at = 0.0

    def add(self, share: int, path: str) -> None:
        with self._cond:
            if not self._paths:
                self.first_at = time.monotonic()
            self._paths[(share, path)] = None
            self._cond.notify_all()

    def wait(self, timeout: float | None) -> bool:
        """Until something changed (or `timeout`); whether anything did."""
        with self._cond:
            if not self._paths:
                self._cond.wait(timeout)
            return bool(self._paths)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> list[tuple[int, str]]:
        """The changed paths not taken yet (a copy)."""
        with self._cond:
            return list(self._paths)

    def take(self) -> list[tuple[int, str]]:
        with self._cond:
            taken = list(self._paths)
            self._paths.clear()
            return taken


def _handler(changes: ChangeSet, share: int) -> Any:
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        """Turns watchdog events into changed paths (see the module docstring)."""

        def on_any_event(self, event: Any) -> None:
            src = os.fsdecode(event.src_path)
            kind = event.event_type
            # "attrib" (a change of times or mode, as `touch` makes) is its own kind since watchdog 7.
            if kind in ("created", "modified", "attrib"):
                changes.add(share, src)
            elif kind == "deleted":
                changes.add(share, os.path.dirname(src))
            elif kind == "moved":
                changes.add(share, os.fsdecode(event.dest_path))
                changes.add(share, os.path.dirname(src))

    return Handler()


def event_filter() -> list[Any]:
    """The watchdog events that matter; it then asks inotify for only those (no open/close noise)."""
    from watchdog import events

    wanted = ["FileCreatedEvent", "FileModifiedEvent", "FileDeletedEvent", "FileMovedEvent",
              "DirCreatedEvent", "DirDeletedEvent", "DirMovedEvent",
              # watchdog 7 reports a change of times or mode apart from a modification.
              "FileAttribEvent", "DirAttribEvent"]
    return [getattr(events, name) for name in wanted if hasattr(events, name)]


def watch_limit() -> int | None:
    """The inotify watch limit (Linux), or None elsewhere or when unreadable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return int(Path(MAX_USER_WATCHES).read_text().strip())
    except (OSError, ValueError):
        return None


class Watchers:
    """A watchdog observer per shared folder, feeding one `ChangeSet`.

    One observer each, so that a folder whose watches do not fit is turned off
    alone while the others keep forwarding.
    """

    def __init__(self, shares: list[ShareWatch], changes: ChangeSet) -> None:
        self.shares = shares
        self.changes = changes
        self._observers: list[Any] = []

    def start(self) -> None:
        from watchdog.observers import Observer

        for index, share in enumerate(self.shares):
            if share.state != "on":
                continue
            observer = Observer()
            try:
                observer.schedule(_handler(self.changes, index), share.host_path, recursive=True,
                                  event_filter=event_filter())
                # Starting walks the tree (once) and adds a watch per directory.
                observer.start()
            except OSError as err:
                observer.stop()
                _close_partial_inotify(err)
                share.state = f"off: {_explain(err)}"
                log.warning("not forwarding changes in %s: %s", share.host_path, share.state[5:])
                continue
            self._observers.append(observer)

    def stop(self) -> None:
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(5)
        self._observers.clear()


def _close_partial_inotify(err: OSError) -> None:
    """Close the inotify instance a failed watchdog start left open (Linux).

    watchdog's Inotify() adds watches in its constructor; when one fails (the
    limit is hit) the half-built instance keeps its file descriptor, and so every
    watch it added, for as long as this process runs, which would starve the other
    folders. The instance is in the failed frames of the traceback.
    """
    tb = err.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if type(candidate).__name__ == "Inotify":
            for name in ("_inotify_fd", "_kill_r", "_kill_w"):
                fd = getattr(candidate, name, None)
                if isinstance(fd, int):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            return
        tb = tb.tb_next


def _explain(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return (f"the inotify watch limit ({watch_limit()} directories, {MAX_USER_WATCHES}) is reached; "
                "raise it (sysctl fs.inotify.max_user_watches=524288) and restart the machine")
    if err.errno == errno.EMFILE:
        return "the inotify instance limit (/proc/sys/fs/inotify/max_user_instances) is reached"
    return str(err)


@dataclass
class Snapshots:
    """The last state sent per path, to drop changes of nothing (our own echoes)."""

    limit: int = SNAPSHOT_LIMIT
    _sent: OrderedDict[str, tuple[int, int, int, int]] = field(default_factory=OrderedDict)
    suppressed: int = 0

    def changed(self, path: str) -> int | None:
        """The mtime (ns) to send for `path`, or None: gone, or the same as last sent."""
        try:
            st = os.lstat(path)
        except OSError:
            self._sent.pop(path, None)
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
        if self._sent.get(path) == key:
            self.suppressed += 1
            return None
        self._sent[path] = key
        self._sent.move_to_end(path)
        while len(self._sent) > self.limit:
            self._sent.popitem(last=False)
        return st.st_mtime_ns
