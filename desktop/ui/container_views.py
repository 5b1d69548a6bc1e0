"""A container's logs (follow, search, timestamps) and its inspect output as a tree.

The log window reads the engine's log stream in a worker; with Follow on, the
worker keeps the stream open and new lines arrive as they are written. Closing
the window (or turning Follow off) closes the stream.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor, QTextDocument
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.engine_model import ContainerRow, EngineModel
from desktop.ui.workers import run_async

log = logging.getLogger(__name__)
MAX_LOG_BLOCKS = 20000


class LogsWindow(QDialog):
    """One container's log; `text()` is what the user sees."""

    def __init__(self, engine: EngineModel, row: ContainerRow, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.row = row
        self.setWindowTitle(f"Logs: {row.name}")
        self.resize(820, 520)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(MAX_LOG_BLOCKS)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = self.view.font()
        font.setFamily("monospace")
        self.view.setFont(font)
        self.follow = QCheckBox("Follow")
        self.follow.setChecked(True)
        self.timestamps = QCheckBox("Timestamps")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search")
        self.search.returnPressed.connect(self.find_next)
        self.find_button = QPushButton("Find")
        self.find_button.clicked.connect(self.find_next)
        self.status = QLabel("")
        self.follow.toggled.connect(self.reload)
        self.timestamps.toggled.connect(self.reload)
        bar = QHBoxLayout()
        for widget in (self.follow, self.timestamps, self.search, self.find_button):
            bar.addWidget(widget)
        bar.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        self._generation = 0
        self._stop = threading.Event()
        self._close_stream: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self.reload()

    def text(self) -> str:
        return self.view.toPlainText()

    def reload(self) -> None:
        """(Re)read the log with the current options; a running follow is closed first."""
        self._end_stream()
        self._stop = threading.Event()
        self._generation += 1
        generation, stop = self._generation, self._stop
        self.view.clear()
        follow, stamps = self.follow.isChecked(), self.timestamps.isChecked()
        engine, ident = self.engine, self.row.id
        self.status.setText("following…" if follow else "")

        def opened(close: Callable[[], None]) -> None:
            with self._lock:
                if not stop.is_set():
                    self._close_stream = close
                    return
            close()   # this read was ended while its stream was being opened

        def read(progress: Any) -> None:
            lines = engine.logs(ident, follow=follow, timestamps=stamps, opened=opened)
            batch: list[str] = []
            try:
                for line in lines:
                    if stop.is_set():
                        break
                    batch.append(line)
                    if follow or len(batch) >= 500:
                        progress((generation, batch))
                        batch = []
                if batch:
                    progress((generation, batch))
            finally:
                lines.close()

        run_async(read, lambda _: self._ended(generation), self._failed, self._append, owner=self)

    def _append(self, item: tuple[int, list[str]]) -> None:
        generation, lines = item
        if generation != self._generation:
            return
        at_end = self.view.verticalScrollBar().value() == self.view.verticalScrollBar().maximum()
        self.view.appendPlainText("\n".join(lines))
        if at_end:
            self.view.moveCursor(QTextCursor.MoveOperation.End)

    def _ended(self, generation: int) -> None:
        if generation == self._generation:
            self.status.setText("" if not self.follow.isChecked() else "the container stopped")

    def _failed(self, message: str) -> None:
        self.status.setText(message)

    def find_next(self) -> bool:
        """Select the next match of the search text (wrapping around); returns whether one was found."""
        needle = self.search.text()
        if not needle:
            return False
        if self.view.find(needle):
            return True
        self.view.moveCursor(QTextCursor.MoveOperation.Start)
        found = self.view.find(needle, QTextDocument.FindFlag(0))
        self.status.setText("" if found else f"{needle!r} not found")
        return found

    def _end_stream(self) -> None:
        """Stop the reading thread now: a follow blocked on a quiet container would hold its
        thread, and the app's exit (the thread pool waits for its tasks), forever."""
        self._stop.set()
        with self._lock:
            close, self._close_stream = self._close_stream, lambda: None
        try:
            close()
        except Exception as err:  # noqa: BLE001 - a stream the engine already ended
            log.debug("closing the log stream: %s", err)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._end_stream()
        super().closeEvent(event)

    def done(self, result: int) -> None:
        self._end_stream()
        super().done(result)


def fill_tree(parent: QTreeWidgetItem | QTreeWidget, value: Any, key: str = "") -> None:
    """Add `value` (JSON) under `parent`: objects and arrays as branches, the rest as key/value rows."""
    def add(label: str, text: str) -> QTreeWidgetItem:
        item = QTreeWidgetItem([label, text])
        if isinstance(parent, QTreeWidget):
            parent.addTopLevelItem(item)
        else:
            parent.addChild(item)
        return item

    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                fill_tree(add(str(k), f"{len(v)} item(s)" if isinstance(v, list) else ""), v)
            else:
                add(str(k), json.dumps(v) if not isinstance(v, str) else v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, (dict, list)) and v:
                fill_tree(add(f"[{i}]", ""), v)
            else:
                add(f"[{i}]", json.dumps(v) if not isinstance(v, str) else v)
    else:
        add(key, json.dumps(value))


class InspectWindow(QDialog):
    """`docker inspect` of one container as a tree with the main sections open."""

    OPEN = ("State", "Config", "NetworkSettings", "Mounts", "HostConfig")

    def __init__(self, data: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Inspect: {str(data.get('Name', '')).lstrip('/')}")
        self.resize(720, 600)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Key", "Value"])
        self.tree.setColumnWidth(0, 240)
        fill_tree(self.tree, data)
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item is not None and item.text(0) in self.OPEN[:2]:
                item.setExpanded(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setDefaultAlignment(Qt.AlignmentFlag.AlignLeft)
