"""Container logs in Docker's json-file format: one JSON object per line.

Each line is `{"log": "...", "stream": "stdout"|"stderr", "time": "<RFC 3339 nano>"}`,
exactly what dockerd's json-file driver writes to <id>-json.log, so the files stay
readable by the same tools. Output is split at newlines; a line still open when the
process ends is written without its newline.
"""

from __future__ import annotations

import calendar
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# dockerd splits lines longer than this into partial records (daemon/logger/copier.go).
MAX_LINE_BYTES = 16 * 1024


@dataclass
class LogRecord:
    """One line (or chunk) of container output."""

    stream: str        # "stdout" | "stderr"
    data: bytes        # with its trailing newline, if it had one
    time: str          # RFC 3339 nanoseconds UTC


def format_time_ns(time_ns: int) -> str:
    """RFC 3339 with nine fractional digits in UTC, as Docker's API shows timestamps."""
    secs, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def now_rfc3339() -> str:
    """The current time as format_time_ns formats it."""
    return format_time_ns(time.time_ns())


def parse_time_ns(stamp: str) -> int:
    """Inverse of format_time_ns; also accepts fewer fractional digits and "+00:00"."""
    stamp = stamp.strip()
    if stamp.endswith("Z"):
        stamp = stamp[:-1]
    elif stamp.endswith("+00:00"):
        stamp = stamp[:-6]
    main, _, frac = stamp.partition(".")
    tm = time.strptime(main, "%Y-%m-%dT%H:%M:%S")
    nanos = int((frac + "000000000")[:9]) if frac else 0
    return calendar.timegm(tm) * 1_000_000_000 + nanos


class LogFile:
    """The json-file log of one container: appended to by the stdio pump, read by `logs`.

    Readers that follow wait on `changed`, which is notified after every append and
    when the current run of the container ends, so `logs -f` never polls.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.changed = threading.Condition()
        self._fd: int | None = None
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._active = False   # a run is writing; followers keep waiting while it is

    # writing ---------------------------------------------------------------
    def begin_run(self) -> None:
        """A process started writing (container start); followers now wait for more."""
        with self.changed:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._active = True
            self.changed.notify_all()

    def write(self, stream: str, data: bytes) -> None:
        """Append output; complete lines become records at once, the rest waits for its newline."""
        if not data:
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
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        stamp = now_rfc3339()
        payload = "".join(
            json.dumps({"log": line.decode("utf-8", "replace"), "stream": stream, "time": stamp},
                       ensure_ascii=False) + "\n"
            for line in lines
        ).encode()
        # One write(2) per batch with O_APPEND: readers never see half a line of JSON
        # from us except at the very end, and read_records ignores an unterminated tail.
        os.write(self._fd, payload)
        self.changed.notify_all()

    # reading ---------------------------------------------------------------
    def read(self, stdout: bool = True, stderr: bool = True, since: float = 0, until: float = 0,
             tail: int | None = None, follow: bool = False) -> Iterator[LogRecord]:
        """Records in order; `tail` keeps the last N matching ones; `follow` waits for more
        until the current run ends. `since`/`until` are unix seconds (0 = unbounded)."""
        since_ns = int(since * 1e9) if since else 0
        until_ns = int(until * 1e9) if until else 0
        streams = {s for s, want in (("stdout", stdout), ("stderr", stderr)) if want}

        def keep(rec: dict) -> bool:
            if rec.get("stream") not in streams:
                return False
            if since_ns or until_ns:
                t = parse_time_ns(rec["time"])
                if since_ns and t < since_ns:
                    return False
                if until_ns and t > until_ns:
                    return False
            return True

        def to_record(rec: dict) -> LogRecord:
            return LogRecord(rec["stream"], rec["log"].encode("utf-8", "surrogateescape"), rec["time"])

        with self.changed:
            active = self._active
            offset = _complete_size(self.path)
        if tail is not None and tail >= 0:
            for rec in _tail_records(self.path, offset, tail, keep):
                yield to_record(rec)
        else:
            for rec in _records_between(self.path, 0, offset):
                if keep(rec):
                    yield to_record(rec)
        if not follow or not active:
            return
        while True:
            with self.changed:
                offset, records = _read_from(self.path, offset)
                if not records:
                    if not self._active:
                        return
                    # The timeout is only a safety net; appends and end_run notify.
                    self.changed.wait(timeout=5)
                    continue
            for rec in records:
                if until_ns and parse_time_ns(rec["time"]) > until_ns:
                    return
                if keep(rec):
                    yield to_record(rec)


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


def _parse(line: bytes) -> dict | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None     # a torn line from a crash; skip it rather than fail every read
    return rec if isinstance(rec, dict) and "log" in rec and "time" in rec else None


def _records_between(path: Path, start: int, end: int) -> Iterator[dict]:
    """Stream the records in [start, end) without loading the whole file."""
    try:
        f = open(path, "rb")
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


def _tail_records(path: Path, end: int, count: int, keep) -> list[dict]:
    """The last `count` records that `keep` accepts, reading backwards from `end`."""
    if count == 0:
        return []
    found: list[dict] = []
    block = 64 * 1024
    pos = end
    carry = b""
    try:
        f = open(path, "rb")
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


def _read_from(path: Path, offset: int) -> tuple[int, list[dict]]:
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
