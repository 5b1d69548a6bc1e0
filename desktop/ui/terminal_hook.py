"""TERMINAL HOOK (issue 10): where the Containers page opens a terminal into a container.

The terminal widget itself (`desktop/ui/terminal_widget.py`, on top of the
Qt-free `desktop/exec_session.py`) is written separately; the lead wires it
in here after merging, replacing the body of `open_terminal`. Until then the
Terminal button says so instead of failing.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QWidget

from desktop.ui import dialogs


def open_terminal(container: Any, parent: QWidget) -> QWidget | None:
    """Open a terminal (exec with a TTY, `sh`) into `container`, a docker-py Container.

    Returns the terminal's window, or None when none was opened.
    WIRE-IN POINT: replace this body with the terminal widget from desktop/ui/terminal_widget.py.
    """
    dialogs.show_error(parent, "Terminal",
                       f"The terminal for {container.name} is not in this build yet. Meanwhile, run "
                       f"`docker exec -it {container.name} sh` in a terminal of your own.")
    return None
