"""Owner-only unix socket listeners: the host Docker socket and the supervisor's control socket.

Both grant control of the machine, so the file is created mode 0600 (a umask
around bind, so it is never briefly open to others), and both are stopped from
another thread than the one blocked in accept().
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def owner_only_listener(path: Path, backlog: int) -> socket.socket:
    """A listening unix socket at `path`, mode 0600; OSError (nothing left open) if it cannot be made."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    finally:
        os.umask(old_umask)
    return listener


def close_listener(listener: socket.socket) -> None:
    """Close a listener, waking the accept() blocked on it in another thread."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()
