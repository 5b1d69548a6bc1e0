"""The dashboard's terminal into a container: a terminal widget on an exec with a TTY.

`open_terminal(container, parent)` gives the container page a widget running `sh`
in the container. The exec runs in `desktop.exec_session` (Qt-free, its own
threads); its output reaches this widget through a Qt signal and is fed to a pyte
screen in the UI thread in bounded slices, so a flood of output never freezes the
window. Painting draws only the lines pyte marked dirty.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import pyte
from PySide6.QtCore import QPointF, QRectF, QSize, QSizeF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QFontMetricsF,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
)
from PySide6.QtWidgets import QApplication, QMenu, QWidget

from desktop.exec_session import DEFAULT_COMMAND, ExecSession

from .terminal_keys import key_bytes, paste_bytes
from .terminal_screen import TerminalScreen

log = logging.getLogger(__name__)

# Output fed to pyte per turn of the event loop: bounded, so input and painting keep up
# (pyte renders ~0.8 MB/s here: 16 KiB is ~20 ms).
FEED_SLICE = 16 * 1024
# Output waiting for the UI beyond which the reader thread stops reading, as a terminal
# stops reading its pty: `yes` slows down instead of filling memory.
MAX_PENDING = 256 * 1024
MARGIN = 4

BACKGROUND = QColor("#1e1e1e")
FOREGROUND = QColor("#d4d4d4")
# xterm's 16 colours as pyte names them ("brown" is yellow; pyte misspells one bright name).
PALETTE = {
    "black": "#000000", "red": "#cd3131", "green": "#0dbc79", "brown": "#e5e510",
    "blue": "#2472c8", "magenta": "#bc3fbc", "cyan": "#11a8cd", "white": "#e5e5e5",
    "brightblack": "#666666", "brightred": "#f14c4c", "brightgreen": "#23d18b",
    "brightbrown": "#f5f543", "brightblue": "#3b8eea", "brightmagenta": "#d670d6",
    "bfightmagenta": "#d670d6", "brightcyan": "#29b8db", "brightwhite": "#ffffff",
}
_COLOURS = {name: QColor(value) for name, value in PALETTE.items()}


def colour(name: str, default: QColor) -> QColor:
    """A pyte colour (a palette name, "default", or "rrggbb" for 256 and true colours)."""
    if name == "default":
        return default
    known = _COLOURS.get(name)
    if known is not None:
        return known
    if len(name) == 6:
        try:
            value = QColor(f"#{name}")
        except ValueError:
            return default
        _COLOURS[name] = value
        return value
    return default


class TerminalWidget(QWidget):
    """A terminal screen on an `ExecSession`: keys in, rendered output out.

    Signals: `exited(code)` when the process ends (code is None if the engine did
    not know it), `failed(message)` when the terminal could not run or the engine
    went away, `title_changed(title)` when the program sets the window title.
    """

    exited = Signal(object)
    failed = Signal(str)
    title_changed = Signal(str)
    _output_ready = Signal()          # from the session's reader thread
    _session_exited = Signal(object)
    _session_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setAttribute(Qt.WidgetAttribute.WA_InputMethodEnabled, False)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)
        self.setCursor(Qt.CursorShape.IBeamCursor)
        self.setFont(_monospace_font())
        self.session: ExecSession | None = None
        self.exit_code: int | None = None
        self.error_message: str | None = None
        # `term`, not `screen`: QWidget.screen() is Qt's (the monitor the widget is on).
        self.term = TerminalScreen(80, 24, self._reply)
        self.term.title_changed = self.title_changed.emit
        self.stream = pyte.ByteStream(self.term)
        self._pending = bytearray()
        self._painted_cursor_line = 0
        self._pending_lock = threading.Lock()
        self._drained = threading.Condition(self._pending_lock)
        self._output_ready.connect(self._feed_pending, Qt.ConnectionType.QueuedConnection)
        self._session_exited.connect(self._on_exited, Qt.ConnectionType.QueuedConnection)
        self._session_failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)
        self._fit_screen()

    # Running a session.

    def attach(self, client: Any, container: str, command: Sequence[str] = DEFAULT_COMMAND,
               user: str = "", workdir: str | None = None) -> ExecSession:
        """Run `command` in `container` through docker-py `client`, shown in this widget."""
        if self.session is not None:
            self.session.close()
        self.session = session = ExecSession(
            client, container, command, on_output=lambda data: self._receive(data, session),
            on_exit=lambda code: self._emit(self._session_exited, code),
            on_error=lambda message: self._emit(self._session_failed, message),
            size=(self.term.lines, self.term.columns), user=user, workdir=workdir)
        self.destroyed.connect(self.session.close)
        self.session.start()
        return self.session

    def close_session(self) -> None:
        """Disconnect from the process (it keeps running in the container, as with dockerd)."""
        if self.session is not None:
            self.session.close()

    @property
    def running(self) -> bool:
        return self.session is not None and self.session.running

    @property
    def backlog(self) -> int:
        """Bytes of output received and not yet on the screen."""
        with self._pending_lock:
            return len(self._pending)

    def _receive(self, data: bytes, session: ExecSession) -> None:
        # The reader thread: queue the bytes and wake the UI thread once per batch; wait
        # while the UI is far behind (the session's close ends the wait).
        with self._drained:
            while len(self._pending) > MAX_PENDING and session.running:
                self._drained.wait(0.2)
            wake = not self._pending
            self._pending += data
        if wake:
            self._emit(self._output_ready)

    def _emit(self, signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:   # the widget was deleted while the session still ran
            pass

    def _feed_pending(self) -> None:
        with self._drained:
            chunk = bytes(self._pending[:FEED_SLICE])
            del self._pending[:FEED_SLICE]
            more = bool(self._pending)
            self._drained.notify_all()
        if chunk:
            self.stream.feed(chunk)
            self._update_dirty()
        if more:
            QTimer.singleShot(0, self._feed_pending)

    def _reply(self, data: bytes) -> None:
        if self.session is not None:
            self.session.write(data)

    def _on_exited(self, code: int | None) -> None:
        self._feed_pending_all()
        self.exit_code = code
        shown = "unknown" if code is None else str(code)
        self._show_notice(f"[process exited with code {shown}]", "90")
        self.exited.emit(code)

    def _on_failed(self, message: str) -> None:
        self._feed_pending_all()
        self.error_message = message
        self._show_notice(message, "31")
        self.failed.emit(message)

    def _feed_pending_all(self) -> None:
        with self._pending_lock:
            rest = bytes(self._pending)
            self._pending.clear()
        if rest:
            self.stream.feed(rest)

    def _show_notice(self, text: str, sgr: str) -> None:
        start = "\r\n" if self.term.cursor.x else ""
        self.stream.feed(f"{start}\x1b[0;{sgr}m{text}\x1b[0m\r\n".encode())
        self._update_dirty()

    # Keys, paste, size.

    def focusNextPrevChild(self, forward: bool) -> bool:
        return False   # Tab and Backtab belong to the program in the terminal

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Ctrl+V and Ctrl+C are the program's: terminals paste and copy with Shift added.
        if _is_shortcut(event, Qt.Key.Key_V) or (
                event.key() == Qt.Key.Key_Insert and event.modifiers() == Qt.KeyboardModifier.ShiftModifier):
            self.paste()
            return
        if _is_shortcut(event, Qt.Key.Key_C):
            self.copy_screen()
            return
        data = key_bytes(event, self.term.application_cursor)
        if data and self.session is not None and self.session.running:
            self.session.write(data)
            return
        super().keyPressEvent(event)

    def paste(self, text: str | None = None) -> None:
        """Send the clipboard's text (or `text`) as a terminal pastes it."""
        if text is None:
            text = QApplication.clipboard().text()
        if text and self.session is not None and self.session.running:
            self.session.write(paste_bytes(text, self.term.bracketed_paste))

    def copy_screen(self) -> None:
        """Put the screen's text on the clipboard (there is no selection yet)."""
        QApplication.clipboard().setText("\n".join(self.term.text_lines()).rstrip("\n") + "\n")

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton:
            self.paste()
            return
        super().mouseReleaseEvent(event)

    def _context_menu(self, pos: Any) -> None:
        menu = QMenu(self)
        menu.addAction("Paste", self.paste).setEnabled(self.running)
        menu.addAction("Copy screen", self.copy_screen)
        menu.exec(self.mapToGlobal(pos))

    def cell_size(self) -> QSizeF:
        """One character cell. The width stays fractional: rounding it would make a long run
        of text, drawn as one string at the font's own advance, drift off its cells."""
        metrics = QFontMetricsF(self.font())
        return QSizeF(max(1.0, metrics.horizontalAdvance("M")), max(1.0, math.ceil(metrics.height())))

    def sizeHint(self) -> QSize:
        cell = self.cell_size()
        return QSize(math.ceil(80 * cell.width()) + 2 * MARGIN, math.ceil(24 * cell.height()) + 2 * MARGIN)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_screen()

    def _fit_screen(self) -> None:
        cell = self.cell_size()
        cols = max(2, int((self.width() - 2 * MARGIN) // cell.width()))
        rows = max(1, int((self.height() - 2 * MARGIN) // cell.height()))
        if (rows, cols) == (self.term.lines, self.term.columns):
            return
        self.term.resize(rows, cols)
        if self.session is not None:
            self.session.resize(rows, cols)
        self.update()

    # Painting.

    def _update_dirty(self) -> None:
        """Repaint the lines pyte changed, and the cursor's old and new lines."""
        lines = set(self.term.dirty) | {self._painted_cursor_line, self.term.cursor.y}
        self.term.dirty.clear()
        cell = self.cell_size()
        top, bottom = min(lines), max(lines)
        self.update(QRectF(0, MARGIN + top * cell.height(), self.width(),
                           (bottom - top + 1) * cell.height()).toAlignedRect())

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(event.rect(), BACKGROUND)
        cell = self.cell_size()
        ascent = QFontMetricsF(self.font()).ascent()
        first = max(0, int((event.rect().top() - MARGIN) // cell.height()))
        last = min(self.term.lines - 1, int((event.rect().bottom() - MARGIN) // cell.height()))
        for y in range(first, last + 1):
            self._paint_line(painter, y, cell, ascent)
        self._paint_cursor(painter, cell, ascent)
        self._painted_cursor_line = self.term.cursor.y
        painter.end()

    def _paint_line(self, painter: QPainter, y: int, cell: QSizeF, ascent: float) -> None:
        line = self.term.buffer[y]
        top = MARGIN + y * cell.height()
        x = 0
        columns = self.term.columns
        while x < columns:
            char = line[x]
            style = (char.fg, char.bg, char.bold, char.italics, char.underscore, char.strikethrough,
                     char.reverse)
            end = x + 1
            while end < columns and _style(line[end]) == style:
                end += 1
            self._paint_run(painter, [line[i].data for i in range(x, end)], x, top, style, cell, ascent)
            x = end

    def _paint_run(self, painter: QPainter, cells: list[str], x: int, top: float, style: tuple,
                   cell: QSizeF, ascent: float) -> None:
        fg_name, bg_name, bold, italics, underscore, strike, reverse = style
        fg, bg = colour(fg_name, FOREGROUND), colour(bg_name, BACKGROUND)
        if reverse:
            fg, bg = bg, fg
        left = MARGIN + x * cell.width()
        width = len(cells) * cell.width()
        if bg != BACKGROUND:
            painter.fillRect(QRectF(left, top, width, cell.height()), bg)
        if not any(c.strip() for c in cells) and not underscore and not strike:
            return
        font = QFont(self.font())
        font.setBold(bold)
        font.setItalic(italics)
        font.setUnderline(underscore)
        font.setStrikeOut(strike)
        painter.setFont(font)
        painter.setPen(fg)
        if all(len(c) == 1 and c.isascii() for c in cells):
            painter.drawText(QPointF(left, top + ascent), "".join(cells))
            return
        for i, text in enumerate(cells):   # wide or combined characters: one cell at a time
            if text:
                painter.drawText(QPointF(left + i * cell.width(), top + ascent), text)

    def _paint_cursor(self, painter: QPainter, cell: QSizeF, ascent: float) -> None:
        cursor = self.term.cursor
        if cursor.hidden or self.session is None or not self.running:
            return
        rect = QRectF(MARGIN + cursor.x * cell.width(), MARGIN + cursor.y * cell.height(),
                      cell.width(), cell.height())
        if not self.hasFocus():
            painter.setPen(FOREGROUND)
            painter.drawRect(rect.adjusted(0.5, 0.5, -0.5, -0.5))
            return
        painter.fillRect(rect, FOREGROUND)
        char = self.term.buffer[cursor.y][cursor.x].data
        if char.strip():
            painter.setFont(self.font())
            painter.setPen(BACKGROUND)
            painter.drawText(QPointF(rect.left(), rect.top() + ascent), char)

    def focusInEvent(self, event: Any) -> None:
        super().focusInEvent(event)
        self.update()

    def focusOutEvent(self, event: Any) -> None:
        super().focusOutEvent(event)
        self.update()


def _style(char: Any) -> tuple:
    return (char.fg, char.bg, char.bold, char.italics, char.underscore, char.strikethrough, char.reverse)


def _is_shortcut(event: QKeyEvent, key: Qt.Key) -> bool:
    """Ctrl+Shift+key, the terminal's own shortcuts."""
    return event.key() == key and event.modifiers() == (
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)


def _monospace_font() -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setStyleHint(QFont.StyleHint.Monospace)
    font.setFixedPitch(True)
    return font


def open_terminal(container: Any, parent: QWidget | None = None,
                  command: Sequence[str] = DEFAULT_COMMAND) -> TerminalWidget:
    """A terminal running `command` (`sh`) in a docker-py `Container`; the page places it.

    Returns at once: the exec opens on a background thread, and a failure (engine
    down, container stopped) is shown in the widget and signalled by `failed`.
    """
    widget = TerminalWidget(parent)
    widget.attach(container.client, container.id, command)
    return widget
