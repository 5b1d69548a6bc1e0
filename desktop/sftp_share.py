"""Fallback shared folder: the guest mounts a host folder with reverse SFTP.

When neither virtiofs nor 9p is available, the guest runs `sshfs -o slave`
(SFTP over its stdin/stdout, no network connection of its own) in an exec
channel of the existing SSH link, and the host answers that channel with
paramiko's SFTP server confined to the shared folder. Nothing listens on
the host, and no guest credentials for the host are needed.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import secrets
import shlex
import threading
import time
from pathlib import Path
from typing import cast

import paramiko
from paramiko.sftp import SFTP_OK
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_handle import SFTPHandle
from paramiko.sftp_server import SFTPServer
from paramiko.sftp_si import SFTPServerInterface

from desktop.ssh_link import LinkError, SshLink, close_channel

log = logging.getLogger(__name__)


def _errno(exc: OSError) -> int:
    return SFTPServer.convert_errno(exc.errno or errno.EIO)


class _LocalHandle(SFTPHandle):
    """An open host file; paramiko's SFTPHandle does reads/writes via readfile/writefile."""

    def __init__(self, fobj, flags: int) -> None:
        super().__init__(flags)
        self.fobj = fobj
        if flags & (os.O_WRONLY | os.O_RDWR):
            self.writefile = fobj
        if not flags & os.O_WRONLY:
            self.readfile = fobj

    def stat(self):
        try:
            return SFTPAttributes.from_stat(os.fstat(self.fobj.fileno()))
        except OSError as exc:
            return _errno(exc)

    def chattr(self, attr):
        try:
            _apply_attrs(self.fobj.fileno(), attr)
        except OSError as exc:
            return _errno(exc)
        return SFTP_OK


def _apply_attrs(target, attr: SFTPAttributes) -> None:
    """Apply the attributes an SFTP client sent; `target` is a path or an fd."""
    # paramiko fills a field exactly when the client sent its flag, so the casts
    # below only drop the None its stubs allow.
    flags: int = attr._flags  # type: ignore[attr-defined]  # not in types-paramiko
    if flags & attr.FLAG_PERMISSIONS:
        os.chmod(target, cast(int, attr.st_mode) & 0o7777)
    if flags & attr.FLAG_UIDGID:
        os.chown(target, cast(int, attr.st_uid), cast(int, attr.st_gid))
    if flags & attr.FLAG_AMTIME:
        os.utime(target, (cast(int, attr.st_atime), cast(int, attr.st_mtime)))
    if flags & attr.FLAG_SIZE:
        os.truncate(target, cast(int, attr.st_size))


class HostFolderSftp(SFTPServerInterface):
    """SFTP operations on one host folder, which the client sees as "/".

    Paths are normalised before being joined to the root, so ".." cannot
    climb out of it; symlinks are followed as on the host (the guest is the
    user's own VM, not an adversary, and the mount should behave like one).
    """

    def __init__(self, server, root: Path) -> None:
        super().__init__(server)
        self.root = str(Path(root).resolve())

    @staticmethod
    def _virtual(path: str) -> str:
        # normpath keeps a leading "//" (POSIX allows it a meaning): strip first.
        return posixpath.normpath("/" + path.lstrip("/"))

    def _real(self, path: str) -> str:
        virtual = self._virtual(path)
        return self.root if virtual == "/" else self.root + virtual

    def canonicalize(self, path: str) -> str:
        return self._virtual(path)

    def list_folder(self, path):
        real = self._real(path)
        try:
            out = []
            for name in os.listdir(real):
                attr = SFTPAttributes.from_stat(os.lstat(os.path.join(real, name)))
                attr.filename = name
                out.append(attr)
            return out
        except OSError as exc:
            return _errno(exc)

    def stat(self, path):
        try:
            return SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as exc:
            return _errno(exc)

    def lstat(self, path):
        try:
            return SFTPAttributes.from_stat(os.lstat(self._real(path)))
        except OSError as exc:
            return _errno(exc)

    def open(self, path, flags, attr):
        real = self._real(path)
        mode = attr.st_mode & 0o7777 if attr is not None and attr._flags & attr.FLAG_PERMISSIONS else 0o666
        try:
            fd = os.open(real, flags | getattr(os, "O_CLOEXEC", 0), mode)
        except OSError as exc:
            return _errno(exc)
        if flags & os.O_WRONLY:
            fmode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fmode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fmode = "rb"
        try:
            fobj = os.fdopen(fd, fmode)
        except OSError as exc:
            os.close(fd)
            return _errno(exc)
        return _LocalHandle(fobj, flags)

    def _call(self, fn, *args) -> int:
        try:
            fn(*args)
        except OSError as exc:
            return _errno(exc)
        return SFTP_OK

    def remove(self, path):
        return self._call(os.remove, self._real(path))

    def rename(self, oldpath, newpath):
        return self._call(os.rename, self._real(oldpath), self._real(newpath))

    def posix_rename(self, oldpath, newpath):
        return self._call(os.replace, self._real(oldpath), self._real(newpath))

    def mkdir(self, path, attr):
        mode = attr.st_mode & 0o7777 if attr is not None and attr._flags & attr.FLAG_PERMISSIONS else 0o777
        return self._call(os.mkdir, self._real(path), mode)

    def rmdir(self, path):
        return self._call(os.rmdir, self._real(path))

    def chattr(self, path, attr):
        return self._call(_apply_attrs, self._real(path), attr)

    def readlink(self, path):
        try:
            return os.readlink(self._real(path))
        except OSError as exc:
            return _errno(exc)

    def symlink(self, target_path, path):
        # Link text is stored verbatim: relative links work on both sides.
        return self._call(os.symlink, target_path, self._real(path))


class SftpShare:
    """Mounts `host_path` at `guest_path` in the guest via reverse SFTP over the link.

    The mount lives as long as its exec channel, so a dropped SSH
    connection takes it down; a supervisor thread then clears the stale
    mount point and mounts again over the reconnected link.

    No step may block for long on a FUSE mount that stopped answering:
    every guest command has a bounded timeout, and the checks for "is it
    mounted" read /proc/self/mounts for this mount's own fsname instead of
    stat()ing the mount point (which would wait on the FUSE server).
    """

    def __init__(self, link: SshLink, host_path: Path, guest_path: str, *,
                 mount_timeout_s: float = 30.0, sshfs_options: str = "allow_other",
                 sshfs_command: str = "sshfs", remount_backoff_s: float = 1.0,
                 unmount_timeout_s: float = 15.0) -> None:
        self.link = link
        self.host_path = Path(host_path)
        self.guest_path = guest_path
        self.mount_timeout_s = mount_timeout_s
        self.unmount_timeout_s = unmount_timeout_s
        self.sshfs_options = sshfs_options
        # A shell command prefix (e.g. "env LD_LIBRARY_PATH=... /opt/sshfs"),
        # not a single word: callers pass trusted values only.
        self.sshfs_command = sshfs_command
        self.remount_backoff_s = remount_backoff_s
        self.mount_count = 0
        self._chan: paramiko.Channel | None = None
        self._thread: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        # The fsname of the current mount: the first field of its line in
        # /proc/self/mounts, unique per mount (so never a stale one's).
        self._fsname: str | None = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sshfs in the guest, serve it, and return once the mount is visible."""
        if not self.host_path.is_dir():
            raise LinkError(f"cannot share {self.host_path}: not a directory")
        self._stopping.clear()
        try:
            self._mount()
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="sftp-share-watch", daemon=True)
        self._supervisor.start()

    def _mounted_check(self, fsname: str) -> str:
        # fsname is [a-z0-9-] only: no quoting or /proc escaping needed.
        return f"grep -q '^{fsname} ' /proc/self/mounts"

    def _mount(self) -> None:
        gp = shlex.quote(self.guest_path)
        fsname = f"dockyard-share-{secrets.token_hex(6)}"
        # -f keeps sshfs in this channel's process: when the channel dies,
        # sshfs dies with it (and unmounts) rather than lingering detached.
        # fuse may be a module nobody has loaded yet (no udev in the guest).
        command = (f"{{ modprobe fuse 2>/dev/null || true; }}; mkdir -p {gp} && "
                   f"exec {self.sshfs_command} -f -o slave -o {shlex.quote(self.sshfs_options)} "
                   f"-o fsname={fsname} :/ {gp}")
        chan = self.link.open_session()
        try:
            if self._stopping.is_set():  # stop() came while remounting
                raise LinkError(f"the share of {self.host_path} is stopping")
            chan.exec_command(command)
            server = SFTPServer(chan, "sftp", paramiko.ServerInterface(), HostFolderSftp, root=self.host_path)
            self._chan = chan
            self._fsname = fsname
            self._thread = threading.Thread(target=self._serve, args=(server, chan), name="sftp-share",
                                            daemon=True)
            self._thread.start()
            self._wait_mounted(chan, fsname)
        except BaseException:
            # Ends sshfs (EOF on its stdin) and with it any half-made mount.
            close_channel(chan)
            raise
        self.mount_count += 1
        log.info("shared %s at %s in the guest (sftp)", self.host_path, self.guest_path)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            thread = self._thread
            if thread is not None:
                thread.join()  # the SFTP server ends when its channel does
            if self._stopping.is_set():
                return
            log.warning("the shared folder %s lost its connection; mounting it again", self.guest_path)
            while not self._stopping.is_set():
                try:
                    self._clear_stale_mount()
                    self._mount()
                    break
                except LinkError as exc:
                    log.warning("remounting %s failed: %s", self.guest_path, exc)
                    self._stopping.wait(self.remount_backoff_s)

    def _clear_stale_mount(self) -> None:
        # A FUSE mount whose daemon died answers ENOTCONN until detached;
        # normally sshfs unmounts as it exits and there is nothing to do.
        if self._fsname is None:
            return
        gp = shlex.quote(self.guest_path)
        # -c: no canonicalising, which would stat() into the mount.
        self.link.run(f"{self._mounted_check(self._fsname)} || exit 0; "
                      f"umount -l -c {gp} 2>/dev/null || umount -l {gp}", timeout=self.unmount_timeout_s)

    @staticmethod
    def _serve(server: SFTPServer, chan: paramiko.Channel) -> None:
        try:
            server.start_subsystem("sftp", chan.get_transport(), chan)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            # sshfs exited before the SFTP handshake; _wait_mounted reports why.
            log.debug("sftp share channel ended early: %r", exc)
        finally:
            server.finish_subsystem()  # closes the channel, so sshfs does not wait on a dead server

    def _wait_mounted(self, chan: paramiko.Channel, fsname: str) -> None:
        # sshfs mounts only after its SFTP handshake and a stat of "/" were
        # answered, so the mount showing up in /proc means it is served.
        deadline = time.monotonic() + self.mount_timeout_s
        check = self._mounted_check(fsname)
        while True:
            if chan.exit_status_ready() or chan.closed:
                detail = b""
                while chan.recv_stderr_ready():
                    detail += chan.recv_stderr(65536)
                raise LinkError(f"sshfs in the guest exited before mounting {self.guest_path}: "
                                f"{detail.decode(errors='replace').strip() or 'no message'}")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                raise LinkError(f"{self.guest_path} was not mounted in the guest within {self.mount_timeout_s} s")
            try:
                # Never longer than the mount timeout, even if the guest hangs.
                if self.link.run(check, timeout=max(remaining, 1.0))[0] == 0:
                    return
            except LinkError as exc:
                raise LinkError(f"{self.guest_path} was not mounted in the guest within "
                                f"{self.mount_timeout_s} s: {exc}") from None
            # Each check is already a guest process start (~0.2 s under TCG);
            # the pause ends early if sshfs exits.
            chan.status_event.wait(0.1)

    def stop(self) -> None:
        """Unmount in the guest and end the SFTP server; bounded in time even if the guest hangs."""
        self._stopping.set()
        chan = self._chan
        if chan is not None:
            gp = shlex.quote(self.guest_path)
            unmounted = False
            try:
                if not chan.exit_status_ready() and not chan.closed:
                    # A clean unmount while sshfs is still served. Not
                    # fusermount: it stat()s the mount point first and so
                    # hangs with a server that stopped answering; umount -c
                    # fails at once instead (EBUSY if a reader is stuck).
                    rc, _, err = self.link.run(f"umount -c {gp}", timeout=self.unmount_timeout_s)
                    unmounted = rc == 0
                    if rc != 0:
                        log.warning("unmounting %s in the guest failed (%s); detaching it", self.guest_path,
                                    err.decode(errors="replace").strip())
            except LinkError as exc:
                log.warning("could not unmount %s in the guest: %s", self.guest_path, exc)
            finally:
                close_channel(chan)  # sshfs reads EOF and exits
            if not unmounted:
                # Busy, or its server stopped answering: detach it, so that
                # nothing later (a directory walk, a cleanup) hangs on it.
                try:
                    self._clear_stale_mount()
                except LinkError as exc:
                    log.warning("could not detach %s in the guest: %s", self.guest_path, exc)
        # Both end as soon as the channel is closed, unless a host file
        # operation is stuck; they are daemon threads, so do not wait long.
        deadline = time.monotonic() + 5
        if self._thread is not None:
            self._thread.join(5)
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(max(deadline - time.monotonic(), 0.1))
        self._chan = None
        self._thread = None
        self._supervisor = None
