"""`--cpuset-cpus` / `--cpuset-mems`: Docker's list syntax and its checks against this machine.

"0-2,5" names CPUs (or memory nodes) 0, 1, 2 and 5. dockerd refuses a list it
cannot parse and one naming a CPU or node that is not online, with the
messages below; the cgroup code writes the list as given.
"""

from __future__ import annotations

from ..errors import InvalidArgument

ONLINE_CPUS = "/sys/devices/system/cpu/online"
ONLINE_NODES = "/sys/devices/system/node/online"


class _BadList(ValueError):
    pass


def parse_list(text: str) -> set[int]:
    """Docker's parsers.ParseUintList: "0-2,5" -> {0, 1, 2, 5}; "" -> set()."""
    result: set[int] = set()
    if text == "":
        return result
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.isdecimal() or (dash and not high.isdecimal()):
            raise _BadList(f"invalid format: {text}")
        if not dash:
            result.add(int(low))
        elif int(low) > int(high):
            raise _BadList(f"invalid range format: {part}")
        else:
            result.update(range(int(low), int(high) + 1))
    return result


def _online(path: str, fallback: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or fallback
    except OSError:
        return fallback     # no NUMA information: node 0 only


def validate(cpus: str, mems: str) -> None:
    """InvalidArgument with dockerd's message when a list is malformed or names what is not online."""
    for text, what, path, fallback, unavailable in (
            (cpus, "cpus", ONLINE_CPUS, "0", "CPUs"), (mems, "mems", ONLINE_NODES, "0", "memory nodes")):
        if not text:
            continue
        try:
            wanted = parse_list(text)
        except _BadList as err:
            raise InvalidArgument(f"Invalid value {text} for cpuset {what}: {err}") from None
        available = _online(path, fallback)
        if not wanted <= parse_list(available):
            raise InvalidArgument(f"Requested {unavailable} are not available - requested {text}, "
                                  f"available: {available}")
