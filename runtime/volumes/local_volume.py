"""The `local` volume driver's options: `type`, `device` and `o`, mounted as dockerd does.

`docker volume create -o type=tmpfs -o device=tmpfs -o o=size=10m` or
`-o type=none -o o=bind -o device=/host/dir` make a volume whose data directory is a
mount: mount(2) of `device` with filesystem `type`, and `o` split into mount flags
(ro, nosuid, bind, ...) and filesystem data (size=10m, uid=1000, ...). Like dockerd, the
mount is made on the volume's own `_data` directory when the first container using the
volume starts and undone when the last one stops, so a tmpfs volume starts empty each time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..linux import syscalls as sc

VALID_OPTIONS = ("type", "device", "o", "size")

# The flag words of mount(8) that mount(2) takes as flags (moby's mount.ParseOptions);
# a word starting with "no" clears the flag where the table says so.
_SET_FLAGS = {
    "ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV, "noexec": sc.MS_NOEXEC,
    "sync": sc.MS_SYNCHRONOUS, "dirsync": sc.MS_DIRSYNC, "noatime": sc.MS_NOATIME,
    "nodiratime": sc.MS_NODIRATIME, "bind": sc.MS_BIND, "rbind": sc.MS_BIND | sc.MS_REC,
    "relatime": sc.MS_RELATIME, "strictatime": sc.MS_STRICTATIME,
}
_CLEAR_FLAGS = {
    "rw": sc.MS_RDONLY, "suid": sc.MS_NOSUID, "dev": sc.MS_NODEV, "exec": sc.MS_NOEXEC,
    "async": sc.MS_SYNCHRONOUS, "atime": sc.MS_NOATIME, "diratime": sc.MS_NODIRATIME,
    "norelatime": sc.MS_RELATIME, "nostrictatime": sc.MS_STRICTATIME,
}


@dataclass(frozen=True)
class MountOptions:
    """What mount(2) gets for a volume with driver options."""

    fstype: str
    device: str
    flags: int
    data: str

    def describe(self, target: str) -> str:
        """dockerd's wording of the mount, for error messages."""
        flags = f", flags: {self.flags:#x}" if self.flags else ""
        data = f", data: {self.data}" if self.data else ""
        return f"mount {self.device}:{target}{flags}{data}"


def validate_options(name: str, options: dict[str, str]) -> MountOptions | None:
    """Check a create request's DriverOpts; None when there are none (a plain directory).

    InvalidArgument names the option dockerd's local driver would refuse.
    """
    if not options:
        return None
    for key in options:
        if key not in VALID_OPTIONS:
            raise InvalidArgument(f'create {name}: invalid option: "{key}"')
    if options.get("size"):
        # dockerd's local driver sizes only on an XFS root with project quotas.
        raise InvalidArgument(f"create {name}: quota size requested but no quota support")
    fstype, device = options.get("type", ""), options.get("device", "")
    if fstype and not device:
        raise InvalidArgument(f'create {name}: missing required option: "device"')
    if device and not fstype:
        raise InvalidArgument(f'create {name}: missing required option: "type"')
    if not fstype:
        if options.get("o"):
            raise InvalidArgument(f'create {name}: missing required option: "type"')
        return None
    if fstype == "none" and not device.startswith("/"):
        raise InvalidArgument(f"create {name}: device must be an absolute path for a bind "
                              f"mount: {device}")
    flags, data = parse_mount_options(options.get("o", ""))
    if fstype == "none" and not flags & sc.MS_BIND:
        # mount(2) knows no filesystem "none": only o=bind makes sense with it.
        raise InvalidArgument(f'create {name}: type "none" needs o=bind (or rbind)')
    return MountOptions(fstype, device, flags, data)


def parse_mount_options(o: str) -> tuple[int, str]:
    """`o` as mount(2) flags and the remaining comma-separated filesystem data."""
    flags, data = 0, []
    for word in (w for w in o.split(",") if w):
        if word in _SET_FLAGS:
            flags |= _SET_FLAGS[word]
        elif word in _CLEAR_FLAGS:
            flags &= ~_CLEAR_FLAGS[word]
        elif word == "defaults":
            continue
        else:
            data.append(word)
    return flags, ",".join(data)


def mount_volume(opts: MountOptions, target: str) -> None:
    """Mount the volume's filesystem on its data directory; InvalidArgument as dockerd says it."""
    try:
        sc.mount(opts.device, target, opts.fstype, opts.flags, opts.data or None)
        if opts.flags & sc.MS_BIND and opts.flags & sc.MS_RDONLY:
            # A bind mount ignores MS_RDONLY until it is remounted.
            sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    except OSError as err:
        raise InvalidArgument(f"error while mounting volume '{target}': failed to mount local "
                              f"volume: {opts.describe(target)}: "
                              f"{os.strerror(err.errno or 0).lower()}") from None


def is_mounted(path: str) -> bool:
    """Whether something is mounted on `path`, from /proc/self/mountinfo.

    os.path.ismount compares devices, so it misses a bind mount from the same filesystem.
    """
    want = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split(b" ", 5)
                if len(fields) > 4 and _unescape(fields[4]) == want:
                    return True
    except OSError:
        return os.path.ismount(path)
    return False


def _unescape(field: bytes) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out, i = bytearray(), 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return os.fsdecode(bytes(out))


def unmount_volume(target: str) -> None:
    """Undo mount_volume (lazily: a process still inside cannot keep it busy)."""
    sc.umount2(target, sc.MNT_DETACH)
