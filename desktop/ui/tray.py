"""The tray icon: the machine's state at a glance, and the menu of everyday actions.

The picture and tooltip follow the machine's phase (stopped, starting with
the boot stage, running, error); a notification says when the state changes
or an action fails. The menu holds Start/Stop/Restart, Dashboard, a
Containers submenu (each container's state, with Start/Stop/Logs), Run an
image…, Stop all containers, Clean up (with a confirmation that says how
much space comes back), Settings, Troubleshoot and Quit (which asks whether
to stop the machine too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from desktop.engine_model import CleanupEstimate, ContainerRow, human_size
from desktop.machine_control import MachineStatus, Phase
from desktop.ui import dialogs, icons
from desktop.ui.controller import AppController

log = logging.getLogger(__name__)


class Tray(QSystemTrayIcon):
    """The tray icon and its menu; `show_page` opens a dashboard page by name."""

    def __init__(self, controller: AppController, show_page: Callable[[str], None],
                 open_logs: Callable[[ContainerRow], object], run_image: Callable[[], None],
                 quit_app: Callable[[bool], None]) -> None:
        super().__init__()
        self.controller = controller
        self.show_page = show_page
        self.open_logs = open_logs
        self.run_image = run_image
        self.quit_app = quit_app
        self.phase = Phase.STOPPED
        # Every (title, message) notified, newest last: what the tests read.
        self.notifications: list[tuple[str, str]] = []
        self.menu = QMenu()
        self._build_menu()
        self.setContextMenu(self.menu)
        self.activated.connect(self._on_activated)
        controller.tray_status.connect(self.set_status)
        controller.containers_changed.connect(self.set_containers)
        controller.notify.connect(self.notify)
        controller.failed.connect(lambda title, message: self.notify(title, message, error=True))
        self.set_status(controller.current_tray_status())

    # -- menu -------------------------------------------------------------
    def _action(self, text: str, slot: Callable[[], object], menu: QMenu | None = None) -> QAction:
        action = QAction(text, self.menu)
        action.triggered.connect(lambda _checked=False: slot())
        (menu or self.menu).addAction(action)
        return action

    def _build_menu(self) -> None:
        self.status_action = QAction("Dockyard", self.menu)
        self.status_action.setEnabled(False)
        self.menu.addAction(self.status_action)
        self.menu.addSeparator()
        self.start_action = self._action("Start", self.controller.start_machine)
        self.stop_action = self._action("Stop", self.controller.stop_machine)
        self.restart_action = self._action("Restart", self.controller.restart_machine)
        self.menu.addSeparator()
        self.dashboard_action = self._action("Dashboard", lambda: self.show_page("containers"))
        self.containers_menu = self.menu.addMenu("Containers")
        self.run_action = self._action("Run an image…", self.run_image)
        self.stop_all_action = self._action("Stop all containers", self.controller.stop_all)
        self.clean_action = self._action("Clean up…", self.clean_up)
        self.menu.addSeparator()
        self.settings_action = self._action("Settings", lambda: self.show_page("machine"))
        self.troubleshoot_action = self._action("Troubleshoot", lambda: self.show_page("troubleshoot"))
        self.menu.addSeparator()
        self.quit_action = self._action("Quit Dockyard", self.ask_quit)
        self.set_containers([])

    def set_containers(self, rows: list[ContainerRow]) -> None:
        """Rebuild the Containers submenu: one submenu per container, "name — state"."""
        self.containers_menu.clear()
        if not rows:
            empty = self.containers_menu.addAction(
                "No containers" if self.controller.engine_up else "The engine is not running")
            empty.setEnabled(False)
            return
        for row in rows:
            label = f"{row.project}/{row.name}" if row.project else row.name
            sub = self.containers_menu.addMenu(f"{label} — {row.state}")
            sub.setObjectName(f"container:{row.name}")
            verb = "stop" if row.running else "start"
            self._action(verb.capitalize(), partial(self.controller.container_action, verb, row), sub)
            self._action("Logs", partial(self.open_logs, row), sub)

    # -- state ------------------------------------------------------------
    def set_status(self, status: MachineStatus) -> None:
        previous = self.phase
        self.phase = status.phase
        self.setIcon(icons.icon(status.phase))
        self.setToolTip(status.text)
        self.status = status
        self.status_action.setText(status.text)
        busy = status.phase in (Phase.STARTING, Phase.STOPPING)
        running = status.phase is Phase.RUNNING
        self.start_action.setEnabled(not busy and not running)
        self.stop_action.setEnabled(not busy and status.phase in (Phase.RUNNING, Phase.ERROR))
        self.restart_action.setEnabled(not busy and running)
        if status.phase is not previous:   # boot stages change the tooltip, not a notification each
            self.notify("Dockyard", status.text.removeprefix("Dockyard: ").capitalize(),
                        error=status.phase is Phase.ERROR)

    def notify(self, title: str, message: str, error: bool = False) -> None:
        self.notifications.append((title, message))
        icon = QSystemTrayIcon.MessageIcon.Warning if error else QSystemTrayIcon.MessageIcon.Information
        if self.supportsMessages() and self.isVisible():
            self.showMessage(title, message, icon, 5000)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_page("containers")

    # -- actions that ask first -------------------------------------------
    def clean_up(self) -> None:
        """Ask with the space that comes back, then prune; the result is a notification."""
        engine = self.controller.engine

        def confirm(estimate: CleanupEstimate) -> None:
            text = (f"Clean up removes {estimate.containers} stopped container(s), {estimate.images} dangling "
                    f"image(s) and {estimate.volumes} unused volume(s).\n\n"
                    f"About {human_size(estimate.reclaimable)} of disk space comes back.")
            if dialogs.ask(None, "Clean up", text, ("Clean up", "Cancel")) != "Clean up":
                return
            self.controller.run("clean up", engine.clean_up,
                                lambda freed: self.notify("Dockyard", f"Clean up gave back {human_size(freed)}."),
                                owner=self)

        self.controller.run("clean up", engine.cleanup_estimate, confirm, owner=self)

    def ask_quit(self) -> None:
        """Quit, after asking whether the machine should stop too (while it runs)."""
        if self.controller.fixed_socket is None and self.phase in (Phase.RUNNING, Phase.STARTING):
            answer = dialogs.ask(None, "Quit Dockyard",
                                 "Stop the Dockyard machine too?\n\nIf it keeps running, docker commands "
                                 "keep working without the app.",
                                 ("Stop and quit", "Keep running and quit", "Cancel"))
            if answer == "Cancel":
                return
            self.quit_app(answer == "Stop and quit")
            return
        self.quit_app(False)


def quit_application(controller: AppController, stop_machine: bool) -> None:
    """Stop the machine (if asked) in a worker, then leave the event loop."""
    from desktop.ui.workers import run_async

    app = QApplication.instance()

    def leave(_: object = None) -> None:
        controller.shutdown()
        if app is not None:
            app.quit()

    if stop_machine:
        run_async(controller.machine.stop, leave, lambda message: leave())
    else:
        leave()
