"""What the Images and Volumes pages share: a table of one kind of engine object and its remove and prune.

The table is re-read when the events stream reports a change to that kind,
or a container made or removed (which changes what is in use), and emptied
while the engine is down. Remove asks first; prune says how much space
came back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QLabel, QLayout, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from desktop.engine_events import Change
from desktop.engine_model import human_size
from desktop.ui import dialogs
from desktop.ui.controller import AppController

RowT = TypeVar("RowT")


class ListPage(QWidget, Generic[RowT]):
    """A read-only table of KIND ("image", "volume") rows under COLUMNS, one of which is "Size"."""

    KIND: str
    COLUMNS: tuple[str, ...]

    def __init__(self, controller: AppController) -> None:
        super().__init__()
        self.controller = controller
        self.rows: list[RowT] = []
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        controller.engine_changed.connect(self._on_change)
        controller.engine_state.connect(lambda up, _msg: self.refresh() if up else self.set_rows([]))

    def list_rows(self) -> list[RowT]:
        """The rows, read from the engine (in a worker thread)."""
        raise NotImplementedError

    def texts(self, row: RowT) -> list[str]:
        """One row's cells, in COLUMNS order."""
        raise NotImplementedError

    def lay_out(self, title: str, *parts: QWidget | QLayout) -> None:
        """The page: its title, then `parts` top to bottom, then the table taking the rest."""
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"<h2>{title}</h2>"))
        for part in parts:
            if isinstance(part, QLayout):
                layout.addLayout(part)
            else:
                layout.addWidget(part)
        layout.addWidget(self.table, 1)

    def _on_change(self, change: Change) -> None:
        if change.resource == self.KIND or (change.resource == "container" and change.action in ("create", "destroy")):
            self.refresh()

    def refresh(self) -> None:
        self.controller.run(f"list the {self.KIND}s", self.list_rows, self.set_rows)

    def set_rows(self, rows: list[RowT]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        size_column = self.COLUMNS.index("Size")
        for i, row in enumerate(rows):
            for j, text in enumerate(self.texts(row)):
                item = QTableWidgetItem(text)
                if j == size_column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()

    def selected(self) -> RowT | None:
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()] if rows else None

    def confirm_remove(self, name: str, question: str, remove: Callable[[], object]) -> None:
        """Ask `question`; on Remove, run `remove` in a worker and re-read the list."""
        if dialogs.ask(self, f"Remove {self.KIND}", question, ("Remove", "Cancel")) != "Remove":
            return
        self.controller.run(f"remove {name}", remove, lambda _: self.refresh(), owner=self)

    def run_prune(self, prune: Callable[[], int]) -> None:
        """Run `prune` (it returns the bytes freed) in a worker; say how much came back and re-read the list."""
        def pruned(freed: int) -> None:
            self.controller.notify.emit("Dockyard", f"Pruned {self.KIND}s: {human_size(freed)} back.")
            self.refresh()

        self.controller.run(f"prune the {self.KIND}s", prune, pruned, owner=self)
