"""Drawing a terminal's rows and cursor with QPainter: colours, attributes, character cells.

A row is drawn as runs of cells of one style: one background rectangle and one
text draw per run, so an 80x24 screen costs a few dozen calls, not two thousand.
Cells are `cell.width()` apart with a fractional width: a run of text drawn as one
string then lands on its cells.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSizeF
from PySide6.QtGui import QColor, QFont, QPainter

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
    known = _COLOURS.get(name)
    if known is not None:
        return known
    if len(name) == 6:
        value = QColor(f"#{name}")
        if value.isValid():
            _COLOURS[name] = value
            return value
    return default


def _style(char: Any) -> tuple:
    return (char.fg, char.bg, char.bold, char.italics, char.underscore, char.strikethrough, char.reverse)


def paint_row(painter: QPainter, line: Any, columns: int, y: int, cell: QSizeF, ascent: float,
              font: QFont) -> None:
    """Draw pyte line `line` as row `y`."""
    top = MARGIN + y * cell.height()
    x = 0
    while x < columns:
        style = _style(line[x])
        end = x + 1
        while end < columns and _style(line[end]) == style:
            end += 1
        _paint_run(painter, [line[i].data for i in range(x, end)], x, top, style, cell, ascent, font)
        x = end


def _paint_run(painter: QPainter, cells: list[str], x: int, top: float, style: tuple, cell: QSizeF,
               ascent: float, base_font: QFont) -> None:
    fg_name, bg_name, bold, italics, underscore, strike, reverse = style
    fg, bg = colour(fg_name, FOREGROUND), colour(bg_name, BACKGROUND)
    if reverse:
        fg, bg = bg, fg
    left = MARGIN + x * cell.width()
    if bg != BACKGROUND:
        painter.fillRect(QRectF(left, top, len(cells) * cell.width(), cell.height()), bg)
    if not any(c.strip() for c in cells) and not underscore and not strike:
        return
    font = QFont(base_font)
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


def paint_cursor(painter: QPainter, char: str, x: int, y: int, cell: QSizeF, ascent: float,
                 font: QFont, focused: bool) -> None:
    """A block cursor on cell (x, y) holding `char`; an outline when the widget has no focus."""
    rect = QRectF(MARGIN + x * cell.width(), MARGIN + y * cell.height(), cell.width(), cell.height())
    if not focused:
        painter.setPen(FOREGROUND)
        painter.drawRect(rect.adjusted(0.5, 0.5, -0.5, -0.5))
        return
    painter.fillRect(rect, FOREGROUND)
    if char.strip():
        painter.setFont(font)
        painter.setPen(BACKGROUND)
        painter.drawText(QPointF(rect.left(), rect.top() + ascent), char)
