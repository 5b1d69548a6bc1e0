"""Where the Containers page opens a terminal into a container: a window of its own
holding the terminal widget (`desktop/ui/terminal_widget.py`, an exec with a TTY)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from desktop.ui import terminal_widget

# Open terminal windows have no Qt parent (so each is a window of its own); this keeps
# their Python wrappers alive until Qt deletes them on close.
_open_windows: set[terminal_widget.TerminalWidget] = set()


def open_terminal(container: Any, parent: QWidget) -> QWidget:
    """Open a terminal (`sh`, as `docker exec -it`) into `container`, a docker-py Container,
    in a new window; closing the window ends the exec session."""
    window = terminal_widget.open_terminal(container)
    window.setWindowTitle(f"{container.name} — terminal")
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.resize(window.sizeHint())
    _open_windows.add(window)
    window.destroyed.connect(lambda *_: _open_windows.discard(window))
    window.show()
    window.activateWindow()
    return window
