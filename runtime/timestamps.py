"""Timestamps as Docker's API shows them: RFC 3339 with nanoseconds, in UTC.

Shared by container logs, container state and volumes, so none of them has to
import another's store for a clock.
"""

from __future__ import annotations

import calendar
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
