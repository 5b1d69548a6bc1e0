"""The terminal's screen model: pyte's VT100/xterm emulator, plus what a live terminal needs.

pyte keeps the character grid, the cursor and the modes; this adds the replies a
program asks the terminal for (cursor position, device attributes), a resize that
keeps the cursor's line on screen, the modes the key mapping needs to know, and
the scrollback: lines that scroll off the top of the whole screen are kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import pyte
from pyte.screens import Margins

# pyte stores private modes (ESC [ ? n h) shifted left by 5 bits.
DECCKM = 1 << 5                 # application cursor keys
BRACKETED_PASTE = 2004 << 5
SCROLLBACK_LINES = 5000


class TerminalScreen(pyte.Screen):
    """A pyte screen that answers the program through `reply` and resizes as xterm does."""

    def __init__(self, columns: int, lines: int, reply: Callable[[bytes], None]) -> None:
        super().__init__(columns, lines)
        self._reply = reply
        self.title_changed: Callable[[str], None] = lambda title: None
        self.history: deque[Any] = deque(maxlen=SCROLLBACK_LINES)   # pyte lines, oldest first
        self.scrolled_off = 0      # lines ever added to the history (it may have dropped some)

    def write_process_input(self, data: str) -> None:
        self._reply(data.encode())

    def set_title(self, param: str) -> None:
        super().set_title(param)
        self.title_changed(param)

    def index(self) -> None:
        # A line leaves the screen for good only when the whole screen scrolls (not a
        # program's scrolling region, as in a full-screen editor).
        top, bottom = self.margins or Margins(0, self.lines - 1)
        if self.cursor.y == bottom and top == 0 and bottom == self.lines - 1:
            self._keep(self.buffer[0])
        super().index()

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        super().erase_in_display(how, *args, **kwargs)
        if how == 3:    # xterm's "erase saved lines" (what `clear` sends)
            self.history.clear()

    def _keep(self, line: Any) -> None:
        self.history.append(line)
        self.scrolled_off += 1

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
            for y in range(drop):
                self._keep(self.buffer[y])
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
