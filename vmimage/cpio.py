"""A writer for the `newc` cpio format the kernel unpacks as an initramfs.

Written here rather than calling `cpio` (not installed) or `busybox cpio` so the
archive is reproducible: fixed owner (root), fixed mtime, sorted entries. Several
archives concatenated form one initramfs, which lets the code archive be built
on its own and appended to the cached base archive.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

TRAILER = "TRAILER!!!"


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


@dataclass
class CpioWriter:
    """Appends entries to an open binary file; call `close()` to write the trailer."""

    out: BinaryIO
    mtime: int = 0
    _next_ino: int = field(default=1, init=False)
    _dirs: set[str] = field(default_factory=set, init=False)

    def _header(self, name: str, mode: int, size: int, rdev: tuple[int, int] = (0, 0),
                nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._next_ino, mode, 0, 0, nlink, self.mtime, size, 0, 0,
                  rdev[0], rdev[1], len(encoded), 0)
        self._next_ino += 1
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.out.write(header + encoded + _pad4(len(header) + len(encoded)))

    def directory(self, name: str, mode: int = 0o755) -> None:
        """A directory and its missing parents (names are relative, no leading slash)."""
        name = name.strip("/")
        parent = os.path.dirname(name)
        if parent and parent not in self._dirs:
            self.directory(parent)
        if name in self._dirs:
            return
        self._dirs.add(name)
        self._header(name, stat.S_IFDIR | mode, 0, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """A regular file with `data`."""
        name = name.strip("/")
        if os.path.dirname(name):
            self.directory(os.path.dirname(name))
        self._header(name, stat.S_IFREG | mode, len(data))
        self.out.write(data + _pad4(len(data)))

    def symlink(self, name: str, target: str) -> None:
        """A symbolic link `name` -> `target`."""
        name = name.strip("/")
        if os.path.dirname(name):
            self.directory(os.path.dirname(name))
        data = target.encode()
        self._header(name, stat.S_IFLNK | 0o777, len(data))
        self.out.write(data + _pad4(len(data)))

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """A character device node (needs no privileges: the kernel creates it)."""
        name = name.strip("/")
        if os.path.dirname(name):
            self.directory(os.path.dirname(name))
        self._header(name, stat.S_IFCHR | mode, 0, rdev=(major, minor))

    def tree(self, source: Path, prefix: str) -> None:
        """Every file and directory under `source`, placed at `prefix` (sorted, modes kept)."""
        self.directory(prefix)
        for path in sorted(source.rglob("*")):
            name = f"{prefix.strip('/')}/{path.relative_to(source)}"
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                self.directory(name, stat.S_IMODE(st.st_mode))
            elif stat.S_ISLNK(st.st_mode):
                self.symlink(name, os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                self.file(name, path.read_bytes(), stat.S_IMODE(st.st_mode))

    def close(self) -> None:
        """Write the trailer entry that ends this archive."""
        self._header(TRAILER, 0, 0, nlink=1)


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """Parse concatenated newc archives into {name: (mode, data)} (for tests and checks)."""
    entries: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] == b"\0":
            pos += 1
            continue
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"bad cpio magic at {pos}")
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name != TRAILER:
            entries[name] = (mode, body)
    return entries
