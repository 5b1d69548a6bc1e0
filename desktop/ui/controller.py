"""The app's one hub between the Qt widgets and the Qt-free model.

`AppController` owns the `MachineControl`, the `EngineModel` and the
`EventFeed`, and turns what they report (from their own threads) into Qt
signals the tray and the dashboard connect to. The container list is
re-read when the events stream says a container changed (bursts are folded
into one read by a short single-shot timer), never on a polling timer.
Every blocking call runs in a worker (desktop.ui.workers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QTimer, Signal

from desktop.engine_events import Change, EventFeed
from desktop.engine_model import ContainerRow, EngineModel
from desktop.machine_control import MachineControl, MachineStatus, Phase
from desktop.ui.workers import run_async

log = logging.getLogger(__name__)

# Events come in bursts (create, attach, start...): one read of the list per burst.
REFRESH_COALESCE_MS = 150


class _FeedBridge(QObject):
    """Carries the event feed's and the machine's thread callbacks to the UI thread."""

    changed = Signal(object)
    down = Signal(str)
    machine = Signal(object)


class AppController(QObject):
    """Signals for the views; methods that start the blocking work in workers."""

    machine_status = Signal(object)        # MachineStatus
    # What the tray shows: the machine's status, or with a fixed engine socket (the
    # native engine, no machine) the engine's own: running while it answers.
    tray_status = Signal(object)           # MachineStatus
    containers_changed = Signal(list)      # list[ContainerRow]
    engine_changed = Signal(object)        # Change (any resource)
    engine_state = Signal(bool, str)       # up?, message when down
    notify = Signal(str, str)              # title, message: the tray shows it
    failed = Signal(str, str)              # title, readable message

    def __init__(self, machine: MachineControl, engine_socket: Path | None = None) -> None:
        super().__init__()
        self.machine = machine
        # A fixed engine socket (the native engine, tests) or the machine's host socket.
        self.fixed_socket = engine_socket
        self.engine = EngineModel(self.engine_socket)
        self.containers: list[ContainerRow] = []
        self.engine_up = False
        self.engine_message = ""
        self._bridge = _FeedBridge()
        self._bridge.changed.connect(self._on_change)
        self._bridge.down.connect(self._on_down)
        self._bridge.machine.connect(self._on_machine)
        self.feed = EventFeed(self.engine_socket, self._bridge.changed.emit, self._bridge.down.emit)
        self.machine.subscribe(self._bridge.machine.emit)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_COALESCE_MS)
        self._refresh_timer.timeout.connect(self.refresh_containers)
        self._refreshing = False
        self._refresh_again = False

    @property
    def engine_socket(self) -> Path:
        return self.fixed_socket or self.machine.host_socket

    # -- start-up ---------------------------------------------------------
    def begin(self, start_machine: bool) -> None:
        """Read the machine's state, connect to the engine, and start the machine if asked."""
        def first_look() -> MachineStatus:
            return self.machine.refresh()

        def looked(status: MachineStatus) -> None:
            if start_machine and self.fixed_socket is None and status.phase in (Phase.STOPPED, Phase.NOT_CREATED):
                self.start_machine()
            else:
                self.connect_engine()
        run_async(first_look, looked, lambda message: self.failed.emit("Dockyard", message))

    def connect_engine(self) -> None:
        """Open the events stream and read the lists; says so when the engine does not answer."""
        def ping() -> None:
            self.engine.ping()

        def up(_: object) -> None:
            self.feed.start()
            self._set_engine(True, "")
            self.refresh_containers()

        run_async(ping, up, lambda message: self._set_engine(False, message))

    def _set_engine(self, up: bool, message: str) -> None:
        changed = up != self.engine_up or message != self.engine_message
        self.engine_up, self.engine_message = up, message
        if changed:
            self.engine_state.emit(up, message)
            if self.fixed_socket is not None:
                self.tray_status.emit(self.current_tray_status())
        if not up:
            self.containers = []
            self.containers_changed.emit([])

    # -- events -----------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        self.engine_changed.emit(change)
        if change.resource == "container":
            self.schedule_refresh()

    def _on_down(self, reason: str) -> None:
        self._set_engine(False, reason)
        if self.fixed_socket is None:
            run_async(self.machine.refresh)

    def current_tray_status(self) -> MachineStatus:
        if self.fixed_socket is None:
            return self.machine.status
        if self.engine_up:
            return MachineStatus(Phase.RUNNING, message="native engine")
        return MachineStatus(Phase.ERROR if self.engine_message else Phase.STARTING,
                             message="the engine does not answer" if self.engine_message else "")

    def _on_machine(self, status: MachineStatus) -> None:
        self.machine_status.emit(status)
        if self.fixed_socket is None:
            self.tray_status.emit(status)
        if status.phase is Phase.RUNNING and not self.feed.running:
            self.connect_engine()
        elif status.phase in (Phase.STOPPED, Phase.NOT_CREATED) and self.fixed_socket is None:
            self.feed.stop()
            self._set_engine(False, "The machine is stopped. Start it from the tray menu (Start).")

    def schedule_refresh(self) -> None:
        self._refresh_timer.start()

    def refresh_containers(self) -> None:
        """Read the container list once (a read already running is followed by one more)."""
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True

        def done(rows: list[ContainerRow]) -> None:
            log.info("listing %d containers", len(rows))
            self._refreshing = False
            self.containers = rows
            self.containers_changed.emit(rows)
            if self._refresh_again:
                self._refresh_again = False
                self.refresh_containers()

        def failed(message: str) -> None:
            self._refreshing = False
            self._set_engine(False, message)

        run_async(self.engine.containers, done, failed)

    # -- machine actions --------------------------------------------------
    def _machine_action(self, verb: str, fn: Callable[[], Any], done_text: str) -> None:
        run_async(fn, lambda _: self.notify.emit("Dockyard", done_text),
                  lambda message: self.failed.emit(f"Could not {verb} the machine", message))

    def start_machine(self) -> None:
        self._machine_action("start", self.machine.start, "The machine is running.")

    def stop_machine(self) -> None:
        self._machine_action("stop", self.machine.stop, "The machine is stopped.")

    def restart_machine(self) -> None:
        self._machine_action("restart", self.machine.restart, "The machine restarted.")

    def reset_machine(self) -> None:
        self._machine_action("reset", self.machine.reset_to_factory_defaults,
                             "The machine was reset to factory defaults and started.")

    # -- engine actions ---------------------------------------------------
    def run(self, what: str, fn: Callable[[], Any], on_done: Callable[[Any], object] | None = None,
            done_text: str = "", owner: QObject | None = None) -> None:
        """Run an engine action in a worker; failures become a titled message, success a notification."""
        target = owner if owner is not None else getattr(on_done, "__self__", None)

        def done(result: Any) -> None:
            if done_text:
                self.notify.emit("Dockyard", done_text)
            if on_done is not None and (not isinstance(target, QObject) or shiboken6.isValid(target)):
                on_done(result)
        run_async(fn, done, lambda message: self.failed.emit(f"Could not {what}", message))

    def container_action(self, action: str, row: ContainerRow) -> None:
        fn = {"start": self.engine.start, "stop": self.engine.stop, "restart": self.engine.restart,
              "remove": self.engine.remove}[action]
        self.run(f"{action} {row.name}", lambda: fn(row.id))

    def stop_all(self) -> None:
        self.run("stop the containers", self.engine.stop_all,
                 lambda names: self.notify.emit("Dockyard", f"Stopped {len(names)} container(s)."))

    def shutdown(self) -> None:
        self.feed.stop()
        self.engine.close()
