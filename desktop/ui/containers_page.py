"""The dashboard's Containers page: a live table grouped by compose project, and its actions.

Rows come from the controller's `containers_changed` signal, which follows the
engine's events stream. CPU and memory are read on demand: when the list
changes and, while the page is on screen, every few seconds (nothing runs
while the window is hidden). Ports are links to http://localhost:PORT.
"""

from __future__ import annotations

import dataclasses
import logging

from PySide6.QtCore import Qt, QTimer, Signal, SignalInstance
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.engine_model import ContainerRow, Stats, human_size, uptime_text
from desktop.ui import dialogs
from desktop.ui.button_row import button_row
from desktop.ui.controller import AppController
from desktop.ui.terminal_hook import open_terminal
from desktop.ui.workers import run_async

log = logging.getLogger(__name__)

COLUMNS = ("Name", "Image", "State", "Ports", "Uptime", "CPU", "Memory")
PORTS_COLUMN = COLUMNS.index("Ports")
IMAGE_COLUMN = COLUMNS.index("Image")
MAX_IMAGE_WIDTH = 220
STATS_INTERVAL_MS = 5000
ROW_ROLE = Qt.ItemDataRole.UserRole


class ContainersPage(QWidget):
    """The table and the buttons acting on the selected container."""

    open_logs = Signal(object)      # ContainerRow
    open_inspect = Signal(object)   # ContainerRow

    def __init__(self, controller: AppController) -> None:
        super().__init__()
        self.controller = controller
        self.rows: list[ContainerRow] = []
        self.stats: dict[str, Stats] = {}
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        # The last column takes the spare width, so rows (and the selection) span the table.
        self.tree.header().setStretchLastSection(True)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(lambda *_: self._emit_selected(self.open_logs))
        self.empty = QLabel("No containers yet. Run one from Images (Run…) or with `docker run`.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setObjectName("empty")

        actions = {
            "Start": lambda: self._act("start"),
            "Stop": lambda: self._act("stop"),
            "Restart": lambda: self._act("restart"),
            "Remove": self._remove,
            "Logs": lambda: self._emit_selected(self.open_logs),
            "Inspect": lambda: self._emit_selected(self.open_inspect),
            "Terminal": self._terminal,
        }
        buttons, made = button_row(*actions.items())
        self.buttons: dict[str, QPushButton] = dict(zip(actions, made, strict=True))
        for button in made:
            button.setEnabled(False)

        layout = QVBoxLayout(self)
        title = QLabel("<h2>Containers</h2>")
        layout.addWidget(title)
        layout.addLayout(buttons)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.empty)
        self.stats_timer = QTimer(self)
        self.stats_timer.setInterval(STATS_INTERVAL_MS)
        self.stats_timer.timeout.connect(self.refresh_stats)
        controller.containers_changed.connect(self.set_rows)
        self.set_rows(controller.containers)

    # -- rows -------------------------------------------------------------
    def set_rows(self, rows: list[ContainerRow]) -> None:
        selected = self.selected()
        self.rows = rows
        self.tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        for row in rows:
            parent: QTreeWidgetItem | None = None
            if row.project:
                parent = groups.get(row.project)
                if parent is None:
                    parent = QTreeWidgetItem([row.project, "compose project"])
                    font = parent.font(0)
                    font.setBold(True)
                    parent.setFont(0, font)
                    self.tree.addTopLevelItem(parent)
                    parent.setExpanded(True)
                    groups[row.project] = parent
            item = QTreeWidgetItem(self._texts(row))
            item.setData(0, ROW_ROLE, row)
            item.setToolTip(0, row.id[:12])
            item.setToolTip(1, row.image)
            if parent is None:
                self.tree.addTopLevelItem(item)
            else:
                parent.addChild(item)
                parent.setText(2, self._group_state(row.project))
            if row.ports:
                links = " ".join(f'<a href="{p.url}">{p.host_port}</a>→{p.container_port}' if p.proto == "tcp"
                                 else p.text for p in row.ports)
                label = QLabel(links)
                label.setOpenExternalLinks(True)
                label.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse)
                label.setObjectName(f"ports:{row.name}")
                label.setContentsMargins(3, 0, 3, 0)
                # The label is the cell's text: the item's own would be painted under it.
                item.setText(PORTS_COLUMN, "")
                item.setToolTip(PORTS_COLUMN, " ".join(p.text for p in row.ports))
                self.tree.setItemWidget(item, PORTS_COLUMN, label)
            if selected is not None and selected.id == row.id:
                item.setSelected(True)
        self._fit_columns()
        self.tree.setVisible(bool(rows))
        self.empty.setVisible(not rows)
        self._update_buttons()
        if self.isVisible():
            self.refresh_stats()

    def _fit_columns(self) -> None:
        """Columns as wide as their contents (port links included); a long image name is
        elided in the middle (its tooltip has it whole) so that the numbers stay in view."""
        for column in range(len(COLUMNS)):
            self.tree.resizeColumnToContents(column)
        links = [w.sizeHint().width() for item in self._items()
                 if isinstance(w := self.tree.itemWidget(item, PORTS_COLUMN), QLabel)]
        if links:
            self.tree.setColumnWidth(PORTS_COLUMN, max(self.tree.columnWidth(PORTS_COLUMN), max(links) + 8))
        self.tree.setColumnWidth(IMAGE_COLUMN, min(self.tree.columnWidth(IMAGE_COLUMN), MAX_IMAGE_WIDTH))

    def _group_state(self, project: str) -> str:
        members = [r for r in self.rows if r.project == project]
        running = sum(1 for r in members if r.running)
        return f"{running}/{len(members)} running"

    def _texts(self, row: ContainerRow) -> list[str]:
        stats = self.stats.get(row.id) if row.running else None
        return [row.name, row.image, row.state, " ".join(p.text for p in row.ports), uptime_text(row.status),
                f"{stats.cpu_percent:.1f} %" if stats else "", human_size(stats.memory) if stats else ""]

    def item_for(self, name: str) -> QTreeWidgetItem | None:
        """The tree item of the container called `name` (tests and the tray use it)."""
        for item in self._items():
            row = item.data(0, ROW_ROLE)
            if row is not None and row.name == name:
                return item
        return None

    def _items(self) -> list[QTreeWidgetItem]:
        found = []
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            if top is None:
                continue
            found.append(top)
            found += [child for j in range(top.childCount()) if (child := top.child(j)) is not None]
        return found

    def selected(self) -> ContainerRow | None:
        items = self.tree.selectedItems()
        return items[0].data(0, ROW_ROLE) if items else None

    def select(self, name: str) -> None:
        item = self.item_for(name)
        if item is not None:
            self.tree.clearSelection()
            item.setSelected(True)
            self.tree.setCurrentItem(item)

    def _update_buttons(self) -> None:
        row = self.selected()
        for button in self.buttons.values():
            button.setEnabled(row is not None)
        if row is not None:
            self.buttons["Start"].setEnabled(not row.running)
            self.buttons["Stop"].setEnabled(row.running)
            self.buttons["Terminal"].setEnabled(row.state == "running")

    # -- stats ------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.refresh_stats()
        self.stats_timer.start()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().hideEvent(event)
        self.stats_timer.stop()

    def refresh_stats(self) -> None:
        running = [r for r in self.rows if r.state == "running"]
        if not running or not self.controller.engine_up:
            return
        engine = self.controller.engine

        def sample() -> tuple[dict[str, Stats], dict[str, str]]:
            found = {}
            for row in running:
                try:
                    found[row.id] = engine.stats(row.id)
                except Exception as err:  # noqa: BLE001 - a container that just stopped has no stats
                    log.debug("no stats for %s: %s", row.name, err)
            # The engine's "Up 3 minutes" ages between events: read it again with the figures.
            try:
                statuses = {r.id: r.status for r in engine.containers()}
            except Exception as err:  # noqa: BLE001 - the figures still show; the banner tells of a dead engine
                log.debug("no fresh statuses: %s", err)
                statuses = {}
            return found, statuses

        run_async(sample, self._set_stats)

    def _set_stats(self, sampled: tuple[dict[str, Stats], dict[str, str]]) -> None:
        self.stats, statuses = sampled
        for item in self._items():
            row = item.data(0, ROW_ROLE)
            if row is not None:
                if row.id in statuses and statuses[row.id] != row.status:
                    row = dataclasses.replace(row, status=statuses[row.id])
                    item.setData(0, ROW_ROLE, row)
                texts = self._texts(row)
                for column in (4, 5, 6):
                    item.setText(column, texts[column])
        for column in (4, 5, 6):   # the figures were blank when the widths were last fitted
            self.tree.resizeColumnToContents(column)

    # -- actions ----------------------------------------------------------
    def _emit_selected(self, signal: SignalInstance) -> None:
        row = self.selected()
        if row is not None:
            signal.emit(row)

    def _act(self, action: str) -> None:
        row = self.selected()
        if row is not None:
            self.controller.container_action(action, row)

    def _remove(self) -> None:
        row = self.selected()
        if row is None:
            return
        extra = " It is running and will be stopped first." if row.running else ""
        if dialogs.ask(self, "Remove container", f"Remove {row.name}?{extra}", ("Remove", "Cancel")) == "Remove":
            self.controller.container_action("remove", row)

    def _terminal(self) -> None:
        row = self.selected()
        if row is None:
            return
        engine = self.controller.engine
        self.controller.run(f"open a terminal in {row.name}", lambda: engine.client.containers.get(row.id),
                            lambda container: open_terminal(container, self), owner=self)
