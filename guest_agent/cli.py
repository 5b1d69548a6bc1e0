"""`dockyard-agent serve`: the Docker Engine API on a unix socket, in the foreground.

Start-up order (a TCG guest runs python 8-16x slower than a host, so the order matters):
the socket is bound and listening first and answers `_ping` and `version` at once; the
engine is imported and made in a background thread, which then recovers its state and
sets up the network in two more threads (Engine.start(background=True)). Other requests
wait for the full API (StartupRouter); the engine makes those that need containers wait
for recovery, and container starts for the network.

SIGTERM/SIGINT stop accepting connections, stop running containers through
engine.shutdown() (their state stays on disk) and exit 0.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import select
import signal
import socket
import stat
import sys
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy reads the name as True
if TYPE_CHECKING:  # annotation-only: typing and argparse cost ~0.2 s each of a TCG guest's boot
    import argparse
    from typing import Any

    from .http_server import Handler, Router

log = logging.getLogger("dockyard-agent")
_LOG_LEVELS = ("debug", "info", "warning", "error")


class ServeArgs:
    """The options of `dockyard-agent serve`."""

    command = "serve"

    def __init__(self, socket: str, root: str, insecure_registry: list[str], log_level: str) -> None:
        self.socket = socket   # plain strings: pathlib is one more import before the socket is up
        self.root = root
        self.insecure_registry = insecure_registry
        self.log_level = log_level


def _parse_serve_fast(argv: list[str]) -> ServeArgs | None:
    """The agent's own command line (`serve --socket S --root R ...`) without argparse;
    None for anything else (help, mistakes), which argparse then explains."""
    if not argv or argv[0] != "serve":
        return None
    values: dict[str, str] = {}
    insecure: list[str] = []
    words = argv[1:]
    i = 0
    while i < len(words):
        flag, eq, value = words[i].partition("=")
        if not eq:
            if i + 1 >= len(words):
                return None
            value = words[i + 1]
            i += 1
        i += 1
        if flag == "--insecure-registry":
            insecure.append(value)
        elif flag in ("--socket", "--root", "--log-level") and flag not in values:
            values[flag] = value
        else:
            return None
    if "--socket" not in values or "--root" not in values:
        return None
    if values.get("--log-level", "info") not in _LOG_LEVELS:
        return None
    return ServeArgs(values["--socket"], values["--root"], insecure, values.get("--log-level", "info"))


def _parse_args(argv: list[str] | None) -> argparse.Namespace | ServeArgs:
    fast = _parse_serve_fast(sys.argv[1:] if argv is None else argv)
    if fast is not None:
        return fast
    import argparse

    parser = argparse.ArgumentParser(prog="dockyard-agent",
                                     description="Dockyard's Docker Engine API agent")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the Docker Engine API on a unix socket")
    serve.add_argument("--socket", required=True, help="unix socket path to listen on")
    serve.add_argument("--root", required=True, help="engine state directory")
    serve.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                       help="registry reached over plain HTTP (repeatable)")
    serve.add_argument("--log-level", default="info", choices=list(_LOG_LEVELS))
    return parser.parse_args(argv)


def prepare_socket_path(path: str | os.PathLike[str]) -> None:
    """Create the parent (0700) if missing; remove a stale socket; refuse a live one."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent and not os.path.exists(parent):
        os.makedirs(parent, mode=0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"dockyard-agent: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale socket %s", path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    finally:
        probe.close()
    raise SystemExit(f"dockyard-agent: another agent is already serving on {path}")


class StartupRouter:
    """Routes requests while the engine starts: a few engine-free routes at once, the rest
    (same router semantics: 404/405, HEAD falling back to GET) once the full API is set."""

    def __init__(self, early: Router) -> None:
        self._early = early
        self._full: Router | None = None
        self._failure = ""
        self._ready = threading.Event()

    def set_full(self, router: Router) -> None:
        self._full = router
        self._ready.set()

    def fail(self, message: str) -> None:
        """The engine could not start: waiting requests get a 500 with `message`."""
        self._failure = message
        self._ready.set()

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        handler, params, path_known = self._early.resolve(method, path)
        if handler is not None:
            return handler, params, path_known
        self._ready.wait()
        if self._full is None:
            return self._unavailable, {}, True
        return self._full.resolve(method, path)

    def _unavailable(self, request: Any) -> Any:
        from runtime.errors import RuntimeFailure
        raise RuntimeFailure(f"the engine failed to start: {self._failure}")


class _Waker:
    """Wakes the main thread from any thread, and on any signal (set_wakeup_fd).

    A signal is delivered to whichever thread does not block it; when that is not the main
    thread, a main thread asleep in Event.wait() only notices at its timeout (Python runs
    handlers in the main thread). Sleeping in select() on the wakeup fd avoids that.
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def wake(self) -> None:
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:
            pass   # a wake-up is pending anyway

    def sleep(self) -> None:
        select.select([self._r], [], [])
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self._r)
        os.close(self._w)


def _start_engine(args: argparse.Namespace | ServeArgs, router: StartupRouter, holder: dict[str, Any],
                  failed: threading.Event, waker: _Waker) -> None:
    """Background: import and make the engine, start it, then hand the full API to the router."""
    try:
        from pathlib import Path

        from runtime.engine.facade import Engine

        from .app import build_router

        engine = Engine(Path(args.root), insecure_registries=args.insecure_registry)
        holder["engine"] = engine
        engine.start(background=True)
        router.set_full(build_router(engine, str(args.root), args.insecure_registry))
        # As before the rework, an engine that cannot load its state ends the agent; a failed
        # network set-up does not (container starts report and retry it).
        engine.wait_recovered()
        log.info("engine state recovered")
        engine.wait_started()
        log.info("engine started")
    except BaseException as err:   # noqa: BLE001 - reported, then the agent exits 1
        log.exception("the engine failed to start")
        router.fail(str(err) or type(err).__name__)
        failed.set()
        waker.wake()


def serve(args: argparse.Namespace | ServeArgs) -> int:
    from .http_server import Router, UnixHTTPServer
    from .routes_system import register_startup_routes

    stop = threading.Event()
    failed = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            # A second signal while containers are being stopped: the user wants out now.
            log.warning("received %s again: exiting without waiting for containers", name)
            os._exit(1)
        log.info("received %s, shutting down", name)
        stop.set()

    waker = _Waker()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 <agent>` dumps every thread's stack to the log: the way to see a hang.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    prepare_socket_path(args.socket)
    os.makedirs(args.root, exist_ok=True)
    early = Router()
    register_startup_routes(early)
    router = StartupRouter(early)
    server = UnixHTTPServer(args.socket, router)
    # serve_forever runs in a thread so the main thread can wait for the signal and then
    # call shutdown(), which must not run on the serving thread.
    serving = threading.Thread(target=server.serve_forever, name="http-accept", daemon=True)
    serving.start()
    log.info("Dockyard agent serving the Docker API on unix://%s (root %s)", args.socket, args.root)
    holder: dict[str, Any] = {}
    starter = threading.Thread(target=_start_engine, args=(args, router, holder, failed, waker),
                               name="engine-start", daemon=True)
    starter.start()
    try:
        while not stop.is_set() and not failed.is_set():
            waker.sleep()
    finally:
        server.shutdown()
        server.server_close()
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass
        starter.join()   # an engine still being made is shut down like a started one
        engine = holder.get("engine")
        if engine is not None:
            log.info("stopping containers")
            engine.shutdown()
        log.info("stopped")
        waker.close()
    return 1 if failed.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
