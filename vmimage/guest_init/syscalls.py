"""mount(2), umount2(2) and reboot(2) through libc: Python's os module lacks them."""

from __future__ import annotations

import os

# ctypes is imported on first use: most boots need no mount from Python before
# sshd and the agent are running.
_libc = None

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOATIME = 1024
MS_REMOUNT = 32
MNT_DETACH = 2
RB_POWER_OFF = 0x4321FEDC
RB_AUTOBOOT = 0x01234567


def _load():
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str | None = None) -> None:
    """mount(2); raises OSError with the errno."""
    _check(_load().mount(source.encode(), target.encode(), fstype.encode(), flags,
                       data.encode() if data else None), f"mount {source} on {target}")


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_load().umount2(target.encode(), flags), f"umount {target}")


def reboot(command: int) -> None:
    """reboot(2): RB_POWER_OFF or RB_AUTOBOOT. Only returns on failure."""
    _check(_load().reboot(command), "reboot")
