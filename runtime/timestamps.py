"""Timestamps as Docker's API shows them: RFC 3339 with nanoseconds, in UTC.

Shared by container logs, container state, volumes and images, so none of them has to
import another's store for a clock.
"""

from __future__ import annotations

import calendar
import datetime
import time


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


def unix_seconds(rfc3339: str) -> int:
    """Whole seconds since the epoch of any RFC 3339 time (an image's "created", with any
    offset and up to nine fractional digits); 0 for an empty or unreadable one."""
    if not rfc3339:
        return 0
    text = rfc3339.strip().replace("Z", "+00:00")
    if "." in text:   # Python 3.11 parses at most microseconds
        head, _, rest = text.partition(".")
        frac = "".join(ch for ch in rest if ch.isdigit())
        text = head + "." + frac[:6] + rest[len(frac):]
    try:
        return int(datetime.datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0
