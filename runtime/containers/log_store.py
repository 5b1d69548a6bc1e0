"""Container logs in Docker's json-file format: one JSON object per line.

Each line is `{"log": "...", "stream": "stdout"|"stderr", "time": "<RFC 3339 nano>"}`,
exactly what dockerd's json-file driver writes to <id>-json.log, so the files stay
readable by the same tools. Output is split at newlines; a line still open when the
process ends is written without its newline.

A log that cannot be written (full disk, quota, no descriptors) loses those lines,
as dockerd's json-file driver does, with a warning; the container's output still
reaches attached clients and the process is never blocked or killed for it. A
short write is cut back so the file never holds half a record.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import describe_os_error
from ..timestamps import now_rfc3339, parse_time_ns

# One line of a json-file log as json.loads gives it: "log", "stream" and "time" at least
# (_parse drops any line without "log" and "time").
_Line = dict[str, Any]

log = logging.getLogger(__name__)

# dockerd splits lines longer than this into partial records (daemon/logger/copier.go).
MAX_LINE_BYTES = 16 * 1024


@dataclass
class LogRecord:
    """One line (or chunk) of container output."""

    stream: str        # "stdout" | "stderr"
    data: bytes        # with its trailing newline, if it had one
    time: str          # RFC 3339 nanoseconds UTC


class LogFile:
    """The json-file log of one container: appended to by the stdio pump, read by `logs`.

    Readers that follow wait on `changed`, which is notified after every append and
    when the current run of the container ends, so `logs -f` never polls. With
    `max_size` the file rotates like dockerd's (<path>.1 is the newest old file).
    With `keep` False (Docker's `none` log driver) output is dropped: no file is
    written and a read finds nothing.
    """

    def __init__(self, path: Path, max_size: int = 0, max_files: int = 1, keep: bool = True) -> None:
        self.path = Path(path)
        self.keep = keep
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self.changed = threading.Condition()
        self._fd: int | None = None
        self._size = 0
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._active = False   # a run is writing; followers keep waiting while it is
        self._dropped = 0      # bytes of records lost since writing last failed

    # writing ---------------------------------------------------------------
    def begin_run(self) -> None:
        """A process started writing (container start); followers now wait for more."""
        with self.changed:
            if self.keep:
                try:
                    self._open()
                except OSError as err:   # the run goes on; _append tries to open again
                    self._write_failed(err, 0)
            self._active = True
            self.changed.notify_all()

    def _open(self) -> int:
        """The descriptor of the current file, opened if it is not (OSError if it cannot be)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def write(self, stream: str, data: bytes) -> None:
        """Append output; complete lines become records at once, the rest waits for its newline."""
        if not data or not self.keep:
            return
        with self.changed:
            buf = self._partial[stream]
            buf += data
            lines: list[bytes] = []
            while True:
                nl = buf.find(b"\n")
                if nl < 0 or nl >= MAX_LINE_BYTES:
                    break
                lines.append(bytes(buf[: nl + 1]))
                del buf[: nl + 1]
            while len(buf) >= MAX_LINE_BYTES:
                lines.append(bytes(buf[:MAX_LINE_BYTES]))
                del buf[:MAX_LINE_BYTES]
            if lines:
                self._append(stream, lines)

    def end_run(self) -> None:
        """The process's streams are drained: flush open lines and wake followers for good."""
        with self.changed:
            for stream, buf in self._partial.items():
                if buf:
                    self._append(stream, [bytes(buf)])
                    buf.clear()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._active = False
            self.changed.notify_all()

    @property
    def active(self) -> bool:
        """True while a run may still append."""
        return self._active

    def _append(self, stream: str, lines: list[bytes]) -> None:
        try:
            self._append_records(stream, lines)
        except OSError as err:
            self._write_failed(err, sum(len(line) for line in lines))
        self.changed.notify_all()

    def _write_failed(self, err: OSError, lost: int) -> None:
        if not self._dropped:
            log.warning("cannot write container log %s (%s): output is dropped from the log "
                        "until writing works again", self.path.name, describe_os_error(err))
        self._dropped += max(lost, 1)

    def _append_records(self, stream: str, lines: list[bytes]) -> None:
        self._open()
        stamp = now_rfc3339()
        records = [
            (json.dumps({"log": line.decode("utf-8", "replace"), "stream": stream, "time": stamp},
                        ensure_ascii=False) + "\n").encode()
            for line in lines
        ]
        batch: list[bytes] = []
        batch_size = 0
        for rec in records:
            if self.max_size and self._size + batch_size + len(rec) > self.max_size \
                    and self._size + batch_size > 0:
                self._write_batch(batch)
                batch, batch_size = [], 0
                self._rotate()
            batch.append(rec)
            batch_size += len(rec)
        self._write_batch(batch)
        if self._dropped:
            log.info("container log %s is written again (%d bytes were lost)", self.path.name,
                     self._dropped)
            self._dropped = 0

    def _write_batch(self, batch: list[bytes]) -> None:
        if not batch:
            return
        payload = b"".join(batch)
        fd = self._open()   # open already (the caller opened it); this gives it a type
        # One write(2) per batch with O_APPEND: readers never see half a line of JSON
        # from us except at the very end, and readers ignore an unterminated tail.
        written = os.write(fd, payload)
        if written < len(payload):
            # The disk filled up mid-record: cut the torn tail off so the next append
            # starts on a line of its own, and report the rest as lost.
            os.ftruncate(fd, self._size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        self._size += len(payload)

    def _rotate(self) -> None:
        """<path> becomes <path>.1, .1 becomes .2, ...; the oldest beyond max_files goes."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.max_files == 1:
            os.unlink(self.path)
        else:
            for i in range(self.max_files - 1, 0, -1):
                src = self.path if i == 1 else self._rotated(i - 1)
                try:
                    os.replace(src, self._rotated(i))
                except FileNotFoundError:
                    pass
        self._open()

    def _rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def files(self) -> list[Path]:
        """Existing log files, oldest first (rotated ones, then the current one)."""
        if not self.keep:
            return []
        old = [self._rotated(i) for i in range(self.max_files - 1, 0, -1)]
        return [p for p in old if p.exists()] + [self.path]

    # reading ---------------------------------------------------------------
    def read(self, stdout: bool = True, stderr: bool = True, since: float = 0, until: float = 0,
             tail: int | None = None, follow: bool = False,
             cancel: threading.Event | None = None) -> Iterator[LogRecord]:
        """Records in order; `tail` keeps the last N matching ones; `follow` waits for more
        until the current run ends, or until `cancel` is set through `cancel_follow`.
        `since`/`until` are unix seconds (0 = unbounded)."""
        since_ns = int(since * 1e9) if since else 0
        until_ns = int(until * 1e9) if until else 0
        streams = {s for s, want in (("stdout", stdout), ("stderr", stderr)) if want}

        def keep(rec: _Line) -> bool:
            if rec.get("stream") not in streams:
                return False
            if since_ns or until_ns:
                t = parse_time_ns(rec["time"])
                if since_ns and t < since_ns:
                    return False
                if until_ns and t > until_ns:
                    return False
            return True

        def to_record(rec: _Line) -> LogRecord:
            return LogRecord(rec["stream"], rec["log"].encode("utf-8", "surrogateescape"), rec["time"])

        with self.changed:
            # A snapshot: what exists now is replayed, the follower continues from there
            # on a descriptor of the current file (which survives a rotation).
            active = self._active
            files = self.files()
            ends = [_complete_size(p) for p in files]
            live = None
            if follow and active and files:
                try:
                    live = open(self.path, "rb")  # noqa: SIM115 - handed to _follow, closed in the finally below
                    live.seek(ends[-1])
                except FileNotFoundError:
                    live = None
        try:
            if tail is not None and tail >= 0:
                chosen: list[_Line] = []
                for path, end in zip(reversed(files), reversed(ends), strict=True):
                    if len(chosen) >= tail:
                        break
                    chosen = _tail_records(path, end, tail - len(chosen), keep) + chosen
                for rec in chosen:
                    yield to_record(rec)
            else:
                for path, end in zip(files, ends, strict=True):
                    for rec in _records_between(path, 0, end):
                        if keep(rec):
                            yield to_record(rec)
            if live is not None:
                yield from (to_record(r) for r in self._follow(live, until_ns, cancel) if keep(r))
        finally:
            if live is not None:
                live.close()

    def cancel_follow(self, cancel: threading.Event) -> None:
        """End a `read(follow=True, cancel=cancel)` now (its client went away)."""
        with self.changed:
            cancel.set()
            self.changed.notify_all()

    def _follow(self, f: BinaryIO, until_ns: int, cancel: threading.Event | None) -> Iterator[_Line]:
        """New records from `f` on, switching to the new file after a rotation."""
        try:
            yield from self._follow_file(f, until_ns, cancel)
        finally:
            f.close()

    def _follow_file(self, f: BinaryIO, until_ns: int, cancel: threading.Event | None) -> Iterator[_Line]:
        pending = b""
        while True:
            with self.changed:
                if cancel is not None and cancel.is_set():
                    return
                data = f.read()
                if not data:
                    try:
                        rotated = os.stat(self.path).st_ino != os.fstat(f.fileno()).st_ino
                    except FileNotFoundError:
                        rotated = False
                    if rotated:
                        # Continue with the file written after ours: ours is now <path>.k and
                        # its successor <path>.(k-1); if ours is gone, every file left is newer.
                        mine = os.fstat(f.fileno()).st_ino
                        files = self.files()
                        inodes = [_inode(p) for p in files]
                        successor = files[inodes.index(mine) + 1] if mine in inodes else files[0]
                        # Swap the descriptor in place so the caller's finally closes the new one.
                        with open(successor, "rb") as new:
                            os.dup2(new.fileno(), f.fileno())
                        f.seek(0)
                        pending = b""
                        continue
                    if not self._active:
                        return
                    # The timeout is only a safety net; appends and end_run notify.
                    self.changed.wait(timeout=5)
                    continue
            pending += data
            complete, _, pending = pending.rpartition(b"\n")
            for line in complete.split(b"\n"):
                rec = _parse(line) if line else None
                if rec is None:
                    continue
                if until_ns and parse_time_ns(rec["time"]) > until_ns:
                    return
                yield rec


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def _complete_size(path: Path) -> int:
    """Bytes of the file up to its last complete line (the writer appends whole lines)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return size
    except FileNotFoundError:
        return 0
    # A torn last line (crash mid-write): stop before it.
    offset, _ = _read_from(path, 0)
    return offset


def _parse(line: bytes) -> _Line | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None     # a torn line from a crash; skip it rather than fail every read
    return rec if isinstance(rec, dict) and "log" in rec and "time" in rec else None


def _records_between(path: Path, start: int, end: int) -> Iterator[_Line]:
    """Stream the records in [start, end) without loading the whole file."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - the try covers only the open; the with below closes it
    except FileNotFoundError:
        return
    with f:
        f.seek(start)
        remaining = end - start
        for line in f:
            remaining -= len(line)
            if remaining < 0:
                break
            rec = _parse(line)
            if rec is not None:
                yield rec


def _tail_records(path: Path, end: int, count: int, keep: Callable[[_Line], bool]) -> list[_Line]:
    """The last `count` records that `keep` accepts, reading backwards from `end`."""
    if count == 0:
        return []
    found: list[_Line] = []
    block = 64 * 1024
    pos = end
    carry = b""
    try:
        f = open(path, "rb")  # noqa: SIM115 - the try covers only the open; the with below closes it
    except FileNotFoundError:
        return []
    with f:
        while pos > 0 and len(found) < count:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step) + carry
            lines = chunk.split(b"\n")
            carry = lines.pop(0) if pos > 0 else b""   # maybe a partial line: finish it next round
            for line in reversed(lines):
                if not line:
                    continue
                rec = _parse(line)
                if rec is not None and keep(rec):
                    found.append(rec)
                    if len(found) == count:
                        break
    found.reverse()
    return found


def _read_from(path: Path, offset: int) -> tuple[int, list[_Line]]:
    """Complete JSON lines from byte `offset`; returns the offset after the last one."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset, []
    end = data.rfind(b"\n")
    if end < 0:
        return offset, []
    records = [rec for rec in map(_parse, data[: end + 1].splitlines()) if rec is not None]
    return offset + end + 1, records
