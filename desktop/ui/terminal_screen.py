"""The terminal's screen model: pyte's VT100/xterm emulator, plus what a live terminal needs.

pyte keeps the character grid, the cursor and the modes; this adds the replies a
program asks the terminal for (cursor position, device attributes), a resize that
keeps the cursor's line on screen, and the modes the key mapping needs to know.
"""

from __future__ import annotations

from collections.abc import Callable

import pyte

# pyte stores private modes (ESC [ ? n h) shifted left by 5 bits.
DECCKM = 1 << 5                 # application cursor keys
BRACKETED_PASTE = 2004 << 5


class TerminalScreen(pyte.Screen):
    """A pyte screen that answers the program through `reply` and resizes as xterm does."""

    def __init__(self, columns: int, lines: int, reply: Callable[[bytes], None]) -> None:
        super().__init__(columns, lines)
        self._reply = reply
        self.title_changed: Callable[[str], None] = lambda title: None

    def write_process_input(self, data: str) -> None:
        self._reply(data.encode())

    def set_title(self, param: str) -> None:
        super().set_title(param)
        self.title_changed(param)

    @property
    def application_cursor(self) -> bool:
        return DECCKM in self.mode

    @property
    def bracketed_paste(self) -> bool:
        return BRACKETED_PASTE in self.mode

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Resize; fewer lines drop from the top only as many lines as the cursor needs.

        pyte drops every removed line from the top, which on a fresh shell (prompt at
        the top, cursor on it) would scroll the prompt away. xterm keeps the cursor's
        line and the ones above it, dropping empty lines at the bottom first.
        """
        lines = lines or self.lines
        if lines < self.lines:
            drop = max(0, self.cursor.y - (lines - 1))
            kept = {y - drop: line for y, line in self.buffer.items() if drop <= y < drop + lines}
            self.buffer.clear()
            self.buffer.update(kept)
            self.cursor.y -= drop
            self.lines = lines
            self.dirty.update(range(lines))
            self.set_margins()
        super().resize(lines, columns)

    def text_lines(self) -> list[str]:
        """The screen's lines as text, trailing blanks removed (what a user reads)."""
        return [line.rstrip() for line in self.display]
