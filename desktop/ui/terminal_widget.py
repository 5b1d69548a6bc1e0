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
from PySide6.QtCore import QRectF, QSize, QSizeF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QFont,
    QFontDatabase,
    QFontMetricsF,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QApplication, QMenu, QWidget

from desktop.exec_session import DEFAULT_COMMAND, ExecSession

from .terminal_keys import key_bytes, paste_bytes
from .terminal_painter import BACKGROUND, MARGIN, paint_cursor, paint_row
from .terminal_screen import TerminalScreen

log = logging.getLogger(__name__)

# Output fed to pyte per turn of the event loop: bounded, so input and painting keep up
# (pyte renders ~0.8 MB/s here: 16 KiB is ~20 ms).
FEED_SLICE = 16 * 1024
# Output waiting for the UI beyond which the reader thread stops reading, as a terminal
# stops reading its pty: `yes` slows down instead of filling memory.
MAX_PENDING = 256 * 1024
WHEEL_LINES = 3
_PAGE_KEYS = {Qt.Key.Key_PageUp: 1, Qt.Key.Key_PageDown: -1}   # with Shift: scroll the history
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
        self.scroll_offset = 0         # rows scrolled back into the history
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

    def _feed_pending(self, limit: int | None = FEED_SLICE) -> None:
        """Feed pyte up to `limit` bytes of the backlog (all with None), and come back for more."""
        with self._drained:
            chunk = bytes(self._pending[:limit])
            del self._pending[:limit]
            more = bool(self._pending)
            self._drained.notify_all()
        if chunk:
            pushed = self.term.scrolled_off
            self.stream.feed(chunk)
            if self.scroll_offset:   # keep the lines being read where they are
                self.scroll_to(self.scroll_offset + self.term.scrolled_off - pushed)
            self._update_dirty()
        if more:
            QTimer.singleShot(0, self._feed_pending)

    def _reply(self, data: bytes) -> None:
        if self.session is not None:
            self.session.write(data)

    def _on_exited(self, code: int | None) -> None:
        self._feed_pending(None)
        self.exit_code = code
        shown = "unknown" if code is None else str(code)
        self._show_notice(f"[process exited with code {shown}]", "90")
        self.exited.emit(code)

    def _on_failed(self, message: str) -> None:
        self._feed_pending(None)
        self.error_message = message
        self._show_notice(message, "31")
        self.failed.emit(message)

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
        if event.modifiers() == Qt.KeyboardModifier.ShiftModifier and event.key() in _PAGE_KEYS:
            self.scroll_to(self.scroll_offset + _PAGE_KEYS[Qt.Key(event.key())] * (self.term.lines - 1))
            return
        data = key_bytes(event, self.term.application_cursor)
        if data and self.session is not None and self.session.running:
            self.scroll_to(0)    # typing brings the live screen back, as in xterm
            self.session.write(data)
            return
        super().keyPressEvent(event)

    # Scrollback.

    def scroll_to(self, offset: int) -> None:
        """Show the screen `offset` lines back in the history (0: the live screen)."""
        offset = max(0, min(offset, len(self.term.history)))
        if offset != self.scroll_offset:
            self.scroll_offset = offset
            self.update()

    def wheelEvent(self, event: QWheelEvent) -> None:
        notches = event.angleDelta().y() / 120
        self.scroll_to(self.scroll_offset + round(notches * WHEEL_LINES))
        event.accept()

    def _row(self, y: int) -> Any:
        """The pyte line shown on row y, from the history while scrolled back."""
        history = len(self.term.history)    # `clear` may have emptied it since the scroll
        index = history - min(self.scroll_offset, history) + y
        if index < history:
            return self.term.history[index]
        return self.term.buffer[index - history]

    def visible_lines(self) -> list[str]:
        """The text of the rows as shown, scrollback included (what a user reads)."""
        return ["".join(self._row(y)[x].data for x in range(self.term.columns)).rstrip()
                for y in range(self.term.lines)]

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
        if self.scroll_offset:
            self.update()    # every shown row moved
            return
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
            paint_row(painter, self._row(y), self.term.columns, y, cell, ascent, self.font())
        cursor = self.term.cursor
        if not (cursor.hidden or self.scroll_offset or not self.running):
            paint_cursor(painter, self.term.buffer[cursor.y][cursor.x].data, cursor.x, cursor.y, cell, ascent,
                         self.font(), self.hasFocus())
        self._painted_cursor_line = self.term.cursor.y
        painter.end()

    def focusInEvent(self, event: Any) -> None:
        super().focusInEvent(event)
        self.update()

    def focusOutEvent(self, event: Any) -> None:
        super().focusOutEvent(event)
        self.update()


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
