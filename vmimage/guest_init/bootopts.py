"""The dockyard.* kernel arguments the machine manager appends (see the contract)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Share:
    """A host folder exported by QEMU under `tag`, mounted at the same `path`."""

    tag: str
    path: str


@dataclass
class BootOptions:
    """Parsed dockyard.* arguments; `errors` lists the ones that could not be used."""

    authorized_key: str = ""
    sharefs: str = "none"
    shares: list[Share] = field(default_factory=list)
    hostloop: str = "10.0.2.2"
    time: int | None = None
    errors: list[str] = field(default_factory=list)


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
                opts.authorized_key = base64.b64decode(value, validate=True).decode().strip()
            except (binascii.Error, UnicodeDecodeError) as err:
                opts.errors.append(f"dockyard.key is not base64 text: {err}")
        elif name == "sharefs":
            if value in ("9p", "virtiofs", "none"):
                opts.sharefs = value
            else:
                opts.errors.append(f"dockyard.sharefs={value}: expected 9p, virtiofs or none")
        elif name == "shares":
            for item in filter(None, value.split(",")):
                tag, colon, path = item.partition(":")
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
