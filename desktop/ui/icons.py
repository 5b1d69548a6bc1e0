"""The tray's pictures, drawn at run time: one per machine phase, no image files to ship.

A rounded container-box glyph on a disc whose colour says the state: grey
stopped, amber starting (or stopping), green running, red error.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPen, QPixmap

from desktop.machine_control import Phase

COLOURS = {
    Phase.NOT_CREATED: "#8a8f98",
    Phase.STOPPED: "#8a8f98",
    Phase.STARTING: "#e0a100",
    Phase.STOPPING: "#e0a100",
    Phase.RUNNING: "#2e9d4f",
    Phase.ERROR: "#d0352f",
}
_cache: dict[Phase, QIcon] = {}


def colour(phase: Phase) -> QColor:
    return QColor(COLOURS[phase])


def _pixmap(phase: Phase, size: int) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QBrush(colour(phase)))
    painter.drawEllipse(QRectF(0.5, 0.5, size - 1, size - 1))
    # Three stacked boxes: the containers.
    painter.setPen(QPen(QColor("white"), max(1.0, size / 22)))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    box = size * 0.2
    for dx, dy in ((0.2, 0.5), (0.42, 0.5), (0.31, 0.28)):
        painter.drawRoundedRect(QRectF(size * dx, size * dy, box, box), 1.5, 1.5)
    if phase in (Phase.STARTING, Phase.STOPPING):
        painter.setPen(QPen(QColor("white"), max(1.5, size / 14)))
        painter.drawArc(QRectF(size * 0.12, size * 0.12, size * 0.76, size * 0.76), 90 * 16, -120 * 16)
    elif phase is Phase.ERROR:
        painter.setPen(QPen(QColor("white"), max(1.5, size / 10)))
        painter.drawLine(int(size * 0.5), int(size * 0.78), int(size * 0.5), int(size * 0.8))
    painter.end()
    return pixmap


def icon(phase: Phase) -> QIcon:
    """The tray icon for `phase` (16 to 64 px)."""
    if phase not in _cache:
        made = QIcon()
        for size in (16, 22, 24, 32, 48, 64):
            made.addPixmap(_pixmap(phase, size))
        _cache[phase] = made
    return _cache[phase]
