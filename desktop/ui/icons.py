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
    # Three stacked boxes: the containers. Filled, not outlined: at a tray's 16-24 px a
    # one-pixel outline blurs into the disc and the glyph cannot be made out.
    painter.setBrush(QBrush(QColor("white")))
    box, gap = size * 0.25, size * 0.05
    left = (size - 2 * box - gap) / 2
    top = size * 0.5 - box + gap / 2
    for x, y in ((left, top + box + gap / 2), (left + box + gap, top + box + gap / 2),
                 (left + (box + gap) / 2, top - gap / 2)):
        painter.drawRoundedRect(QRectF(x, y, box, box), size / 24, size / 24)
    if phase in (Phase.STARTING, Phase.STOPPING):
        painter.setPen(QPen(QColor("white"), max(1.5, size / 14)))
        painter.drawArc(QRectF(size * 0.12, size * 0.12, size * 0.76, size * 0.76), 90 * 16, -120 * 16)
    elif phase is Phase.ERROR:
        # A "!" badge at the top right: the state reads without telling red from green.
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(QColor("white")))
        painter.drawEllipse(QRectF(size * 0.64, size * 0.02, size * 0.34, size * 0.34))
        painter.setBrush(QBrush(colour(phase)))
        painter.drawRect(QRectF(size * 0.78, size * 0.07, size * 0.06, size * 0.15))
        painter.drawRect(QRectF(size * 0.78, size * 0.25, size * 0.06, size * 0.05))
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
