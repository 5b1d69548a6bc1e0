"""The dashboard's Machine & Settings page and its Troubleshoot page.

Settings (CPUs, memory, disk, shared folders) are written to settings.toml,
the file the `dockyard` CLI reads too (desktop.settings). Apply asks first,
then restarts a running machine so that it takes them. Troubleshoot shows
the guest console, the supervisor's log and the engine's log, and offers a
restart and a reset to factory defaults (after a confirmation).
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.machine_control import MachineSettings, MachineStatus, Phase
from desktop.ui import dialogs
from desktop.ui.button_row import button_row
from desktop.ui.controller import AppController
from desktop.ui.workers import run_async


class MachinePage(QWidget):
    """The machine's state and controls, and the settings form."""

    def __init__(self, controller: AppController) -> None:
        super().__init__()
        self.controller = controller
        self.state = QLabel("")
        self.socket = QLabel("")
        self.socket.setTextInteractionFlags(self.socket.textInteractionFlags().TextSelectableByMouse)
        controls, (self.start_button, self.stop_button, self.restart_button) = button_row(
            ("Start", controller.start_machine), ("Stop", controller.stop_machine),
            ("Restart", controller.restart_machine))

        self.cpus = QSpinBox()
        self.cpus.setRange(1, 64)
        self.memory = QSpinBox()
        self.memory.setRange(256, 256 * 1024)
        self.memory.setSingleStep(256)
        self.memory.setSuffix(" MiB")
        self.disk = QSpinBox()
        self.disk.setRange(1, 4096)
        self.disk.setSuffix(" GiB")
        self.folders = QListWidget()
        self.folders.setMaximumHeight(110)
        folder_buttons, _ = button_row(
            ("Add folder…", self._add_folder),
            ("Remove folder", lambda: [self.folders.takeItem(self.folders.row(i))
                                       for i in self.folders.selectedItems()]))
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        for field in (self.cpus, self.memory, self.disk):
            field.setMaximumWidth(180)   # numbers, not a line of text: no full-width boxes
        self.folders.setMaximumWidth(640)
        form = QFormLayout()
        form.addRow("CPUs", self.cpus)
        form.addRow("Memory", self.memory)
        form.addRow("Disk (new machines)", self.disk)
        form.addRow("Shared folders", self.folders)
        form.addRow("", folder_buttons)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>Machine</h2>"))
        layout.addWidget(self.state)
        layout.addWidget(self.socket)
        layout.addLayout(controls)
        layout.addWidget(QLabel("<h3>Settings</h3>"))
        layout.addLayout(form)
        apply_row = QHBoxLayout()
        apply_row.addWidget(self.apply_button)
        apply_row.addWidget(self.note, 1)
        layout.addLayout(apply_row)
        layout.addStretch(1)
        controller.machine_status.connect(self.set_status)
        self.set_status(controller.machine.status)
        self.load()

    def set_status(self, status: MachineStatus) -> None:
        self.state.setText(f"<b>{status.text.removeprefix('Dockyard: ').capitalize()}</b>")
        self.socket.setText(f"Engine: unix://{self.controller.engine_socket}")
        busy = status.phase in (Phase.STARTING, Phase.STOPPING)
        self.start_button.setEnabled(not busy and status.phase is not Phase.RUNNING)
        self.stop_button.setEnabled(not busy and status.phase in (Phase.RUNNING, Phase.ERROR))
        self.restart_button.setEnabled(not busy and status.phase is Phase.RUNNING)

    def load(self) -> None:
        """Fill the form from settings.toml (else the machine's own values, else the defaults)."""
        run_async(self.controller.machine.settings, self._fill,
                  lambda message: dialogs.show_error(self, "Settings", message), owner=self)

    def _fill(self, values: MachineSettings) -> None:
        self.cpus.setValue(values.cpus)
        self.memory.setValue(values.memory_mib)
        self.disk.setValue(max(1, values.disk_mib // 1024))
        self.folders.clear()
        self.folders.addItems(list(values.shared_folders))

    def values(self) -> MachineSettings:
        return MachineSettings(self.cpus.value(), self.memory.value(), self.disk.value() * 1024,
                               tuple(self.folders.item(i).text() for i in range(self.folders.count())))

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Share a folder with the machine")
        if folder:
            self.folders.addItem(folder)

    def apply(self) -> None:
        """Ask, save to settings.toml, then restart a running machine so that it takes them."""
        running = self.controller.machine.status.phase is Phase.RUNNING
        question = ("Save these settings and restart the machine now? Running containers stop."
                    if running else "Save these settings? The machine takes them at its next start.")
        if dialogs.ask(self, "Apply settings", question, ("Apply", "Cancel")) != "Apply":
            return
        wanted = self.values()

        def saved(path: object) -> None:
            self.note.setText(f"Saved to {path}.")
            if running:
                self.controller.restart_machine()

        run_async(lambda: self.controller.machine.save_settings(wanted), saved,
                  lambda message: dialogs.show_error(self, "Could not save the settings", message), owner=self)


class TroubleshootPage(QWidget):
    """Logs of the machine and the engine; restart; reset to factory defaults."""

    SOURCES = ("Machine console", "Supervisor log", "Engine log")

    def __init__(self, controller: AppController) -> None:
        super().__init__()
        self.controller = controller
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = self.view.font()
        font.setFamily("monospace")
        self.view.setFont(font)
        logs, shown = button_row(*((source, lambda _=False, s=source: self.show_log(s)) for source in self.SOURCES))
        self.log_buttons = dict(zip(self.SOURCES, shown, strict=True))
        actions, (self.restart_button, self.reset_button) = button_row(
            ("Restart the machine", controller.restart_machine), ("Reset to factory defaults…", self.reset))
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>Troubleshoot</h2>"))
        layout.addLayout(actions)
        layout.addLayout(logs)
        layout.addWidget(self.view, 1)

    def show_log(self, source: str) -> None:
        machine = self.controller.machine
        read = {"Machine console": machine.console_log, "Supervisor log": machine.supervisor_log,
                "Engine log": machine.agent_log}[source]
        self.view.setPlainText(f"loading the {source.lower()}…")

        def shown(text: str) -> None:
            self.view.setPlainText(text)
            self.view.verticalScrollBar().setValue(self.view.verticalScrollBar().maximum())

        run_async(read, shown, lambda message: self.view.setPlainText(f"Could not read it: {message}"), owner=self)

    def reset(self) -> None:
        text = ("Reset to factory defaults deletes the machine with all its containers, images and volumes, "
                "forgets its settings (CPUs, memory, disk, shared folders) and starts a fresh one.\n\n"
                "This cannot be undone.")
        if dialogs.ask(self, "Reset to factory defaults", text, ("Reset", "Cancel")) == "Reset":
            self.controller.reset_machine()
