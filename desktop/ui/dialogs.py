"""Every question and error message the app shows, in one place.

Widgets and the tray call `dialogs.ask(...)` and `dialogs.show_error(...)`
through this module, so the tests can answer the questions (they replace
`ask`) and read the errors the user would have seen (`shown_errors`).
Errors are sentences with a next step, never tracebacks.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

log = logging.getLogger(__name__)

# (title, message) of every error shown, newest last: what the tests assert on.
shown_errors: list[tuple[str, str]] = []


def ask(parent: QWidget | None, title: str, text: str, choices: tuple[str, ...] = ("OK", "Cancel")) -> str:
    """A modal question; returns the label of the button chosen ("Cancel" when closed)."""
    box = QMessageBox(parent)
    box.setWindowTitle(title)
    box.setText(text)
    box.setIcon(QMessageBox.Icon.Question)
    buttons: dict[object, str] = {}
    for label in choices:
        role = QMessageBox.ButtonRole.RejectRole if label == "Cancel" else QMessageBox.ButtonRole.AcceptRole
        buttons[box.addButton(label, role)] = label
    box.exec()
    return buttons.get(box.clickedButton(), "Cancel")


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    """A non-modal error box (the UI keeps working behind it)."""
    shown_errors.append((title, message))
    log.warning("%s: %s", title, message)
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setModal(False)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.show()
