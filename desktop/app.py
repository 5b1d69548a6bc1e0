"""`dockyard-desktop`: what launching the desktop app does, until the tray UI lands.

Launching Docker Desktop brings its engine up; so does this. It creates the
machine on first launch (with `dockyard machine init`'s defaults), boots it,
prints the DOCKER_HOST line and returns. The tray and dashboard (PySide6) will
build on this same path: `desktop/` has no Qt in it, and the UI only calls it.
"""

from __future__ import annotations

import argparse
import sys


def machine_commands(name: str, exists: bool) -> list[list[str]]:
    """The `dockyard` commands that bring machine `name` up from its current state."""
    if exists:
        return [["machine", "start", "--name", name]]
    return [["machine", "init", "--name", name, "--start"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dockyard-desktop",
        description="Bring the Dockyard machine up (created on first launch) and print its DOCKER_HOST.")
    parser.add_argument("--name", default="default", help="machine name (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)

    from desktop import cli
    from desktop.machine.manager import MachineManager

    for command in machine_commands(args.name, MachineManager(args.name).exists()):
        code = cli.main((["-v"] if args.verbose else []) + command)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
