"""The container's filesystem view, built inside its private mount namespace.

Overlay root, /proc, /sys, a minimal /dev, the engine's /etc files, the user's
bind and tmpfs mounts, Docker's masked and read-only paths, then pivot_root.
Everything here runs in the forked container child: plain syscalls, no
logging, no locks. Every mount target is opened inside the new root with
path_scope.open_in_root (symlinks followed in scope) and mounted through that
O_PATH fd (/proc/self/fd/N), never through a path string: neither a symlink
in the image nor one swapped in by another container sharing a volume can
point a mount (or a directory made for one) at the host.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Callable

from .. import path_scope
from ..linux import syscalls as sc
from ..linux.overlay_mount import mount_overlay
from .spec import BindMount, ContainerSpec, DeviceNode, TmpfsMount


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


def _open_target(root_fd: int, path: str, create: str = "") -> int:
    """An O_PATH fd of `path` inside the container's root (symlinks followed in scope)."""
    try:
        return path_scope.open_in_root(root_fd, path, create=create)
    except path_scope.ScopeError as err:
        raise RootfsError(f"invalid mount destination {path}: {err.strerror}") from None


def resolve_in_root(root: str, path: str) -> str:
    """The real path of directory `path` inside `root` (symlinks followed in scope; made
    if missing), for callers that must mount by path string.

    Only for places no one else can write (the kernel file systems under /sys):
    a path string can be redirected by a symlink swapped in after this returns,
    which is why the mounts above go through fds instead.
    """
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _open_target(root_fd, path, "dir")
    finally:
        os.close(root_fd)
    try:
        return os.readlink(path_scope.fd_path(fd))
    finally:
        os.close(fd)


def _refuse_root(root_fd: int, fd: int, path: str) -> None:
    # An image symlink such as /data -> / would put a mount over the whole root.
    st, root = os.fstat(fd), os.fstat(root_fd)
    if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
        raise RootfsError(f"invalid mount destination {path}: it resolves to / in the container")


def _remount_readonly(path: str, extra: int = 0, fd: int | None = None) -> None:
    flags = (os.fstatvfs(fd) if fd is not None else os.statvfs(path)).f_flag
    kept = flags & _KEPT_ON_REMOUNT | (sc.MS_RELATIME if flags & _ST_RELATIME else 0)
    sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | kept | extra)


def _mount_in_root(root_fd: int, path: str, source: str | None, fstype: str | None,
                   flags: int, data: str | None = None, create: str = "dir") -> os.stat_result:
    """mount(2) at `path` inside the root, through an fd (a swapped symlink cannot redirect it).

    Returns the stat of what the new mount covers.
    """
    fd = _open_target(root_fd, path, create)
    try:
        _refuse_root(root_fd, fd, path)
        covered = os.fstat(fd)
        sc.mount(source, path_scope.fd_path(fd), fstype, flags, data)
        return covered
    finally:
        os.close(fd)


def _bind_in_root(root_fd: int, path: str, source: str | None, readonly: bool) -> None:
    """Bind `source` (a host file or directory; None: `path` itself) at `path` inside the root."""
    target = _open_target(root_fd, path, "" if source is None else
                          ("dir" if os.path.isdir(source) else "file"))
    try:
        _refuse_root(root_fd, target, path)
        expected = os.fstat(target) if source is None else os.stat(source)
        sc.mount(source or path_scope.fd_path(target), path_scope.fd_path(target), None,
                 sc.MS_BIND | sc.MS_REC)
    finally:
        os.close(target)
    if not readonly:
        return
    # The fd above still names the directory under the new mount: reach the mount by
    # looking the path up again, and check it is the one just made before remounting.
    mounted = _open_target(root_fd, path)
    try:
        st = os.fstat(mounted)
        if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
            raise RootfsError(f"mount destination {path} changed while it was being mounted")
        _remount_readonly(path_scope.fd_path(mounted), fd=mounted)
    finally:
        os.close(mounted)


def bind_into_root(root_fd: int, path: str, source: str, readonly: bool) -> None:
    """Bind the host path `source` at `path` inside the root (a mount point is made in scope
    when missing), read-only if asked: how a container's volumes and binds are mounted, also
    for `docker cp` into a stopped container's root (containers/container_fs_view)."""
    _bind_in_root(root_fd, path, source, readonly)


def _drop_symlink(root_fd: int, path: str) -> None:
    """Remove a symlink the image has at `path` (its directory resolved in scope).

    dockerd does so for the files it provides (/etc/hosts, /etc/hostname,
    /etc/resolv.conf): they become plain files wherever the image's link pointed.
    """
    parts = path_scope.components(path)
    if not parts:
        return
    parent = _open_target(root_fd, "/".join(parts[:-1]), "dir")
    try:
        if stat.S_ISLNK(os.lstat(parts[-1], dir_fd=parent).st_mode):
            os.unlink(parts[-1], dir_fd=parent)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


def _ensure_file(path: str) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        return
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


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


def _make_devices(root_fd: int, nodes: list[DeviceNode]) -> None:
    """--device nodes at their paths in the container, owned and moded as on the host."""
    for node in nodes:
        parts = path_scope.components(node.path)
        if not parts:
            raise RootfsError(f"invalid device path {node.path}")
        parent = _open_target(root_fd, "/".join(parts[:-1]), "dir")
        try:
            name = parts[-1]
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            kind = stat.S_IFBLK if node.kind == "b" else stat.S_IFCHR
            try:
                os.mknod(name, kind | node.mode, os.makedev(node.major, node.minor), dir_fd=parent)
            except PermissionError:
                _bind_in_root(root_fd, node.path, node.host_path, readonly=False)
                continue
            made = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                # Through the fd: mknod applies the umask, and the name is not trusted twice.
                os.chmod(path_scope.fd_path(made), node.mode)
                os.chown(path_scope.fd_path(made), node.uid, node.gid)
            finally:
                os.close(made)
        finally:
            os.close(parent)


def _mount_dev(root_fd: int, tty: bool, console: bool, privileged: bool, shm_size: int,
               shm: str | None = None, no_shm: bool = False) -> tuple[int, int] | None:
    covered = _mount_in_root(root_fd, "/dev", "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME,
                             "mode=755,size=65536k")
    # Everything below lives in that fresh tmpfs: reach it through an fd of its root,
    # never through the image's path to it (which may be a symlink).
    dev_fd = _open_target(root_fd, "/dev")
    try:
        if os.fstat(dev_fd).st_dev == covered.st_dev:
            raise RootfsError("/dev changed while it was being mounted")
        return _fill_dev(path_scope.fd_path(dev_fd), tty, console, privileged, shm_size, shm, no_shm)
    finally:
        os.close(dev_fd)


def _fill_dev(dev: str, tty: bool, console: bool, privileged: bool, shm_size: int,
              shm: str | None, no_shm: bool) -> tuple[int, int] | None:
    for name, major, minor in _DEVICES:
        path = f"{dev}/{name}"
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        except PermissionError:
            # Without CAP_MKNOD (nested runtimes) a bind of the host node does the same job.
            _ensure_file(path)
            sc.mount(f"/dev/{name}", path, None, sc.MS_BIND)
    os.mkdir(dev + "/pts", 0o755)
    sc.mount("devpts", dev + "/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620,gid=5")
    if not no_shm:
        _mount_shm(dev, shm, shm_size)
    os.mkdir(dev + "/mqueue", 0o755)
    sc.mount("mqueue", dev + "/mqueue", "mqueue", _PROC_FLAGS)
    for target, name in _DEV_SYMLINKS:
        os.symlink(target, f"{dev}/{name}")
    if privileged:
        _copy_host_devices(dev)
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


def _mount_proc_sys(root_fd: int, privileged: bool) -> None:
    _mount_in_root(root_fd, "/proc", "proc", "proc", _PROC_FLAGS)
    readonly = 0 if privileged else sc.MS_RDONLY
    try:
        _mount_in_root(root_fd, "/sys", "sysfs", "sysfs", _PROC_FLAGS | readonly)
    except PermissionError:
        # sysfs refuses a fresh mount when we do not own the net namespace; the host's will do.
        _bind_in_root(root_fd, "/sys", "/sys", readonly=bool(readonly))


def _user_mount(root_fd: int, mount: BindMount | TmpfsMount) -> None:
    if isinstance(mount, BindMount):
        if not os.path.exists(mount.source):
            raise RootfsError(f"invalid mount config: bind source path does not exist: {mount.source}")
        _bind_in_root(root_fd, mount.target, mount.source, mount.readonly)
        return
    flags, data = parse_mount_options(mount.options, sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    _mount_in_root(root_fd, mount.target, "tmpfs", "tmpfs", flags, data or None)


def _mask_paths(root_fd: int, masked: tuple[str, ...], readonly: tuple[str, ...]) -> None:
    for path in masked:
        try:
            fd = _open_target(root_fd, path)
        except FileNotFoundError:
            continue
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                sc.mount("tmpfs", path_scope.fd_path(fd), "tmpfs", sc.MS_RDONLY, None)
            else:
                sc.mount("/dev/null", path_scope.fd_path(fd), None, sc.MS_BIND)
        finally:
            os.close(fd)
    for path in readonly:
        try:
            _bind_in_root(root_fd, path, None, readonly=True)
        except FileNotFoundError:
            continue


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
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _mount_proc_sys(root_fd, privileged)
        namespaces = spec.namespaces
        # The child exits on failure: nothing to close.
        pty = _mount_dev(root_fd, tty, console, privileged, spec.shm_size, namespaces.shm_source,
                         namespaces.no_shm)
        _make_devices(root_fd, spec.devices)
        for path, source in spec.etc_files.items():
            _drop_symlink(root_fd, path)
            _bind_in_root(root_fd, path, os.fspath(source), readonly=False)
        for mount in spec.mounts:
            _user_mount(root_fd, mount)
        # As dockerd: the working directory is made inside the root, symlinks followed in
        # scope (an image's /w -> /elsewhere makes /elsewhere/... in the container).
        os.close(_open_target(root_fd, spec.process.cwd or "/", "dir"))
        if not privileged:
            # Docker masks nothing for privileged containers, whatever the lists say.
            _mask_paths(root_fd, spec.masked_paths, spec.readonly_paths)
    finally:
        os.close(root_fd)
    if before_pivot is not None:
        before_pivot(root)
    _pivot(root)
    if spec.readonly_rootfs:
        _remount_readonly("/")
    return pty
