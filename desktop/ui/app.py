"""The desktop app: tray icon and dashboard on top of the machine and the engine.

`main()` is `dockyard-desktop` with a display: one instance per Dockyard home
and machine (a second launch brings the first forward), the machine started
on launch (created on first launch), the dashboard shown, and the tray kept
when the window closes. `DesktopApp` holds the pieces; tests build one
directly, with a fixed engine socket (the native `dockyard-agent serve`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from desktop.machine_control import MachineControl
from desktop.ui.controller import AppController
from desktop.ui.dashboard import Dashboard
from desktop.ui.gc_pinning import pin_to_ui_thread
from desktop.ui.tray import Tray, quit_application

log = logging.getLogger(__name__)


class DesktopApp:
    """The controller, the dashboard and the tray of one machine (the QApplication must exist)."""

    def __init__(self, machine_name: str = "default", engine_socket: Path | None = None) -> None:
        pin_to_ui_thread()
        self.machine = MachineControl(machine_name)
        self.controller = AppController(self.machine, engine_socket)
        self.dashboard = Dashboard(self.controller)
        self.tray = Tray(self.controller, self.dashboard.show_page, self.dashboard.open_logs,
                         self.dashboard.open_run, self.quit)
        self.quitting = False

    def begin(self, start_machine: bool = True, show_dashboard: bool = True) -> None:
        self.tray.show()
        if show_dashboard:
            self.dashboard.show_page("containers")
            # Logged once the event loop has run, i.e. the window was really shown (bench/desktop_app.py).
            QTimer.singleShot(0, lambda: log.info("dashboard shown"))
        self.controller.begin(start_machine)

    def quit(self, stop_machine: bool) -> None:
        self.quitting = True
        self.tray.hide()
        self.dashboard.hide()
        quit_application(self.controller, stop_machine)

    def close(self) -> None:
        """Tear down without quitting the QApplication (tests)."""
        self.controller.shutdown()
        self.tray.hide()
        for window in list(self.dashboard.windows):
            window.close()
        self.dashboard.hide()
        self.dashboard.deleteLater()


def run(argv: list[str], machine_name: str, engine_socket: Path | None, start_machine: bool,
        show_dashboard: bool) -> int:
    """The Qt event loop of the app; returns its exit code."""
    from desktop.ui.single_instance import InstanceServer, ask_running_instance, server_name

    app = QApplication.instance() or QApplication(argv)
    assert isinstance(app, QApplication)
    app.setApplicationName("Dockyard")
    app.setQuitOnLastWindowClosed(False)
    name = server_name(machine_name)
    if ask_running_instance(name):
        log.info("Dockyard is already running: brought it forward")
        return 0
    desktop = DesktopApp(machine_name, engine_socket)
    server = InstanceServer(name, lambda: desktop.dashboard.show_page(desktop.dashboard.current_page()))
    desktop.begin(start_machine=start_machine, show_dashboard=show_dashboard)
    code = app.exec()
    server.close()
    return code


def main(argv: list[str] | None = None) -> int:
    from desktop.app import main as launcher

    return launcher(argv)


if __name__ == "__main__":
    sys.exit(main())
