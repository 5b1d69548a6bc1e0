"""A row of push buttons, each wired to what it does, left-aligned on a page."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QHBoxLayout, QPushButton


def button_row(*actions: tuple[str, Callable[..., object]]) -> tuple[QHBoxLayout, list[QPushButton]]:
    """The buttons for (label, slot) pairs, in order, and the row holding them (a stretch after the last)."""
    row = QHBoxLayout()
    buttons = []
    for label, slot in actions:
        button = QPushButton(label)
        button.clicked.connect(slot)
        row.addWidget(button)
        buttons.append(button)
    row.addStretch(1)
    return row, buttons
