"""Hot reload through shared folders: host changes forwarded to the guest's file watchers.

A supervisor service (desktop/machine/supervisor.py). `desktop/share_watch.py`
watches the shared folders and coalesces changed paths; this module sends them,
batched, over the machine's SSH link to `guest_agent/hot_reload.py`, which runs
in one exec channel for as long as the link lives (one guest process start per
connection, ~2 ms per batch after). The guest makes its kernel raise IN_MODIFY
on each path, so watchers in containers see the change; it answers each batch
with what it did, counted here and written to `hot_reload.json` in the
machine's run folder for `dockyard machine status`.

Debounce: the first change of a batch starts a window of `debounce_s`; all
changes in it, one item per path, go together. While a batch is in flight
the next one collects, so a slow guest gets fewer, bigger batches.

Reconnects: when sending fails (link down, guest restarted), the batch stays
queued with everything that changes meanwhile, coalesced per path, and is
sent once a new channel is up: nothing is lost, nothing is sent twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from desktop.share_watch import ChangeSet, ShareWatch, Snapshots, Watchers
from desktop.ssh_link import LinkError, close_channel

log = logging.getLogger(__name__)

GUEST_COMMAND = "PYTHONPATH=/opt/dockyard/lib PYTHONDONTWRITEBYTECODE=1 exec python3 -S -m guest_agent.hot_reload"
DEBOUNCE_S = 0.03
REPLY_TIMEOUT_S = 60.0
STATS_EVERY_S = 0.5
COUNTS = ("applied", "echo", "stale", "gone")


class HotReloadForwarder:
    """Watches the shared folders and raises their changes in the guest, over `link`."""

    def __init__(self, link: Any, shares: list[tuple[str, str]], off: set[str], stats_path: Path | None,
                 debounce_s: float = DEBOUNCE_S, guest_command: str = GUEST_COMMAND) -> None:
        self.link = link
        self.shares = [ShareWatch(host, guest, state="off (setting)" if host in off else "on")
                       for host, guest in shares]
        self.stats_path = stats_path
        self.debounce_s = debounce_s
        self.guest_command = guest_command
        self.changes = ChangeSet()
        self.snapshots = Snapshots()
        self.counts = dict.fromkeys(COUNTS, 0)
        self.batches = 0
        self.channel_starts = 0
        self._watchers = Watchers(self.shares, self.changes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._chan: Any = None
        self._buf = b""
        self._queued: list[tuple[int, list[list[Any]]]] = []
        self._stats_dirty = True
        self._stats_at = 0.0

    @property
    def forwarded(self) -> int:
        return sum(share.forwarded for share in self.shares)

    def start(self) -> None:
        self._watchers.start()
        self._write_stats()
        if not any(share.state == "on" for share in self.shares):
            return
        self._thread = threading.Thread(target=self._run, name="hot-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._watchers.stop()
        self.changes.wake()
        if self._thread is not None:
            self._thread.join(5)
        if self._chan is not None:
            close_channel(self._chan)
            self._chan = None
        self._write_stats()

    # -- the sender ------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            if not self._queued and self._chan is None:
                # Up before anything changes: the helper must see the guest's writes from the start.
                try:
                    self._channel()
                except (LinkError, OSError, EOFError, ValueError) as err:
                    log.warning("cannot start the guest's hot-reload helper (%s); retrying in %.1f s", err, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            if not self._queued:
                if not self.changes.wait(STATS_EVERY_S if self._stats_dirty else None):
                    self._write_stats()
                    continue
                # Debounce: gather the rest of the burst that started at first_at.
                self._stop.wait(max(0.0, self.changes.first_at + self.debounce_s - time.monotonic()))
                self._queued = self._batches(self.changes.take())
            try:
                self._send_queued()
                backoff = 0.2
            except (LinkError, OSError, EOFError, ValueError) as err:
                log.warning("forwarding shared-folder changes failed (%s); retrying in %.1f s", err, backoff)
                self._drop_channel()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            if time.monotonic() - self._stats_at >= STATS_EVERY_S:
                self._write_stats()

    def _batches(self, taken: list[tuple[int, str]]) -> list[tuple[int, list[list[Any]]]]:
        items: dict[int, list[list[Any]]] = {}
        for share_index, path in taken:
            mtime = self.snapshots.changed(path)
            if mtime is None:
                continue
            rel = os.path.relpath(path, self.shares[share_index].host_path)
            items.setdefault(share_index, []).append(["" if rel == "." else rel.replace(os.sep, "/"), mtime])
        return list(items.items())

    def _send_queued(self) -> None:
        while self._queued and not self._stop.is_set():
            share_index, items = self._queued[0]
            share = self.shares[share_index]
            chan = self._channel()
            chan.sendall(json.dumps({"root": share.guest_path, "items": items}).encode() + b"\n")
            reply = self._read_line(chan)
            self._queued.pop(0)
            share.forwarded += len(items)
            self.batches += 1
            for key in COUNTS:
                self.counts[key] += int(reply.get(key, 0))
            self._stats_dirty = True

    def _channel(self) -> Any:
        if self._chan is not None and not self._chan.closed and not self._chan.exit_status_ready():
            return self._chan
        self._drop_channel()
        chan = self.link.open_session()
        try:
            chan.settimeout(REPLY_TIMEOUT_S)
            import shlex

            roots = [share.guest_path for share in self.shares if share.state == "on"]
            chan.exec_command(" ".join([self.guest_command, *map(shlex.quote, roots)]))
            self._buf = b""
            if not self._read_line(chan).get("ready"):
                raise LinkError("the guest's hot-reload helper did not start")
        except BaseException:
            close_channel(chan)
            raise
        self._chan = chan
        self.channel_starts += 1
        log.info("forwarding shared-folder changes to the guest (channel #%d)", self.channel_starts)
        return chan

    def _read_line(self, chan: Any) -> dict[str, Any]:
        while b"\n" not in self._buf:
            data = chan.recv(65536)
            if not data:
                detail = b""
                while chan.recv_stderr_ready():
                    detail += chan.recv_stderr(65536)
                raise LinkError("the guest's hot-reload helper exited: "
                                + (detail.decode(errors="replace").strip()[-300:] or "no message"))
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError(f"unexpected reply {line[:100]!r}")
        return reply

    def _drop_channel(self) -> None:
        if self._chan is not None:
            close_channel(self._chan)
            self._chan = None

    # -- status ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "shares": {share.host_path: {"forwarding": share.state, "forwarded": share.forwarded}
                       for share in self.shares},
            "forwarded": self.forwarded,
            "batches": self.batches,
            "suppressed_on_host": self.snapshots.suppressed,
            **self.counts,
        }

    def _write_stats(self) -> None:
        self._stats_at = time.monotonic()
        self._stats_dirty = False
        if self.stats_path is None:
            return
        from runtime.atomic_file import write_json_atomic

        try:
            write_json_atomic(self.stats_path, self.stats(), mode=0o600)
        except OSError as err:
            log.warning("cannot write %s: %s", self.stats_path, err)

