"""One app per Dockyard home and machine: a second launch brings the first one forward.

The first instance listens on a QLocalServer named for the home and machine;
a later launch connects, sends "show", and exits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)
SHOW = b"show\n"


def server_name(machine: str) -> str:
    from desktop import paths

    return f"dockyard-desktop-{paths.home_id()}-{machine}"


def ask_running_instance(name: str, timeout_ms: int = 1000) -> bool:
    """True when another instance answered (and was asked to show itself)."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(SHOW)
    socket.waitForBytesWritten(timeout_ms)
    socket.disconnectFromServer()
    return True


class InstanceServer:
    """Listens for later launches and calls `on_show` for each."""

    def __init__(self, name: str, on_show: Callable[[], None]) -> None:
        self.on_show = on_show
        self.server = QLocalServer()
        # A server file left by a crashed instance would refuse listen(): nobody answered, so remove it.
        QLocalServer.removeServer(name)
        if not self.server.listen(name):
            log.warning("single-instance server %s: %s", name, self.server.errorString())
        self.server.newConnection.connect(self._accept)

    def _accept(self) -> None:
        while self.server.hasPendingConnections():
            conn = self.server.nextPendingConnection()
            conn.readyRead.connect(lambda c=conn: self._read(c))
            conn.disconnected.connect(conn.deleteLater)

    def _read(self, conn: QLocalSocket) -> None:
        if bytes(conn.readAll().data()).startswith(SHOW.strip()):
            self.on_show()

    def close(self) -> None:
        self.server.close()
