"""`dockyard-desktop`: the desktop app, or (with no display) what launching it does headless.

With a display, it runs the tray and dashboard (desktop.ui.app): the machine
is created on first launch and started, and a second launch brings the
running app forward. With no display (or `--headless`) it does what the app
does at launch and no more: creates the machine on first launch (with
`dockyard machine init`'s defaults), boots it, prints the DOCKER_HOST line and
returns, saying how to start the tray app. `desktop/` has no Qt in it: only
desktop/ui imports PySide6.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def machine_commands(name: str, exists: bool) -> list[list[str]]:
    """The `dockyard` commands that bring machine `name` up from its current state."""
    if exists:
        return [["machine", "start", "--name", name]]
    return [["machine", "init", "--name", name, "--start"]]


def has_display(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether Qt has somewhere to draw: an X or Wayland session, or an explicit QT_QPA_PLATFORM."""
    env = os.environ if environ is None else environ
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM")
                or sys.platform in ("darwin", "win32"))


def headless(name: str, verbose: bool) -> int:
    from desktop import cli
    from desktop.machine.manager import MachineManager

    for command in machine_commands(name, MachineManager(name).exists()):
        code = cli.main((["-v"] if verbose else []) + command)
        if code:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dockyard-desktop",
        description="The Dockyard desktop app: tray icon and dashboard. With no display (or --headless) it "
                    "brings the machine up (created on first launch) and prints its DOCKER_HOST.")
    parser.add_argument("--name", default="default", help="machine name (default: %(default)s)")
    parser.add_argument("--headless", action="store_true", help="no UI: start the machine, print DOCKER_HOST")
    parser.add_argument("--no-start", action="store_true", help="do not start the machine at launch")
    parser.add_argument("--tray-only", action="store_true", help="start in the tray, without the dashboard")
    parser.add_argument("--engine-socket", type=Path, default=None,
                        help="show this engine (e.g. a native `dockyard-agent serve` socket) instead of the "
                             "machine's")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="dockyard-desktop: %(message)s", stream=sys.stderr)
    if args.headless or not has_display():
        code = headless(args.name, args.verbose)
        if not args.headless:
            print("dockyard-desktop: no display, so no tray icon; from a desktop session, run "
                  f"{Path(sys.executable).parent / 'dockyard-desktop'} to get the tray and dashboard",
                  file=sys.stderr)
        return code
    from desktop.ui.app import run

    return run(sys.argv[:1], args.name, args.engine_socket, start_machine=not args.no_start,
               show_dashboard=not args.tray_only)


if __name__ == "__main__":
    sys.exit(main())
