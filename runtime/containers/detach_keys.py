"""Detach keys: the key sequence that ends an attach (or exec) session without stopping it.

Docker's notation is a comma-separated list where each item is either one character
("a", "q") or a control key "ctrl-X" with X one of @ a-z [ \\ ] ^ _ (case-insensitive).
The default is Ctrl-P Ctrl-Q. As under dockerd, only sessions with a TTY look for it:
without one, stdin is binary data and any byte may be meant for the process.
"""

from __future__ import annotations

from ..errors import InvalidArgument

DEFAULT_DETACH_KEYS = b"\x10\x11"     # ctrl-p, ctrl-q

# "ctrl-@" is NUL, "ctrl-a" is 1 ... "ctrl-_" is 31: the order of the control codes.
_CONTROL_NAMES = "@abcdefghijklmnopqrstuvwxyz[\\]^_"


def parse_detach_keys(spec: str, what: str = "detach") -> bytes:
    """The bytes of a detach-keys spec; InvalidArgument with dockerd's message if malformed.

    `what` is the word dockerd uses in that message: "detach" for attach, "escape" for exec.
    An empty spec means the default sequence.
    """
    if not spec:
        return DEFAULT_DETACH_KEYS
    codes = bytearray()
    for key in spec.split(","):
        if len(key) == 1:
            codes += key.encode()[:1]   # as dockerd: the first byte of its UTF-8
            continue
        lowered = key.lower()
        if lowered.startswith("ctrl-") and len(lowered) == 6 and lowered[5] in _CONTROL_NAMES:
            codes.append(_CONTROL_NAMES.index(lowered[5]))
            continue
        raise InvalidArgument(f"Invalid {what} keys ({spec}) provided")
    return bytes(codes)


class DetachScanner:
    """Finds the detach sequence in a stream of stdin chunks, which may split it anywhere.

    Bytes that start the sequence are held back until it is either complete (the session
    detaches; they are never delivered) or broken (they are delivered, in order).
    """

    def __init__(self, keys: bytes) -> None:
        if not keys:
            raise ValueError("empty detach sequence")
        self.keys = keys
        self._held = 0          # how many bytes of `keys` the stream has matched so far

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to deliver now, whether the sequence completed in `data`)."""
        out = bytearray()
        for byte in data:
            if byte == self.keys[self._held]:
                self._held += 1
                if self._held == len(self.keys):
                    self._held = 0
                    return bytes(out), True
                continue
            if self._held:
                # A broken prefix goes through as typed; the current byte may start a new match.
                out += self.keys[:self._held]
                self._held = 0
                if byte == self.keys[0]:
                    self._held = 1
                    continue
            out.append(byte)
        return bytes(out), False
