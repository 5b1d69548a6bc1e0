"""The dashboard's Volumes page: size, the containers using each volume, remove, prune."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.engine_events import Change
from desktop.engine_model import VolumeRow, human_size
from desktop.ui import dialogs
from desktop.ui.controller import AppController

COLUMNS = ("Name", "Driver", "Size", "In use by")


class VolumesPage(QWidget):
    """Volumes, re-read when the events stream reports a volume (or container) change."""

    def __init__(self, controller: AppController) -> None:
        super().__init__()
        self.controller = controller
        self.rows: list[VolumeRow] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.remove_button = QPushButton("Remove")
        self.prune_button = QPushButton("Prune unused")
        self.remove_button.clicked.connect(self.remove_selected)
        self.prune_button.clicked.connect(self.prune)
        buttons = QHBoxLayout()
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.prune_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>Volumes</h2>"))
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        controller.engine_changed.connect(self._on_change)
        controller.engine_state.connect(lambda up, _msg: self.refresh() if up else self.set_rows([]))

    def _on_change(self, change: Change) -> None:
        if change.resource == "volume" or (change.resource == "container" and change.action in ("create", "destroy")):
            self.refresh()

    def refresh(self) -> None:
        self.controller.run("list the volumes", self.controller.engine.volumes, self.set_rows)

    def set_rows(self, rows: list[VolumeRow]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            texts = [row.name, row.driver, human_size(row.size) if row.size >= 0 else "",
                     ", ".join(row.used_by) or "unused"]
            for j, text in enumerate(texts):
                item = QTableWidgetItem(text)
                if j == 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()

    def selected(self) -> VolumeRow | None:
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()] if rows else None

    def remove_selected(self) -> None:
        row = self.selected()
        if row is None:
            return
        if row.used_by:
            dialogs.show_error(self, "Volume in use", f"{row.name} is used by {', '.join(row.used_by)}. "
                                                      "Remove those containers first.")
            return
        if dialogs.ask(self, "Remove volume", f"Remove {row.name} and the data in it?",
                       ("Remove", "Cancel")) == "Remove":
            self.controller.run(f"remove {row.name}", lambda: self.controller.engine.remove_volume(row.name),
                                lambda _: self.refresh(), owner=self)

    def prune(self) -> None:
        if dialogs.ask(self, "Prune volumes", "Remove every volume no container uses, with its data?",
                       ("Prune", "Cancel")) != "Prune":
            return
        def pruned(freed: int) -> None:
            self.controller.notify.emit("Dockyard", f"Pruned volumes: {human_size(freed)} back.")
            self.refresh()

        self.controller.run("prune the volumes", self.controller.engine.prune_volumes, pruned, owner=self)
