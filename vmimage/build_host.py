"""Whether this host can build the guest image itself, and if not, why.

Building is Linux-only: it runs Debian's apt, dpkg-deb and mmdebstrap, and
mmdebstrap's unshare mode (Linux user namespaces) for a normal user. A host
that cannot build boots an imported image instead (vmimage.image_archive).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys

from .initramfs import BUSYBOX
from .rootfs import unprivileged_blocker

# Normal users' PATH often lacks the sbin folders, where mkfs.ext4 and chroot live.
SBIN_DIRS = ("/usr/sbin", "/sbin")
TOOLS = {"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg", "mmdebstrap": "mmdebstrap",
         "fakeroot": "fakeroot", "mkfs.ext4": "e2fsprogs", "tar": "tar"}


def tool_path() -> str:
    """PATH with the sbin folders appended (what the build's subprocesses run with)."""
    parts = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
    return os.pathsep.join(parts + [d for d in SBIN_DIRS if d not in parts])


def local_build_blocker() -> str | None:
    """A one-line reason why no guest image can be built here, or None when one can."""
    if not sys.platform.startswith("linux"):
        return f"building the guest image needs a Debian-like Linux host, not {platform.system()}"
    path = tool_path()
    missing = sorted({package for tool, package in TOOLS.items() if not shutil.which(tool, path=path)})
    if missing:
        return f"building the guest image needs Debian's {', '.join(missing)} (not found on this host)"
    if not BUSYBOX.is_file():
        return f"building the guest image needs {BUSYBOX} (apt-get install busybox-static)"
    return unprivileged_blocker()
