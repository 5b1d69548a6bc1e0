"""The dashboard window: a sidebar of pages and a banner that says when the engine is down.

Closing the window hides it; the app keeps running in the tray.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.engine_model import ContainerRow
from desktop.ui import dialogs
from desktop.ui.container_views import InspectWindow, LogsWindow
from desktop.ui.containers_page import ContainersPage
from desktop.ui.controller import AppController
from desktop.ui.images_page import ImagesPage, open_run_dialog
from desktop.ui.machine_pages import MachinePage, TroubleshootPage
from desktop.ui.volumes_page import VolumesPage

PAGES = (("containers", "Containers"), ("images", "Images"), ("volumes", "Volumes"),
         ("machine", "Machine & Settings"), ("troubleshoot", "Troubleshoot"))


class Dashboard(QMainWindow):
    """The main window; `show_page(name)` brings it forward on a page."""

    def __init__(self, controller: AppController) -> None:
        super().__init__()
        self.controller = controller
        self.setWindowTitle("Dockyard")
        self.resize(1100, 680)
        self.sidebar = QListWidget()
        self.sidebar.setFixedWidth(190)
        self.sidebar.setIconSize(QSize(16, 16))
        # Room around each entry: packed rows read as one block of text.
        self.sidebar.setStyleSheet("QListWidget::item { padding: 6px 8px; }")
        self.stack = QStackedWidget()
        self.pages: dict[str, QWidget] = {
            "containers": ContainersPage(controller),
            "images": ImagesPage(controller),
            "volumes": VolumesPage(controller),
            "machine": MachinePage(controller),
            "troubleshoot": TroubleshootPage(controller),
        }
        for key, title in PAGES:
            self.sidebar.addItem(title)
            self.stack.addWidget(self.pages[key])
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.sidebar.setCurrentRow(0)

        self.banner = QLabel("")
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("QLabel#banner { background: #fff4e5; color: #663c00; padding: 8px; "
                                  "border: 1px solid #ffd8a8; border-radius: 4px; }")
        self.banner_button = QPushButton("Start the machine")
        self.banner_button.clicked.connect(controller.start_machine)
        banner_row = QHBoxLayout()
        banner_row.addWidget(self.banner, 1)
        banner_row.addWidget(self.banner_button, 0, Qt.AlignmentFlag.AlignTop)
        self.banner_box = QWidget()
        self.banner_box.setLayout(banner_row)

        right = QVBoxLayout()
        right.addWidget(self.banner_box)
        right.addWidget(self.stack, 1)
        body = QHBoxLayout()
        body.addWidget(self.sidebar)
        body.addLayout(right, 1)
        central = QWidget()
        central.setLayout(body)
        self.setCentralWidget(central)
        self.set_engine_state(controller.engine_up, controller.engine_message or "Connecting to the engine…")
        controller.engine_state.connect(self.set_engine_state)
        controller.failed.connect(lambda title, message: dialogs.show_error(self, title, message)
                                  if self.isVisible() else None)
        containers = self.containers_page
        containers.open_logs.connect(self.open_logs)
        containers.open_inspect.connect(self.open_inspect)
        self.windows: list[QWidget] = []

    @property
    def containers_page(self) -> ContainersPage:
        page = self.pages["containers"]
        assert isinstance(page, ContainersPage)
        return page

    def set_engine_state(self, up: bool, message: str) -> None:
        self.banner.setText(message)
        self.banner_box.setVisible(not up)
        self.banner_button.setVisible(self.controller.fixed_socket is None)

    def show_page(self, name: str) -> None:
        self.sidebar.setCurrentRow([key for key, _ in PAGES].index(name))
        self.show()
        self.setWindowState((self.windowState() & ~Qt.WindowState.WindowMinimized) | Qt.WindowState.WindowActive)
        self.raise_()
        self.activateWindow()

    def current_page(self) -> str:
        return PAGES[self.stack.currentIndex()][0]

    def _keep(self, window: QWidget) -> QWidget:
        window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        window.destroyed.connect(lambda *_: self.windows.remove(window) if window in self.windows else None)
        self.windows.append(window)
        window.show()
        return window

    def open_logs(self, row: ContainerRow) -> LogsWindow:
        window = LogsWindow(self.controller.engine, row, self)
        self._keep(window)
        return window

    def open_inspect(self, row: ContainerRow) -> None:
        self.controller.run(f"inspect {row.name}", lambda: self.controller.engine.inspect(row.id),
                            lambda data: self._keep(InspectWindow(data, self)), owner=self)

    def open_run(self) -> None:
        images = self.pages["images"]
        names = [r.name for r in getattr(images, "rows", []) if r.tags]
        open_run_dialog(self.controller, None, "", names)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        # The tray keeps the app (and the engine's events) alive; Quit is in its menu.
        event.ignore()
        self.hide()
