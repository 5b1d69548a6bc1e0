"""Key presses to terminal bytes (xterm's sequences), and the screen model's resize."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pyte
import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeyEvent

from desktop.ui.terminal_keys import key_bytes, paste_bytes
from desktop.ui.terminal_screen import TerminalScreen

K = Qt.Key
M = Qt.KeyboardModifier
ESC = b"\x1b"


def press(key: Qt.Key, mods: Qt.KeyboardModifier = M.NoModifier, text: str = "") -> QKeyEvent:
    return QKeyEvent(QEvent.Type.KeyPress, key, mods, text)


@pytest.mark.parametrize(("key", "mods", "text", "normal", "application"), [
    (K.Key_A, M.NoModifier, "a", b"a", b"a"),
    (K.Key_E, M.NoModifier, "é", "é".encode(), "é".encode()),
    (K.Key_Return, M.NoModifier, "\r", b"\r", b"\r"),
    (K.Key_Enter, M.KeypadModifier, "\r", b"\r", b"\r"),
    (K.Key_Backspace, M.NoModifier, "\x08", b"\x7f", b"\x7f"),
    (K.Key_Tab, M.NoModifier, "\t", b"\t", b"\t"),
    (K.Key_Backtab, M.ShiftModifier, "", ESC + b"[Z", ESC + b"[Z"),
    (K.Key_Escape, M.NoModifier, "\x1b", ESC, ESC),
    (K.Key_Up, M.NoModifier, "", ESC + b"[A", ESC + b"OA"),
    (K.Key_Down, M.NoModifier, "", ESC + b"[B", ESC + b"OB"),
    (K.Key_Right, M.NoModifier, "", ESC + b"[C", ESC + b"OC"),
    (K.Key_Left, M.NoModifier, "", ESC + b"[D", ESC + b"OD"),
    (K.Key_Home, M.NoModifier, "", ESC + b"[H", ESC + b"OH"),
    (K.Key_End, M.NoModifier, "", ESC + b"[F", ESC + b"OF"),
    (K.Key_Right, M.ControlModifier, "", ESC + b"[1;5C", ESC + b"[1;5C"),
    (K.Key_PageUp, M.NoModifier, "", ESC + b"[5~", ESC + b"[5~"),
    (K.Key_PageDown, M.NoModifier, "", ESC + b"[6~", ESC + b"[6~"),
    (K.Key_Delete, M.NoModifier, "", ESC + b"[3~", ESC + b"[3~"),
    (K.Key_F1, M.NoModifier, "", ESC + b"OP", ESC + b"OP"),
    (K.Key_C, M.ControlModifier, "\x03", b"\x03", b"\x03"),
    (K.Key_D, M.ControlModifier, "\x04", b"\x04", b"\x04"),
    (K.Key_Z, M.ControlModifier, "\x1a", b"\x1a", b"\x1a"),
    (K.Key_BracketLeft, M.ControlModifier, "\x1b", ESC, ESC),
    (K.Key_Space, M.ControlModifier, " ", b"\x00", b"\x00"),
    (K.Key_B, M.AltModifier, "b", ESC + b"b", ESC + b"b"),
    (K.Key_Shift, M.ShiftModifier, "", b"", b""),
])
def test_keys_send_what_xterm_sends(qapp, key, mods, text, normal, application):
    assert key_bytes(press(key, mods, text)) == normal
    assert key_bytes(press(key, mods, text), application_cursor=True) == application


def test_paste_sends_line_ends_as_enter_and_brackets_when_asked():
    assert paste_bytes("ls\necho a\r\n") == b"ls\recho a\r"
    assert paste_bytes("x\n", bracketed=True) == b"\x1b[200~x\r\x1b[201~"
    # A pasted end marker cannot end the paste early.
    assert paste_bytes("a\x1b[201~rm -rf /\n", bracketed=True) == b"\x1b[200~arm -rf /\r\x1b[201~"


def test_the_screen_tracks_the_modes_keys_and_paste_depend_on():
    screen = TerminalScreen(80, 24, lambda data: None)
    stream = pyte.ByteStream(screen)
    assert not screen.application_cursor and not screen.bracketed_paste
    stream.feed(b"\x1b[?1h\x1b[?2004h")
    assert screen.application_cursor and screen.bracketed_paste
    stream.feed(b"\x1b[?1l\x1b[?2004l")
    assert not screen.application_cursor and not screen.bracketed_paste


def test_the_screen_answers_a_cursor_position_query():
    replies: list[bytes] = []
    screen = TerminalScreen(80, 24, replies.append)
    pyte.ByteStream(screen).feed(b"ab\r\ncd\x1b[6n")
    assert replies == [b"\x1b[2;3R"]


def test_shrinking_keeps_the_cursor_line_on_screen():
    screen = TerminalScreen(40, 24, lambda data: None)
    stream = pyte.ByteStream(screen)
    stream.feed(b"banner\r\n/ # ")
    screen.resize(10, 30)          # prompt near the top: drop empty lines at the bottom
    assert screen.text_lines()[:2] == ["banner", "/ #"] and screen.cursor.y == 1
    stream.feed(b"\r\n".join(b"line %d" % i for i in range(20)))
    screen.resize(4, 30)           # cursor on the last line: drop from the top
    assert screen.text_lines() == ["line 16", "line 17", "line 18", "line 19"]
    assert screen.cursor.y == 3


def test_lines_scrolled_off_the_whole_screen_are_kept_as_history():
    screen = TerminalScreen(20, 3, lambda data: None)
    stream = pyte.ByteStream(screen)
    stream.feed(b"\r\n".join(b"line %d" % i for i in range(6)))
    assert screen.text_lines() == ["line 3", "line 4", "line 5"]
    assert ["".join(line[x].data for x in range(20)).rstrip() for line in screen.history] == \
        ["line 0", "line 1", "line 2"]
    # A scrolling region (a full-screen program's) does not add to the history.
    stream.feed(b"\x1b[1;2r\x1b[2;1H\nregion\x1b[r")
    assert len(screen.history) == 3 and screen.scrolled_off == 3
    stream.feed(b"\x1b[3J")           # what `clear` sends to erase the saved lines
    assert len(screen.history) == 0


def test_pyte_colours_map_to_the_palette_256_and_true_colours():
    from PySide6.QtGui import QColor

    from desktop.ui.terminal_painter import FOREGROUND, PALETTE, colour

    assert colour("default", FOREGROUND) == FOREGROUND
    assert colour("brown", FOREGROUND) == QColor(PALETTE["brown"])         # pyte's name for yellow
    assert colour("ff8700", FOREGROUND) == QColor("#ff8700")               # 256-colour 208
    assert colour("zzzzzz", FOREGROUND) == FOREGROUND
