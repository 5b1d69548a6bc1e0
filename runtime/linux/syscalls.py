"""Thin ctypes wrappers for the Linux calls Python 3.11's `os` module lacks.

unshare, setns, mount, umount2, pivot_root, prctl, capget/capset and
setdomainname. Every wrapper raises OSError(errno, "<call> <args>: <strerror>")
on failure and takes no locks, so it is safe in a child forked from a
multi-threaded process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# What the path arguments below accept, as os.fsencode does.
PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# clone(2) namespace flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 0x2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Syscalls glibc does not wrap, by machine.
_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "rt_sigaction": 13},
    "aarch64": {"pivot_root": 41, "rt_sigaction": 134},
}


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


# Looked up once at import: forked children must not call into `platform`.
_MACHINE = platform.machine()


def _syscall_number(name: str) -> int:
    try:
        return _SYSCALL_NUMBERS[_MACHINE][name]
    except KeyError:
        raise OSError(38, f"{name}: no syscall number known for {_MACHINE}") from None


def _b(value: PathArg | None) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(value)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (CLONE_NEW* flags)."""
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that `fd` (an open /proc/<pid>/ns/<kind> file) refers to."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def mount(source: str | bytes | None, target: PathArg, fstype: str | bytes | None,
          flags: int = 0, data: str | bytes | None = None) -> None:
    """mount(2); the error names the target and filesystem type."""
    res = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    if res == -1:
        err = ctypes.get_errno()
        kind = os.fsdecode(fstype) if fstype else ("bind" if flags & MS_BIND else "propagation")
        raise OSError(err, f"mount {kind} on {os.fsdecode(target)}: {os.strerror(err)}")


def umount2(target: PathArg, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {os.fsdecode(target)}")


def pivot_root(new_root: PathArg, put_old: PathArg) -> None:
    """pivot_root(2) through syscall(2): glibc has no wrapper."""
    number = _syscall_number("pivot_root")
    _check(_libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)), "pivot_root")


class _KernelSigaction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_ulong), ("flags", ctypes.c_ulong),
                ("restorer", ctypes.c_ulong), ("mask", ctypes.c_uint64)]


_SIG_DFL_ACTION = _KernelSigaction(0, 0, 0, 0)
_NSIG = 64


def reset_all_signal_dispositions() -> None:
    """Every signal back to SIG_DFL with the raw syscall, for a child about to exec.

    Ignored signals survive exec. glibc's sigaction refuses its internal signals
    (32, 33), so a disposition set on them by anything in the engine's process
    would leak into containers; the raw rt_sigaction has no such exception.
    Errors (SIGKILL, SIGSTOP) are expected and skipped.
    """
    number = _syscall_number("rt_sigaction")
    action = ctypes.byref(_SIG_DFL_ACTION)
    for sig in range(1, _NSIG + 1):
        _libc.syscall(ctypes.c_long(number), ctypes.c_int(sig), action, None, ctypes.c_size_t(8))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) with integer arguments."""
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


def sethostname(name: str) -> None:
    """sethostname(2) for the current UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname {name!r}")


def setdomainname(name: str) -> None:
    """setdomainname(2) for the current UTS namespace."""
    raw = name.encode()
    _check(_libc.setdomainname(raw, ctypes.c_size_t(len(raw))), f"setdomainname {name!r}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget() -> tuple[int, int, int]:
    """The calling thread's (effective, permitted, inheritable) capability masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's capability masks (64-bit, version 3 ABI)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


# Capability numbers (include/uapi/linux/capability.h).
CAPABILITY_NUMBERS: dict[str, int] = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}


def last_capability() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITY_NUMBERS.values())


def capability_mask(names: tuple[str, ...] | list[str]) -> int:
    """Bit mask for capability names ("CAP_CHOWN" or "CHOWN"; "ALL" means every one).

    Raises ValueError naming an unknown capability.
    """
    mask = 0
    for name in names:
        key = name.upper()
        if key == "ALL":
            return (1 << (last_capability() + 1)) - 1
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        if key not in CAPABILITY_NUMBERS:
            raise ValueError(f"unknown capability: {name!r}")
        mask |= 1 << CAPABILITY_NUMBERS[key]
    return mask
