"""The container's filesystem view, built inside its private mount namespace.

Overlay root, /proc, /sys, a minimal /dev, the engine's /etc files, the user's
bind and tmpfs mounts, Docker's masked and read-only paths, then pivot_root.
Everything here runs in the forked container child: plain syscalls, no
logging, no locks. Mount targets are resolved inside the new root so a
symlink in an image can never point a mount at the host.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from . import linux_syscalls as sc
from typing import Callable

from .container_spec import BindMount, ContainerSpec, DeviceNode, TmpfsMount
from .overlay_mount import mount_overlay


class RootfsError(Exception):
    """Setting up the container's filesystem failed; the message is for the user."""


# asm-generic/ioctls.h: unlock a pty master so its slave can be opened; its slave's number.
_TIOCSPTLCK = 0x40045431
_TIOCGPTN = 0x80045430
_PROC_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
_DEVICES = (  # name, major, minor (moby/runc default devices)
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
    ("urandom", 1, 9), ("tty", 5, 0),
)
_DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx"),
)
# mount(8) option words that are flags, not filesystem data: word -> (set, clear).
_FLAG_WORDS: dict[str, tuple[int, int]] = {
    "ro": (sc.MS_RDONLY, 0), "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0), "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0), "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0), "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0), "async": (0, sc.MS_SYNCHRONOUS),
    "noatime": (sc.MS_NOATIME, 0), "atime": (0, sc.MS_NOATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0), "diratime": (0, sc.MS_NODIRATIME),
    "relatime": (sc.MS_RELATIME, 0), "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0), "dirsync": (sc.MS_DIRSYNC, 0),
}
# statvfs f_flag bits that equal MS_* bits and must survive a read-only remount
# (ST_RELATIME is the exception: 4096 there, MS_RELATIME in mount(2)).
_KEPT_ON_REMOUNT = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME | sc.MS_NODIRATIME
_ST_RELATIME = 4096


def resolve_in_root(root: str, path: str, max_links: int = 40) -> str:
    """Host path of `path` as seen from inside `root`, following symlinks without escaping it."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root + "/" + "/".join(resolved + [part])
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                raise RootfsError(f"too many levels of symbolic links resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return root + "/" + "/".join(resolved) if resolved else root


def _ensure_dir(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _ensure_file(path: str) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        return
    _ensure_dir(os.path.dirname(path))
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _remount_readonly(path: str, extra: int = 0) -> None:
    flags = os.statvfs(path).f_flag
    kept = flags & _KEPT_ON_REMOUNT | (sc.MS_RELATIME if flags & _ST_RELATIME else 0)
    sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | kept | extra)


def bind(source: str, target: str, readonly: bool) -> None:
    """Bind `source` (file or directory, recursively) onto `target`, creating the target."""
    if os.path.isdir(source):
        _ensure_dir(target)
    else:
        _ensure_file(target)
    sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
    if readonly:
        _remount_readonly(target)


def parse_mount_options(options: str, default_flags: int = 0) -> tuple[int, str]:
    """Split "size=64m,ro,mode=1777" into (MS_* flags, data string)."""
    flags, data = default_flags, []
    for word in filter(None, (w.strip() for w in options.split(","))):
        if word in _FLAG_WORDS:
            set_bits, clear_bits = _FLAG_WORDS[word]
            flags = (flags | set_bits) & ~clear_bits
        else:
            data.append(word)
    return flags, ",".join(data)


def _open_console(dev: str) -> tuple[int, int]:
    """A new pty of the container's devpts instance; its slave also becomes /dev/console.

    As runc does for a terminal: the process sees /dev/pts/N (ttyname works) and
    /dev/console is the same terminal. Opened before any user mount, so it is
    always this container's own devpts. Returns (master, slave), close-on-exec;
    the child runs only this code so far, so the path lookups cannot be raced.
    """
    master = os.open(dev + "/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
    (number,) = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))
    slave_path = f"{dev}/pts/{number}"
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    _ensure_file(dev + "/console")
    sc.mount(slave_path, dev + "/console", None, sc.MS_BIND)
    return master, slave


def _mount_shm(dev: str, source: str | None, size: int) -> None:
    """/dev/shm: a tmpfs of its own, or the host's or a shareable container's (--ipc)."""
    os.mkdir(dev + "/shm", 0o1777)
    if source is None:
        sc.mount("shm", dev + "/shm", "tmpfs", _PROC_FLAGS, f"mode=1777,size={size}")
    else:
        sc.mount(source, dev + "/shm", None, sc.MS_BIND | sc.MS_REC)


def _make_devices(root: str, nodes: list[DeviceNode]) -> None:
    """--device nodes at their paths in the container, owned and moded as on the host."""
    for node in nodes:
        path = resolve_in_root(root, node.path)
        _ensure_dir(os.path.dirname(path))
        if os.path.lexists(path):
            os.unlink(path)
        kind = stat.S_IFBLK if node.kind == "b" else stat.S_IFCHR
        try:
            os.mknod(path, kind | node.mode, os.makedev(node.major, node.minor))
        except PermissionError:
            bind(node.host_path, path, readonly=False)
            continue
        os.chmod(path, node.mode)   # mknod applies the umask
        os.chown(path, node.uid, node.gid)


def _mount_dev(root: str, tty: bool, console: bool, shm_size: int, shm: str | None = None,
               no_shm: bool = False) -> tuple[int, int] | None:
    dev = root + "/dev"
    _ensure_dir(dev)
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in _DEVICES:
        path = f"{dev}/{name}"
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        except PermissionError:
            # Without CAP_MKNOD (nested runtimes) a bind of the host node does the same job.
            bind(f"/dev/{name}", path, readonly=False)
    os.mkdir(dev + "/pts", 0o755)
    sc.mount("devpts", dev + "/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620,gid=5")
    if not no_shm:
        _mount_shm(dev, shm, shm_size)
    os.mkdir(dev + "/mqueue", 0o755)
    sc.mount("mqueue", dev + "/mqueue", "mqueue", _PROC_FLAGS)
    for target, name in _DEV_SYMLINKS:
        os.symlink(target, f"{dev}/{name}")
    if console:
        return _open_console(dev)
    if tty:
        # A pty the caller made on the host's devpts and passed as stdio. As runc
        # does, the terminal also appears as /dev/console, which lets ttyname()
        # find a name for a pty that lives in another devpts instance.
        # The bind source must be a path in this mount namespace (a copy of the
        # engine's), not the fd itself, whose mount belongs to the original one.
        _ensure_file(dev + "/console")
        sc.mount(os.ttyname(0), dev + "/console", None, sc.MS_BIND)
    return None


def _copy_host_devices(dev: str) -> None:
    """Privileged containers see the host's devices (top level of /dev), as in Docker."""
    for entry in os.scandir("/dev"):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            continue
        path = f"{dev}/{entry.name}"
        if not os.path.lexists(path):
            os.mknod(path, st.st_mode, st.st_rdev)


def _mount_proc_sys(root: str, privileged: bool) -> None:
    proc = resolve_in_root(root, "/proc")
    _ensure_dir(proc)
    sc.mount("proc", proc, "proc", _PROC_FLAGS)
    sys_dir = resolve_in_root(root, "/sys")
    _ensure_dir(sys_dir)
    readonly = 0 if privileged else sc.MS_RDONLY
    try:
        sc.mount("sysfs", sys_dir, "sysfs", _PROC_FLAGS | readonly)
    except PermissionError:
        # sysfs refuses a fresh mount when we do not own the net namespace; the host's will do.
        sc.mount("/sys", sys_dir, None, sc.MS_BIND | sc.MS_REC)
        if readonly:
            _remount_readonly(sys_dir)


def _user_mount(root: str, mount: BindMount | TmpfsMount) -> None:
    target = resolve_in_root(root, mount.target)
    if isinstance(mount, BindMount):
        if not os.path.exists(mount.source):
            raise RootfsError(f"invalid mount config: bind source path does not exist: {mount.source}")
        bind(mount.source, target, mount.readonly)
        return
    flags, data = parse_mount_options(mount.options, sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    _ensure_dir(target)
    sc.mount("tmpfs", target, "tmpfs", flags, data or None)


def _mask_paths(root: str, masked: tuple[str, ...], readonly: tuple[str, ...]) -> None:
    for path in masked:
        target = resolve_in_root(root, path)
        try:
            is_dir = stat.S_ISDIR(os.stat(target).st_mode)
        except FileNotFoundError:
            continue
        if is_dir:
            sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY, None)
        else:
            sc.mount(root + "/dev/null", target, None, sc.MS_BIND)
    for path in readonly:
        target = resolve_in_root(root, path)
        if not os.path.exists(target):
            continue
        sc.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
        _remount_readonly(target)


def _pivot(root: str) -> None:
    os.chdir(root)
    try:
        # pivot_root(".", ".") stacks the old root on the new one, so no put_old
        # directory has to be created in the container's writable layer.
        sc.pivot_root(".", ".")
        sc.umount2(".", sc.MNT_DETACH)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        # The host itself runs from an initramfs (rootfs cannot be pivoted): move + chroot.
        sc.mount(".", "/", None, sc.MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def setup_rootfs(spec: ContainerSpec, mountpoint: str, tty: bool, console: bool = False,
                 before_pivot: Callable[[str], None] | None = None) -> tuple[int, int] | None:
    """Build the container's root under `mountpoint` and pivot into it.

    Expects to run in a fresh mount namespace (and pid namespace for /proc).
    With `console`, a pty is opened in the container's own devpts and its slave
    bound at /dev/console: returns (master, slave), else None. `before_pivot`
    gets the root's path last, while host paths can still be bound.
    """
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    privileged = spec.process.privileged
    root = mount_overlay(spec.lower_dirs, spec.upper_dir, spec.work_dir, mountpoint)
    _mount_proc_sys(root, privileged)
    namespaces = spec.namespaces
    # The child exits on failure: nothing to close.
    pty = _mount_dev(root, tty, console, spec.shm_size, namespaces.shm_source, namespaces.no_shm)
    if privileged:
        _copy_host_devices(root + "/dev")
    _make_devices(root, spec.devices)
    for path, source in spec.etc_files.items():
        bind(os.fspath(source), resolve_in_root(root, path), readonly=False)
    for mount in spec.mounts:
        _user_mount(root, mount)
    if not privileged:
        # Docker masks nothing for privileged containers, whatever the lists say.
        _mask_paths(root, spec.masked_paths, spec.readonly_paths)
    if before_pivot is not None:
        before_pivot(root)
    _pivot(root)
    if spec.readonly_rootfs:
        _remount_readonly("/")
    return pty
