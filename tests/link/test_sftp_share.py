"""SftpShare: real `sshfs -o slave` behind a real sshd, served by our SFTP server.

The sshd runs on this machine, so the "guest" mount point is a temp dir
here; all guest-side actions still go through commands over the link.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

from desktop.sftp_share import HostFolderSftp, SftpShare
from desktop.ssh_link import LinkError


def _fuse_mounts_under(root: Path) -> list[str]:
    """FUSE mount points at or below `root`, from /proc (never stat()ing them)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split(" ")
        point = (fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
                 .replace("\\134", "\\"))
        if fields[2].startswith("fuse") and (point == str(root) or point.startswith(f"{root}/")):
            found.append(point)
    return found


@pytest.fixture(autouse=True)
def no_mount_left_behind(tmp_path):
    """Fail a test that leaves a FUSE mount behind, and detach it.

    The "guest" mounts land in this machine's pytest temp dirs: a mount
    whose server is gone would otherwise wedge whatever walks them later
    (pytest's own cleanup of old temp dirs included).
    """
    yield
    left = _fuse_mounts_under(tmp_path)
    for point in left:
        subprocess.run(["umount", "-l", "-c", point], timeout=10, check=False)
    assert not left, f"FUSE mounts left behind (now detached): {left}"


@pytest.fixture
def share(link, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "from-host.txt").write_text("written on the host\n")
    sh = SftpShare(link, host, str(tmp_path / "guest" / "mnt"))
    sh.start()
    yield sh
    sh.stop()


def _guest(link, command: str) -> bytes:
    rc, out, err = link.run(command)
    assert rc == 0, f"{command!r} failed ({rc}): {err.decode()}"
    return out


def test_guest_sees_host_files(link, share):
    gp = shlex.quote(share.guest_path)
    assert _guest(link, f"cat {gp}/from-host.txt") == b"written on the host\n"
    assert _guest(link, f"ls {gp}").split() == [b"from-host.txt"]


def test_guest_writes_land_on_the_host(link, share):
    gp = shlex.quote(share.guest_path)
    _guest(link, f"echo hello from the guest > {gp}/new.txt")
    assert (share.host_path / "new.txt").read_text() == "hello from the guest\n"
    _guest(link, f"head -c 3000000 /dev/urandom > {gp}/big.bin && sha256sum {gp}/big.bin > /tmp/dy-sum-$$ "
                 f"&& cat /tmp/dy-sum-$$ && rm /tmp/dy-sum-$$")
    assert (share.host_path / "big.bin").stat().st_size == 3000000


def test_directory_operations(link, share):
    gp = shlex.quote(share.guest_path)
    _guest(link, f"mkdir -p {gp}/a/b && echo x > {gp}/a/b/f && mv {gp}/a/b/f {gp}/a/g && chmod 600 {gp}/a/g "
                 f"&& ln -s g {gp}/a/link && rmdir {gp}/a/b")
    assert (share.host_path / "a" / "g").read_text() == "x\n"
    assert oct((share.host_path / "a" / "g").stat().st_mode & 0o777) == "0o600"
    assert (share.host_path / "a" / "link").readlink().as_posix() == "g"
    assert not (share.host_path / "a" / "b").exists()
    assert _guest(link, f"cat {gp}/a/link") == b"x\n"
    _guest(link, f"rm {gp}/a/link {gp}/a/g")
    assert list((share.host_path / "a").iterdir()) == []


def test_stop_unmounts(link, tmp_path):
    host = tmp_path / "h"
    host.mkdir()
    sh = SftpShare(link, host, str(tmp_path / "m"))
    sh.start()
    assert link.run(f"mountpoint -q {tmp_path / 'm'}")[0] == 0
    sh.stop()
    assert link.run(f"mountpoint -q {tmp_path / 'm'}")[0] != 0
    assert not sh.is_running


def test_sshfs_failure_is_reported(link, tmp_path):
    host = tmp_path / "h"
    host.mkdir()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    sh = SftpShare(link, host, str(not_a_dir))
    with pytest.raises(LinkError, match="exited before mounting|not mounted"):
        sh.start()


def test_paths_cannot_climb_out_of_the_root(tmp_path):
    si = HostFolderSftp(None, tmp_path)
    root = str(tmp_path.resolve())
    assert si._real("/../../etc/passwd") == root + "/etc/passwd"
    assert si._real("..") == root
    assert si._real("a/../b") == root + "/b"
    assert si._real("//etc") == root + "/etc"
    assert si.canonicalize(".") == "/"


def test_missing_sshfs_is_reported(link, tmp_path):
    host = tmp_path / "h"
    host.mkdir()
    # As in a guest image built without sshfs.
    sh = SftpShare(link, host, str(tmp_path / "m"), sshfs_command="/nonexistent/sshfs")
    with pytest.raises(LinkError, match="exited before mounting.*nonexistent/sshfs"):
        sh.start()


def test_share_comes_back_after_the_link_drops(link, share, sshd):
    gp = shlex.quote(share.guest_path)
    old = link.transport()
    sshd.kill_sessions()  # kills the connection, and sshfs's channel with it
    deadline = time.monotonic() + 60
    while True:
        try:
            rc, out, _ = link.run(f"cat {gp}/from-host.txt")
        except LinkError:
            rc, out = -1, b""
        if rc == 0 and share.mount_count == 2:
            break
        assert time.monotonic() < deadline, "the share was not mounted again"
        time.sleep(0.1)
    assert out == b"written on the host\n"
    assert link.transport() is not old
    _guest(link, f"echo after > {gp}/after.txt")
    assert (share.host_path / "after.txt").read_text() == "after\n"


def test_a_server_that_stopped_answering_cannot_wedge_stop(link, tmp_path, monkeypatch):
    host = tmp_path / "h"
    host.mkdir()
    (host / "f").write_text("x\n")
    entered, release = threading.Event(), threading.Event()
    real_open = HostFolderSftp.open

    def stuck_open(self, path, flags, attr):
        entered.set()
        release.wait(60)
        return real_open(self, path, flags, attr)

    monkeypatch.setattr(HostFolderSftp, "open", stuck_open)
    gp = str(tmp_path / "m")
    sh = SftpShare(link, host, gp, unmount_timeout_s=10)
    sh.start()
    try:
        reader = link.open_session()
        reader.exec_command(f"cat {shlex.quote(gp)}/f")  # hangs inside the FUSE mount
        assert entered.wait(30)
        t0 = time.monotonic()
        sh.stop()
        assert time.monotonic() - t0 < 25
        assert _fuse_mounts_under(tmp_path) == []
        # The reader stuck in the mount was let go with an error.
        assert reader.status_event.wait(30)
        assert reader.recv_exit_status() != 0
        reader.close()
    finally:
        release.set()
        sh.stop()
