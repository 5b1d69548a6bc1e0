"""What a key press sends down a terminal: the bytes xterm sends for it.

Cursor and Home/End keys have two forms: `ESC [ A` normally and `ESC O A` once the
program asked for "application cursor keys" (DECCKM, as vi and less do). Alt
prefixes ESC, as xterm's metaSendsEscape; Ctrl with a letter or one of @[\\]^_ sends
its control character. Pasted text goes as typed, line ends as Enter (CR), wrapped
in the bracketed-paste markers when the program turned that mode on.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent

ESC = "\x1b"
Key = Qt.Key

# Keys whose bytes do not depend on the cursor-key mode.
_FIXED: dict[Key, str] = {
    Key.Key_Return: "\r",
    Key.Key_Enter: "\r",
    Key.Key_Backspace: "\x7f",
    Key.Key_Tab: "\t",
    Key.Key_Backtab: ESC + "[Z",
    Key.Key_Escape: ESC,
    Key.Key_Insert: ESC + "[2~",
    Key.Key_Delete: ESC + "[3~",
    Key.Key_PageUp: ESC + "[5~",
    Key.Key_PageDown: ESC + "[6~",
    Key.Key_F1: ESC + "OP",
    Key.Key_F2: ESC + "OQ",
    Key.Key_F3: ESC + "OR",
    Key.Key_F4: ESC + "OS",
    Key.Key_F5: ESC + "[15~",
    Key.Key_F6: ESC + "[17~",
    Key.Key_F7: ESC + "[18~",
    Key.Key_F8: ESC + "[19~",
    Key.Key_F9: ESC + "[20~",
    Key.Key_F10: ESC + "[21~",
    Key.Key_F11: ESC + "[23~",
    Key.Key_F12: ESC + "[24~",
}

# Keys sent as CSI x normally and SS3 x in application cursor-key mode.
_CURSOR: dict[Key, str] = {
    Key.Key_Up: "A",
    Key.Key_Down: "B",
    Key.Key_Right: "C",
    Key.Key_Left: "D",
    Key.Key_Home: "H",
    Key.Key_End: "F",
}

# xterm's modifier parameter for CSI 1;m x: 1 + shift(1) + alt(2) + ctrl(4).
_MODIFIER_BITS = ((Qt.KeyboardModifier.ShiftModifier, 1), (Qt.KeyboardModifier.AltModifier, 2),
                  (Qt.KeyboardModifier.ControlModifier, 4))

# Ctrl with these sends their control character (ASCII code & 0x1f).
_CTRL_SYMBOLS = {Key.Key_At: "\x00", Key.Key_Space: "\x00", Key.Key_BracketLeft: ESC,
                 Key.Key_Backslash: "\x1c", Key.Key_BracketRight: "\x1d",
                 Key.Key_AsciiCircum: "\x1e", Key.Key_Underscore: "\x1f", Key.Key_Question: "\x7f"}

BRACKETED_PASTE_START = ESC + "[200~"
BRACKETED_PASTE_END = ESC + "[201~"


def key_bytes(event: QKeyEvent, application_cursor: bool = False) -> bytes:
    """The bytes a terminal sends for this key press; b"" for keys it sends nothing for."""
    key = Key(event.key())
    mods = event.modifiers()
    ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
    alt = bool(mods & Qt.KeyboardModifier.AltModifier)

    if key in _CURSOR:
        final = _CURSOR[key]
        modifier = 1 + sum(bit for flag, bit in _MODIFIER_BITS if mods & flag)
        if modifier > 1:
            return f"{ESC}[1;{modifier}{final}".encode()
        return f"{ESC}{'O' if application_cursor else '['}{final}".encode()
    if key in _FIXED:
        text = _FIXED[key]
        if key == Key.Key_Backspace and ctrl:
            text = "\x08"
        return ((ESC if alt and key != Key.Key_Escape else "") + text).encode()
    if ctrl:
        control = _control_char(key)
        if control is not None:
            return ((ESC if alt else "") + control).encode()
    text = event.text()       # empty for keys with no text: Shift, Caps Lock, media keys
    return ((ESC if alt and text else "") + text).encode()


def _control_char(key: Key) -> str | None:
    if Key.Key_A.value <= key.value <= Key.Key_Z.value:
        return chr(key.value - Key.Key_A.value + 1)
    return _CTRL_SYMBOLS.get(key)


def paste_bytes(text: str, bracketed: bool = False) -> bytes:
    """Pasted text as a terminal sends it: line ends become CR, in markers if the program asked."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    if bracketed:
        # A pasted end marker would end the paste early and run the rest as typed.
        text = BRACKETED_PASTE_START + text.replace(BRACKETED_PASTE_END, "") + BRACKETED_PASTE_END
    return text.encode()
