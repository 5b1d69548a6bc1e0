"""The dashboard's Images page (pull with a progress bar, run, remove, prune) and the Run form.

The progress bar follows the engine's own pull progress stream (bytes
downloaded, then extracted, per layer). The list re-reads itself when the
events stream reports an image change.
"""

from __future__ import annotations

import datetime

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from desktop.engine_model import EngineError, ImageRow, PullProgress, human_size
from desktop.ui import dialogs
from desktop.ui.button_row import button_row
from desktop.ui.controller import AppController
from desktop.ui.list_page import ListPage

COLUMNS = ("Name", "ID", "Size", "In use", "Created")


def parse_run_form(ports: str, volumes: str, env: str) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """The Run form's fields ("8080:80, 53:53/udp", "data:/data", "A=1, B=2") as run() arguments."""
    port_map: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in ports.replace(",", " ").split())):
        host, sep, inner = part.partition(":")
        if not sep or not host.isdigit():
            raise EngineError(f"Port {part!r}: write HOST:CONTAINER, e.g. 8080:80.")
        inner = inner if "/" in inner else f"{inner}/tcp"
        if not inner.split("/")[0].isdigit():
            raise EngineError(f"Port {part!r}: the container port must be a number.")
        port_map[inner] = int(host)
    volume_map: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in volumes.replace(",", " ").split())):
        source, sep, target = part.partition(":")
        if not sep or not target.startswith("/"):
            raise EngineError(f"Volume {part!r}: write NAME:/path or /host/path:/path.")
        volume_map[source] = target
    env_map: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in env.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise EngineError(f"Variable {part!r}: write NAME=value.")
        env_map[key.strip()] = value
    return port_map, volume_map, env_map


class RunDialog(QDialog):
    """Image, name, ports, volumes, environment; Run starts a detached container."""

    def __init__(self, controller: AppController, images: list[str], image: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("Run an image")
        self.image = QComboBox()
        self.image.setEditable(True)
        self.image.addItems(images)
        if image:
            self.image.setCurrentText(image)
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional")
        self.ports = QLineEdit()
        self.ports.setPlaceholderText("8080:80, 5353:53/udp")
        self.volumes = QLineEdit()
        self.volumes.setPlaceholderText("data:/data, /home/me/src:/src")
        self.env = QLineEdit()
        self.env.setPlaceholderText("NAME=value, OTHER=value")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Image", self.image)
        form.addRow("Name", self.name)
        form.addRow("Ports", self.ports)
        form.addRow("Volumes", self.volumes)
        form.addRow("Environment", self.env)
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.run_button = buttons.addButton("Run", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.run)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def run(self) -> None:
        image = self.image.currentText().strip()
        if not image:
            self.error.setText("Choose an image to run.")
            return
        try:
            ports, volumes, env = parse_run_form(self.ports.text(), self.volumes.text(), self.env.text())
        except EngineError as err:
            self.error.setText(err.message)
            return
        engine, name = self.controller.engine, self.name.text().strip()
        self.run_button.setEnabled(False)
        self.error.setText("starting…")

        def failed(message: str) -> None:
            self.run_button.setEnabled(True)
            self.error.setText(message)

        from desktop.ui.workers import run_async

        run_async(lambda: engine.run(image, name, ports, volumes, env), lambda _: self.accept(), failed, owner=self)


class ImagesPage(ListPage[ImageRow]):
    """Images with size and use; pull, run, remove, prune."""

    KIND = "image"
    COLUMNS = COLUMNS

    def __init__(self, controller: AppController) -> None:
        super().__init__(controller)
        self.reference = QLineEdit()
        self.reference.setPlaceholderText("image to pull, e.g. 127.0.0.1:5000/busybox:latest")
        self.reference.returnPressed.connect(self.pull)
        self.pull_button = QPushButton("Pull")
        self.pull_button.clicked.connect(self.pull)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.progress.setVisible(False)   # an empty bar reads as a broken field: shown from the first pull
        self.pull_status = QLabel("")
        pull_row = QHBoxLayout()
        pull_row.addWidget(self.reference, 1)
        pull_row.addWidget(self.pull_button)
        buttons, (self.run_button, self.remove_button, self.prune_button) = button_row(
            ("Run…", self.run_selected), ("Remove", self.remove_selected), ("Prune dangling", self.prune))
        self.lay_out("Images", pull_row, self.progress, self.pull_status, buttons)

    def list_rows(self) -> list[ImageRow]:
        return self.controller.engine.images()

    def texts(self, row: ImageRow) -> list[str]:
        created = datetime.datetime.fromtimestamp(row.created).strftime("%Y-%m-%d %H:%M") if row.created else ""
        return [row.name, row.id.split(":")[-1][:12], human_size(row.size),
                f"{row.in_use} container(s)" if row.in_use else "unused", created]

    def pull(self) -> None:
        reference = self.reference.text().strip()
        if not reference:
            return
        engine = self.controller.engine
        self.pull_button.setEnabled(False)
        self.progress.setValue(0)
        self.progress.setFormat(f"pulling {reference}: %p%")
        self.progress.setVisible(True)

        def moved(progress: PullProgress) -> None:
            if progress.fraction is not None:
                self.progress.setValue(int(progress.fraction * 1000))
            self.pull_status.setText(progress.status)

        def done(_: object) -> None:
            self.pull_button.setEnabled(True)
            self.progress.setValue(1000)
            self.progress.setFormat(f"{reference}: pulled")
            self.refresh()

        def failed(message: str) -> None:
            self.pull_button.setEnabled(True)
            self.progress.setFormat("pull failed")
            self.pull_status.setText(message)
            dialogs.show_error(self, "Could not pull", message)

        from desktop.ui.workers import run_async

        # The stream's messages become (queued) progress signals: the bar moves on the UI thread.
        run_async(lambda progress: engine.pull(reference, progress), done, failed, moved, owner=self)

    def run_selected(self) -> None:
        row = self.selected()
        open_run_dialog(self.controller, self, row.name if row else "", [r.name for r in self.rows if r.tags])

    def remove_selected(self) -> None:
        row = self.selected()
        if row is None:
            return
        self.confirm_remove(row.name, f"Remove {row.name}?", lambda: self.controller.engine.remove_image(
            row.tags[0] if row.tags else row.id))

    def prune(self) -> None:
        self.run_prune(self.controller.engine.prune_images)


def open_run_dialog(controller: AppController, parent: QWidget | None, image: str = "",
                    images: list[str] | None = None) -> RunDialog:
    dialog = RunDialog(controller, images or [], image, parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    return dialog
