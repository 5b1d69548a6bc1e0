"""Device access rules for cgroup v2: a tiny eBPF program attached to the container's cgroup.

cgroup v2 has no devices controller; the kernel instead runs a
BPF_PROG_TYPE_CGROUP_DEVICE program on every open/mknod of a device node by a
process of the cgroup. We compile Docker's rules ("c 1:3 rwm", "b *:* m", ...)
into straight-line eBPF by hand (no compiler, no libbpf: the guest has only the
Python standard library) and attach it with the bpf(2) syscall.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

from .syscalls import _libc

_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_LOAD, _BPF_PROG_ATTACH = 5, 8
_BPF_PROG_TYPE_CGROUP_DEVICE, _BPF_CGROUP_DEVICE = 15, 6

# Access and type bits of bpf_cgroup_dev_ctx.access_type = (access << 16) | type.
_ACCESS_BITS = {"m": 1, "r": 2, "w": 4}
_TYPE_BITS = {"b": 1, "c": 2}

# Opcodes used below (ALU32 keeps values in 32 bits, like the context fields).
_LDX_W = 0x61        # dst = *(u32 *)(src + off)
_MOV32_REG = 0xBC
_AND32_IMM = 0x54
_RSH32_IMM = 0x74
_MOV64_IMM = 0xB7
_JNE_IMM = 0x55
_JA = 0x05
_EXIT = 0x95


@dataclass(frozen=True)
class DeviceRule:
    """One allow rule: type "a"/"c"/"b", major/minor (None = any), access subset of "rwm"."""

    kind: str
    major: int | None
    minor: int | None
    access: str

    @classmethod
    def parse(cls, text: str) -> DeviceRule:
        """Parse the devices.allow syntax, e.g. "c 136:* rwm" or "a"."""
        parts = text.split()
        if parts == ["a"]:
            return cls("a", None, None, "rwm")
        kind, numbers, access = parts
        major, minor = numbers.split(":")
        return cls(kind, None if major == "*" else int(major), None if minor == "*" else int(minor), access)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def compile_rules(rules: list[DeviceRule]) -> bytes:
    """The eBPF program (instructions as bytes): 1 (allow) if any rule matches, else 0.

    Each rule is a block of "jump to the next block unless ..." tests ending in
    a jump to the allow exit; falling off the last block denies.
    """
    # r3 = device type, r4 = requested access, r5 = major, r6 = minor.
    program = [_insn(_LDX_W, 3, 1, 0), _insn(_MOV32_REG, 4, 3), _insn(_AND32_IMM, 3, imm=0xFFFF),
               _insn(_RSH32_IMM, 4, imm=16), _insn(_LDX_W, 5, 1, 4), _insn(_LDX_W, 6, 1, 8)]
    blocks: list[list[bytes | tuple[int, int]]] = []     # plain insns, or (reg, value) for "skip if reg != value"
    for rule in rules:
        block: list[bytes | tuple[int, int]] = []
        if rule.kind != "a":
            block.append((3, _TYPE_BITS[rule.kind]))
        if rule.major is not None:
            block.append((5, rule.major))
        if rule.minor is not None:
            block.append((6, rule.minor))
        mask = sum(_ACCESS_BITS[c] for c in set(rule.access))
        if mask != 7:
            # The request must be a subset of the rule's access: (r4 & ~mask) == 0.
            block += [_insn(_MOV32_REG, 7, 4), _insn(_AND32_IMM, 7, imm=~mask), (7, 0)]
        blocks.append(block)
    allow_at = len(program) + sum(len(b) + 1 for b in blocks) + 2
    for block in blocks:
        block_end = len(program) + len(block) + 1
        for item in block:
            if isinstance(item, bytes):
                program.append(item)
            else:
                reg, value = item
                program.append(_insn(_JNE_IMM, reg, off=block_end - (len(program) + 1), imm=value))
        program.append(_insn(_JA, off=allow_at - (len(program) + 1)))
    program += [_insn(_MOV64_IMM, 0, imm=0), _insn(_EXIT),      # deny
                _insn(_MOV64_IMM, 0, imm=1), _insn(_EXIT)]      # allow
    return b"".join(program)


def _bpf(cmd: int, attr: bytes) -> int:
    number = _BPF_SYSCALL.get(platform.machine())
    if number is None:
        raise OSError(38, f"bpf: no syscall number known for {platform.machine()}")
    buf = ctypes.create_string_buffer(attr, len(attr))
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return int(result)


def attach(cgroup_dir: Path, rules: list[DeviceRule]) -> None:
    """Allow only `rules` for device nodes used by processes of the cgroup v2 `cgroup_dir`."""
    code = compile_rules(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_text = ctypes.create_string_buffer(b"Apache")
    load_attr = struct.pack("<IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                            ctypes.addressof(insns), ctypes.addressof(license_text), 0, 0, 0, 0, 0,
                            b"dockyard_dev", 0, _BPF_CGROUP_DEVICE)
    prog_fd = _bpf(_BPF_PROG_LOAD, load_attr)
    try:
        cgroup_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # No flags: this cgroup's program replaces an older one (a restart)
            # and the container cannot attach a laxer one below it.
            _bpf(_BPF_PROG_ATTACH, struct.pack("<IIIII", cgroup_fd, prog_fd, _BPF_CGROUP_DEVICE, 0, 0))
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(prog_fd)
