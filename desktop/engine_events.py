"""The engine's `events` stream, read in a thread, delivered as typed changes.

`EventFeed` keeps one long GET /events open (docker-py's decoded stream) and
calls its listener with a `Change` for every container, image, volume or
network event, so the dashboard updates when something happens instead of
asking again on a timer. When the stream ends (the engine stopped, the
machine went away) the listener gets `on_down` once with a readable reason;
`start()` again opens a new stream (the app does so when the machine is up
again). No Qt here: the UI turns these calls into signals.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One engine event: `resource` (container, image, volume, network), `action` (start, die, ...)."""

    resource: str
    action: str
    id: str
    name: str = ""
    attributes: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Change:
        actor = event.get("Actor") or {}
        attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        resource = str(event.get("Type") or "")
        action = str(event.get("Action") or event.get("status") or "")
        ident = str(actor.get("ID") or event.get("id") or "")
        return cls(resource, action.split(":", 1)[0], ident, attributes.get("name", ""), attributes)


ChangeListener = Callable[[Change], None]
DownListener = Callable[[str], None]


class EventFeed:
    """One reader thread on the engine's events stream (start/stop may be called again)."""

    def __init__(self, socket_path: Path, on_change: ChangeListener, on_down: DownListener) -> None:
        self.socket_path = Path(socket_path)
        self.on_change = on_change
        self.on_down = on_down
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.connected = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Open the stream in a new thread (a no-op while one runs)."""
        with self._lock:
            if self.running:
                return
            self._stopping = False
            self.connected.clear()
            self._thread = threading.Thread(target=self._run, name="engine-events", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Close the stream; the thread ends without calling `on_down`."""
        with self._lock:
            self._stopping = True
            stream, client, thread = self._stream, self._client, self._thread
        for closer in (getattr(stream, "close", None), getattr(client, "close", None)):
            if closer is not None:
                try:
                    closer()
                except Exception as err:  # noqa: BLE001 - closing a dead stream may fail; nothing to do
                    log.debug("closing the events stream: %s", err)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        from desktop.engine_client import client_for_socket
        from desktop.engine_model import readable_error

        reason = "The engine's event stream ended: the engine stopped."
        try:
            # No read timeout: an idle engine sends nothing for hours, and that is fine.
            client = client_for_socket(self.socket_path)
            client.api.timeout = None  # type: ignore[assignment]  # requests reads None as "no read timeout"
            with self._lock:
                self._client = client
            stream = client.api.events(decode=True)
            with self._lock:
                self._stream = stream
                if self._stopping:
                    return
            self.connected.set()
            for event in stream:
                if isinstance(event, dict):
                    self.on_change(Change.from_event(event))
        except Exception as err:  # noqa: BLE001 - any end of the stream is "the engine is down"
            reason = readable_error(err, self.socket_path).message
        finally:
            self.connected.clear()
            with self._lock:
                stopping = self._stopping
                self._stream = None
                client, self._client = self._client, None
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - best effort
                    pass
        if not stopping:
            log.info("engine events: %s", reason)
            self.on_down(reason)
