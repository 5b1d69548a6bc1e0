"""Where the Containers page opens a terminal into a container: a window of its own
holding the terminal widget (`desktop/ui/terminal_widget.py`, an exec with a TTY)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

# Open terminal windows have no Qt parent (so each is a window of its own); this keeps
# their Python wrappers alive until Qt deletes them on close.
_open_windows: set[QWidget] = set()


def open_terminal(container: Any, parent: QWidget) -> QWidget:
    """Open a terminal (`sh`, as `docker exec -it`) into `container`, a docker-py Container,
    in a new window; closing the window ends the exec session."""
    # Imported on first use: the terminal emulator (pyte and its tables) is ~7 MB of
    # resident memory that an app nobody opens a terminal in does not need.
    from desktop.ui import terminal_widget

    window = terminal_widget.open_terminal(container)
    window.setWindowTitle(f"{container.name} — terminal")
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.resize(window.sizeHint())
    _open_windows.add(window)
    window.destroyed.connect(lambda *_: _open_windows.discard(window))
    window.show()
    window.activateWindow()
    return window
