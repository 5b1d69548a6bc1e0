"""The classic-BPF prologue that makes syscalls newer than a profile fail with ENOSYS.

A profile only lists the syscalls it knew when it was written; libseccomp's
filter gives every other one the default action (EPERM in Docker's profile).
For a syscall added to the kernel later, EPERM is wrong: libc probes new calls
(clone3, fchmodat2, ...) and falls back to the old ones only on ENOSYS. runc
therefore puts a prologue before libseccomp's program, and so do we: per
architecture, a syscall number above the highest one the profile names
returns ENOSYS; everything else goes on to libseccomp's program, which starts
by loading the architecture itself.
"""

from __future__ import annotations

import struct

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_X32 = 0x4000003E          # libseccomp's token; the kernel reports x32 as x86_64 + bit
X32_SYSCALL_BIT = 0x40000000
ENOSYS = 38

_LD_W_ABS = 0x20       # BPF_LD | BPF_W | BPF_ABS
_JA = 0x05             # BPF_JMP | BPF_JA
_JEQ_K = 0x15          # BPF_JMP | BPF_JEQ | BPF_K
_JGT_K = 0x25          # BPF_JMP | BPF_JGT | BPF_K
_JSET_K = 0x45         # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06          # BPF_RET | BPF_K
_SECCOMP_RET_ERRNO = 0x00050000
_OFFSET_NR = 0         # struct seccomp_data: int nr; u32 arch; ...
_OFFSET_ARCH = 4
_END = "end"
_ENOSYS_LABEL = "enosys"


def enosys_prologue(last_syscall: dict[int, int]) -> bytes:
    """BPF instructions to put before libseccomp's program.

    `last_syscall` maps an audit arch (libseccomp's arch token) to the highest
    syscall number the profile names on it; x32's numbers carry X32_SYSCALL_BIT.
    Empty when no architecture has a known number.
    """
    arches = [arch for arch in last_syscall if arch != AUDIT_ARCH_X32]
    if not arches:
        return b""
    # (opcode, jump-if-true label, jump-if-false label, k or label); resolved below.
    code: list[tuple[int, str | None, str | None, int | str]] = []
    labels: dict[str, int] = {}

    code.append((_LD_W_ABS, None, None, _OFFSET_ARCH))
    for arch in arches:
        code.append((_JEQ_K, f"arch-{arch}", None, arch))
    code.append((_JA, None, None, _END))
    for arch in arches:
        labels[f"arch-{arch}"] = len(code)
        code.append((_LD_W_ABS, None, None, _OFFSET_NR))
        if arch == AUDIT_ARCH_X86_64:
            code.append((_JSET_K, "x32", None, X32_SYSCALL_BIT))
        code.append((_JGT_K, _ENOSYS_LABEL, None, last_syscall[arch]))
        code.append((_JA, None, None, _END))
        if arch == AUDIT_ARCH_X86_64:
            labels["x32"] = len(code)
            if AUDIT_ARCH_X32 in last_syscall:
                code.append((_JGT_K, _ENOSYS_LABEL, None, last_syscall[AUDIT_ARCH_X32]))
            code.append((_JA, None, None, _END))
    labels[_ENOSYS_LABEL] = len(code)
    code.append((_RET_K, None, None, _SECCOMP_RET_ERRNO | ENOSYS))
    labels[_END] = len(code)

    out = bytearray()
    def offset(label: str | None, index: int) -> int:
        return 0 if label is None else labels[label] - index - 1

    for index, (op, jt, jf, k) in enumerate(code):
        value = offset(k, index) if isinstance(k, str) else k
        jump_true, jump_false = offset(jt, index), offset(jf, index)
        if not (0 <= jump_true <= 255 and 0 <= jump_false <= 255):
            raise ValueError("seccomp prologue jump out of range")
        out += struct.pack("=HBBI", op, jump_true, jump_false, value)
    return bytes(out)
