"""`--init`: Debian's static tini as the container's pid 1, where Docker puts its docker-init.

Docker bind-mounts its `docker-init` (a static tini) read-only at
/sbin/docker-init and runs `/sbin/docker-init -- CMD`; so do we, with the
statically linked build of Debian's `tini` package, which runs in any image
(the dynamic /usr/bin/tini needs the image to have glibc).
"""

from __future__ import annotations

import os

from ..errors import InvalidArgument

INIT_PATH = "/sbin/docker-init"
TINI_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init")


def init_binary() -> str:
    """The host path of the init to bind-mount; InvalidArgument if none is installed."""
    for candidate in TINI_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise InvalidArgument("--init needs tini, which is not installed on the engine's machine "
                          f"(looked for {', '.join(TINI_CANDIDATES)}; Debian package \"tini\")")


def wrap(args: list[str]) -> list[str]:
    """The process arguments under the init."""
    return [INIT_PATH, "--", *args]
