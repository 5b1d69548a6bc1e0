"""A real, minimal container root filesystem for launcher tests: Debian's static busybox.

`make_busybox_rootfs(dest)` lays out /bin/busybox with every applet as a
symlink, the usual top-level directories, and /etc/passwd + /etc/group with
root, nobody and an unprivileged `app` user (uid 1000, also in group `staff`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

PASSWD = """root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
"""
GROUP = """root:x:0:
tty:x:5:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
"""
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def make_busybox_rootfs(dest: Path) -> Path:
    """Create the rootfs at `dest` (must not exist) and return it."""
    if not BUSYBOX.exists():
        raise RuntimeError("tests need Debian's busybox-static (/bin/busybox)")
    dest.mkdir(parents=True)
    for name in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
                 "root", "var", "mnt", "home/app"):
        (dest / name).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").mkdir(mode=0o1777)
    os.chmod(dest / "tmp", 0o1777)
    os.chown(dest / "home/app", 1000, 1000)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], check=True,
                             capture_output=True, text=True).stdout.split()
    for applet in applets:
        link = dest / applet
        if applet != "bin/busybox" and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    (dest / "etc/hostname").write_text("image-hostname\n")
    return dest
