"""The dockyard.* kernel arguments the machine manager appends (see the contract)."""

from __future__ import annotations

import binascii

# Plain classes, not dataclasses: importing dataclasses (and inspect behind it)
# costs ~0.1 s in a TCG guest, on the boot's critical path.


class Share:
    """A host folder exported by QEMU under `tag`, mounted at the same `path`."""

    __slots__ = ("tag", "path")

    def __init__(self, tag: str, path: str) -> None:
        self.tag = tag
        self.path = path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Share) and (self.tag, self.path) == (other.tag, other.path)

    def __repr__(self) -> str:
        return f"Share({self.tag!r}, {self.path!r})"


class BootOptions:
    """Parsed dockyard.* arguments; `errors` lists the ones that could not be used."""

    def __init__(self) -> None:
        self.authorized_key = ""
        self.sharefs = "none"
        self.shares: list[Share] = []
        self.hostloop = "10.0.2.2"
        self.time: int | None = None
        self.errors: list[str] = []


def unquote(text: str) -> str:
    """Undo %XX escapes (UTF-8), as urllib.parse.unquote would, minus its imports.

    The kernel command line splits on spaces, so the machine manager escapes
    spaces, commas, colons and '%' in share paths (urllib.parse.quote(path, safe="/")).
    """
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        if raw[i:i + 1] == b"%":
            try:
                out += bytes.fromhex(raw[i + 1:i + 3].decode())
            except ValueError:
                raise ValueError(f"bad %-escape in {text!r}") from None
            i += 3
        else:
            out += raw[i:i + 1]
            i += 1
    return out.decode()


def _b64decode(value: str) -> bytes:
    """Strict standard base64 (the base64 module would import re and struct)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    if len(value) % 4 or any(c not in alphabet for c in value):
        raise ValueError("not standard base64")
    return binascii.a2b_base64(value.encode())


def parse_cmdline(cmdline: str) -> BootOptions:
    """Read the dockyard.* words of a kernel command line; other words are ignored."""
    opts = BootOptions()
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if not key.startswith("dockyard.") or not sep:
            continue
        name = key[len("dockyard."):]
        if name == "key":
            try:
                opts.authorized_key = _b64decode(value).decode().strip()
            except (binascii.Error, UnicodeDecodeError, ValueError) as err:
                opts.errors.append(f"dockyard.key is not base64 text: {err}")
        elif name == "sharefs":
            if value in ("9p", "virtiofs", "none"):
                opts.sharefs = value
            else:
                opts.errors.append(f"dockyard.sharefs={value}: expected 9p, virtiofs or none")
        elif name == "shares":
            for item in filter(None, value.split(",")):
                tag, colon, path = item.partition(":")
                try:
                    tag, path = unquote(tag), unquote(path)
                except ValueError as err:
                    opts.errors.append(f"dockyard.shares item {item!r}: {err}")
                    continue
                if not colon or not tag or not path.startswith("/"):
                    opts.errors.append(f"dockyard.shares item {item!r}: expected TAG:/absolute/path")
                else:
                    opts.shares.append(Share(tag=tag, path=path))
        elif name == "hostloop":
            opts.hostloop = value
        elif name == "time":
            try:
                opts.time = int(value)
            except ValueError:
                opts.errors.append(f"dockyard.time={value}: expected unix seconds")
    return opts
