"""Compile seccomp profiles to BPF with libseccomp (through ctypes) and load them in a child.

The engine compiles each distinct (profile, capability set) once and keeps the
BPF program in memory (`program_for`), with runc's ENOSYS prologue for syscalls
newer than the profile (`seccomp_bpf`). A forked container child then only
makes one syscall to install it (`SeccompProgram.install`): nothing between
fork and exec may take locks or allocate through libseccomp.

libseccomp.so.2 is always on Debian (apt depends on it). When it cannot be
loaded, asking for a filter fails with a clear error: a container is never run
unfiltered by accident.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import platform
import threading
from collections import OrderedDict
from dataclasses import dataclass

from ...errors import RuntimeFailure
from ..spec import BUILTIN_SECCOMP_PROFILE, SeccompPolicy
from .seccomp_bpf import enosys_prologue
from .seccomp_default import DEFAULT_PROFILE
from .seccomp_profile import (
    FILTER_FLAGS,
    SeccompProfile,
    SeccompProfileError,
    applicable_rules,
    architectures,
    docker_arch,
    kernel_version,
    parse_profile,
)

log = logging.getLogger(__name__)

_ACTION_BASE = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_OPERATOR = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
             "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_SCMP_FLTATR_CTL_OPTIMIZE = 8     # enum scmp_filter_attr (libseccomp >= 2.5)
_OPTIMIZE_BINARY_TREE = 2
_NR_SCMP_ERROR = -1
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_SYSCALL = {"x86_64": 317, "aarch64": 277}
_CACHE_SIZE = 64
_SOCK_FILTER_SIZE = 8   # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
_MAX_INSTRUCTIONS = 4096   # BPF_MAXINSNS: the kernel refuses longer programs

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class SeccompUnavailable(RuntimeFailure):
    """libseccomp cannot be loaded, so no filter can be built."""


class _ArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _LibSeccomp:
    """The few libseccomp calls we need, typed."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as err:
            raise SeccompUnavailable(f"cannot load libseccomp.so.2 ({err}): containers cannot get "
                                     "a seccomp filter; install libseccomp2, or run with "
                                     "--security-opt seccomp=unconfined") from None
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.restype = None
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_add.restype = ctypes.c_int
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
        lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
        lib.seccomp_arch_native.argtypes = []
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_rule_add_array.restype = ctypes.c_int
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_export_bpf.restype = ctypes.c_int
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_attr_set.restype = ctypes.c_int
        self.lib = lib


@dataclass(frozen=True, eq=False)
class SeccompProgram:
    """A compiled BPF filter, held in memory that forked children inherit."""

    instructions: int
    flags: int
    _buffer: ctypes.Array[ctypes.c_char]
    _fprog: _SockFprog

    def install(self) -> None:
        """Load the filter into the calling process (one syscall; safe after fork).

        Without no_new_privs this needs CAP_SYS_ADMIN, so callers install it
        before dropping capabilities.
        """
        address = ctypes.addressof(self._fprog)
        if self.flags:
            number = _SECCOMP_SYSCALL.get(_MACHINE)
            if number is None:
                raise OSError(errno.ENOSYS, f"seccomp flags: no syscall number known for {_MACHINE}")
            result = _libc.syscall(ctypes.c_long(number), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                                   ctypes.c_uint(self.flags), ctypes.c_void_p(address))
        else:
            result = _libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER),
                                 ctypes.c_ulong(address), ctypes.c_ulong(0), ctypes.c_ulong(0))
        if result == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"loading the seccomp filter: {os.strerror(err)}")


# Looked up once at import: forked children must not call into `platform`.
_MACHINE = platform.machine()
_lock = threading.Lock()
_lib: _LibSeccomp | None = None
_cache: OrderedDict[tuple[str, frozenset[str]], SeccompProgram] = OrderedDict()
_builtin: SeccompProfile | None = None


def _library() -> _LibSeccomp:
    global _lib
    if _lib is None:
        _lib = _LibSeccomp()
    return _lib


def available() -> bool:
    """Whether filters can be built here (libseccomp loads and the kernel has seccomp filters)."""
    try:
        with _lock:
            _library()
    except SeccompUnavailable:
        return False
    try:
        with open("/proc/self/status") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False


def security_options() -> list[str]:
    """`docker info` SecurityOptions for seccomp, in current Docker's form; empty when unavailable."""
    return ["name=seccomp,profile=builtin"] if available() else []


def builtin_profile() -> SeccompProfile:
    """Docker's default profile, parsed once."""
    global _builtin
    if _builtin is None:
        parsed = parse_profile(DEFAULT_PROFILE)
        assert parsed is not None
        _builtin = parsed
    return _builtin


def program_for(policy: SeccompPolicy, capabilities: tuple[str, ...]) -> SeccompProgram | None:
    """The compiled filter for `policy` (cached per profile and capability set).

    `capabilities` is the bounding set to resolve the profile's capability
    conditions against when the policy names none. None for a profile that
    disables seccomp. Raises SeccompProfileError for a profile libseccomp
    refuses and SeccompUnavailable without libseccomp.
    """
    caps = frozenset(_cap_name(c) for c in (policy.capabilities if policy.capabilities is not None
                                            else capabilities))
    text = policy.profile
    key_text = text if text == BUILTIN_SECCOMP_PROFILE else hashlib.sha256(text.encode()).hexdigest()
    key = (key_text, caps)
    with _lock:
        program = _cache.get(key)
        if program is not None:
            _cache.move_to_end(key)
            return program
        profile = builtin_profile() if text == BUILTIN_SECCOMP_PROFILE else parse_profile(text)
        if profile is None:
            return None
        program = _compile(_library(), profile, caps)
        _cache[key] = program
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    log.debug("compiled seccomp profile %s for %d capabilities: %d BPF instructions",
              key_text[:12], len(caps), program.instructions)
    return program


def _cap_name(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _action_value(action: str, errno_ret: int | None) -> int:
    base = _ACTION_BASE[action]
    if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        # runc's default return code for both is EPERM.
        return base | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    return base


def _arch_token(lib: _LibSeccomp, name: str) -> int:
    word = name.removeprefix("SCMP_ARCH_").lower()
    token: int = lib.lib.seccomp_arch_resolve_name(word.encode())
    if not token:
        raise SeccompProfileError(f"unknown seccomp architecture {name!r}")
    return token


def _compile(lib: _LibSeccomp, profile: SeccompProfile, caps: frozenset[str]) -> SeccompProgram:
    default = _action_value(profile.default_action, profile.default_errno)
    ctx = lib.lib.seccomp_init(default)
    if not ctx:
        raise RuntimeFailure("seccomp_init failed")
    try:
        # A binary tree of syscall numbers instead of a list: the kernel walks the filter for
        # every syscall number once when it is loaded (the per-syscall action cache), so a
        # tree loads faster and each filtered syscall takes fewer steps. Older libseccomp
        # without the attribute keeps its default order (same meaning, slower to load).
        lib.lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_OPTIMIZE, _OPTIMIZE_BINARY_TREE)
        arch = docker_arch(_MACHINE)
        arch_tokens = {lib.lib.seccomp_arch_native()}
        for name in architectures(profile, arch):
            token = _arch_token(lib, name)
            result = lib.lib.seccomp_arch_add(ctx, token)
            if result < 0 and result != -errno.EEXIST:
                raise SeccompProfileError(f"cannot add seccomp architecture {name}: "
                                          f"{os.strerror(-result)}")
            arch_tokens.add(token)
        rules = applicable_rules(profile, caps, arch, kernel_version())
        for rule in rules:
            action = _action_value(rule.action, rule.errno_ret)
            if action == default:
                continue    # libseccomp refuses rules that repeat the default action
            conditions = [_ArgCmp(a.index, _OPERATOR[a.op], a.value, a.value_two) for a in rule.args]
            # As runc: conditions on distinct arguments form one rule (all must hold);
            # several on the same argument become one rule each (any may hold).
            indexes = [a.index for a in rule.args]
            groups = ([[c] for c in conditions] if len(set(indexes)) < len(indexes)
                      else [conditions])
            for name in rule.names:
                number = lib.lib.seccomp_syscall_resolve_name(name.encode())
                if number == _NR_SCMP_ERROR:
                    continue    # unknown to this libseccomp: runc skips it too
                for group in groups:
                    array = (_ArgCmp * max(1, len(group)))(*group)
                    result = lib.lib.seccomp_rule_add_array(ctx, action, number, len(group), array)
                    if result < 0:
                        raise SeccompProfileError(f"error adding seccomp rule for syscall {name}: "
                                                  f"{os.strerror(-result)}")
        bpf = _export(lib, ctx)
    finally:
        lib.lib.seccomp_release(ctx)
    if profile.default_action not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG"):
        names = {name for rule in rules for name in rule.names}
        bpf = enosys_prologue(_last_syscalls(lib, arch_tokens, names)) + bpf
    count = len(bpf) // _SOCK_FILTER_SIZE
    if not 0 < count <= _MAX_INSTRUCTIONS:
        raise SeccompProfileError(f"the seccomp profile compiles to {count} BPF instructions "
                                  f"(the kernel accepts at most {_MAX_INSTRUCTIONS})")
    buffer = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(count, ctypes.addressof(buffer))
    flags = 0
    for flag in profile.flags:
        flags |= FILTER_FLAGS[flag]
    return SeccompProgram(instructions=count, flags=flags, _buffer=buffer, _fprog=fprog)


def _last_syscalls(lib: _LibSeccomp, arch_tokens: set[int], names: set[str]) -> dict[int, int]:
    """Per architecture, the highest syscall number among `names` (as runc computes it)."""
    last: dict[int, int] = {}
    for token in arch_tokens:
        numbers = [lib.lib.seccomp_syscall_resolve_name_arch(token, name.encode()) for name in names]
        known = [n for n in numbers if n >= 0]    # negative: unknown here, or a multiplexed pseudo-call
        if known:
            last[token] = max(known)
    return last


def _export(lib: _LibSeccomp, ctx: int) -> bytes:
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        result = lib.lib.seccomp_export_bpf(ctx, fd)
        if result < 0:
            raise RuntimeFailure(f"seccomp_export_bpf failed: {os.strerror(-result)}")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)
