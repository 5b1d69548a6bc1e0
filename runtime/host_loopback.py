"""Where the user's host is reached from the machine the engine runs on.

Inside the Dockyard VM the host's loopback answers at the user-mode network's
gateway (10.0.2.2); the guest init exports it as DOCKYARD_HOST_LOOPBACK. That
one address makes `127.0.0.1:PORT/image` pull from the host's registry and
`host.docker.internal` reach host services. Natively it is unset: the host is
this machine.
"""

from __future__ import annotations

import os

HOST_LOOPBACK_ENV = "DOCKYARD_HOST_LOOPBACK"


def host_loopback_address() -> str:
    """The host's loopback as seen from here, or "" when this machine is the host."""
    return os.environ.get(HOST_LOOPBACK_ENV, "").strip()
