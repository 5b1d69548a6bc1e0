"""adjtimex(2) through libc: read the kernel clock's state, shift it, change its tick.

Python's time module can read and set CLOCK_REALTIME but has neither a
relative step done by the kernel (ADJ_SETOFFSET: no read-then-set gap the
scheduler could stretch) nor the tick length that slews the clock. Linux only,
like the rest of the guest init.
"""

from __future__ import annotations

import os

ADJ_SETOFFSET = 0x0100
ADJ_TICK = 0x4000
NS_PER_S = 1_000_000_000
US_PER_S = 1_000_000

_libc = None
_Timex = None


def _timex_type():
    """struct timex of <linux/timex.h>; ctypes' native alignment adds the kernel's padding."""
    global _Timex
    if _Timex is None:
        import ctypes

        class Timeval(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]

        class Timex(ctypes.Structure):
            _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
                        ("tolerance", ctypes.c_long), ("time", Timeval), ("tick", ctypes.c_long),
                        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                        ("reserved", ctypes.c_int * 11)]

        _Timex = Timex
    return _Timex


def _adjtimex(modes: int, **fields: int):
    """One adjtimex(2) call with `modes` and `fields` set; returns the struct the kernel filled."""
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    tx = _timex_type()()
    tx.modes = modes
    for name, value in fields.items():
        if name == "time_us":
            # Microseconds, not ADJ_NANO: that would also switch the kernel's status to
            # nanoseconds for every later reader (busybox adjtimex, ntp tools) in the guest.
            tx.time.tv_sec, tx.time.tv_usec = divmod(value, US_PER_S)  # tv_usec must be in [0, 1e6)
        else:
            setattr(tx, name, value)
    if _libc.adjtimex(ctypes.byref(tx)) < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"adjtimex(modes={modes:#x}): {os.strerror(errno)}")
    return tx


def read_tick() -> int:
    """Microseconds the clock advances per kernel tick (10000 with USER_HZ=100 when untouched)."""
    return int(_adjtimex(0).tick)


def set_tick(tick_us: int) -> None:
    """Make every tick count `tick_us` microseconds (the kernel allows ±10 % of nominal)."""
    _adjtimex(ADJ_TICK, tick=tick_us)


def shift_clock(delta_ns: int) -> None:
    """Add `delta_ns` (to the microsecond) to CLOCK_REALTIME at once, in the kernel; CLOCK_MONOTONIC stays."""
    _adjtimex(ADJ_SETOFFSET, time_us=round(delta_ns / 1000))
