"""`dockyard-agent serve`: the Docker Engine API on a unix socket, in the foreground.

SIGTERM/SIGINT stop accepting connections, stop running containers through
engine.shutdown() (their state stays on disk) and exit 0.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import socket
import stat
import sys
import threading
from pathlib import Path

log = logging.getLogger("dockyard-agent")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dockyard-agent",
                                     description="Dockyard's Docker Engine API agent")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the Docker Engine API on a unix socket")
    serve.add_argument("--socket", required=True, type=Path, help="unix socket path to listen on")
    serve.add_argument("--root", required=True, type=Path, help="engine state directory")
    serve.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                       help="registry reached over plain HTTP (repeatable)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def prepare_socket_path(path: Path) -> None:
    """Create the parent (0700) if missing; remove a stale socket; refuse a live one."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"dockyard-agent: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise SystemExit(f"dockyard-agent: another agent is already serving on {path}")


def serve(args: argparse.Namespace) -> int:
    from runtime.engine import Engine

    from .app import build_router
    from .http_server import UnixHTTPServer

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            # A second signal while containers are being stopped: the user wants out now.
            log.warning("received %s again: exiting without waiting for containers", name)
            os._exit(1)
        log.info("received %s, shutting down", name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 <agent>` dumps every thread's stack to the log: the way to see a hang.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    prepare_socket_path(args.socket)
    args.root.mkdir(parents=True, exist_ok=True)
    engine = Engine(args.root, insecure_registries=args.insecure_registry)
    engine.start()
    server = UnixHTTPServer(str(args.socket), build_router(engine, str(args.root), args.insecure_registry))
    # serve_forever runs in a thread so the main thread can wait for the signal and then
    # call shutdown(), which must not run on the serving thread.
    serving = threading.Thread(target=server.serve_forever, name="http-accept", daemon=True)
    serving.start()
    log.info("Dockyard agent serving the Docker API on unix://%s (root %s)", args.socket, args.root)
    try:
        while not stop.wait(timeout=3600):
            pass
    finally:
        server.shutdown()
        server.server_close()
        try:
            args.socket.unlink()
        except FileNotFoundError:
            pass
        log.info("stopping containers")
        engine.shutdown()
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
