"""An interactive exec with a TTY in a container, as `docker exec -it CONTAINER sh` opens it.

The dashboard's terminal runs on this; it has no Qt in it. One `ExecSession` is one
process in the container with a pseudo-terminal: `start()` creates and starts the
exec through docker-py and hands back at once; a reader thread delivers the raw
terminal output to a callback, and a writer thread sends keystrokes and window
sizes in the order they were given, so neither ever blocks the caller (the UI
thread). When the process ends, its exit code is read from the engine and given to
`on_exit`; a failure at any step goes to `on_error` as a sentence a user can act on.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_COMMAND: tuple[str, ...] = ("sh",)
# What `docker exec -it` gives a TTY exec; the terminal widget emulates xterm's 256 colours.
TERM = "xterm-256color"
READ_SIZE = 65536
# How long to wait, once the output ended, for the engine to record the exit code.
EXIT_CODE_WAIT = 10.0


@dataclass(frozen=True)
class _Resize:
    rows: int
    cols: int


_CLOSE = object()   # the writer thread's stop marker


class ExecSession:
    """One `exec` with Tty and stdin in a running container, driven from any thread.

    `client` is a docker-py `DockerClient` (or its low-level `APIClient`). Callbacks run
    on the session's own threads: a UI must hand them over to its own thread.
    """

    def __init__(self, client: Any, container: str, command: Sequence[str] = DEFAULT_COMMAND, *,
                 on_output: Callable[[bytes], None],
                 on_exit: Callable[[int | None], None] = lambda code: None,
                 on_error: Callable[[str], None] = lambda message: None,
                 size: tuple[int, int] = (24, 80), user: str = "", workdir: str | None = None,
                 env: Sequence[str] = ()) -> None:
        self.api = getattr(client, "api", client)
        self.container = container
        self.command = list(command) or list(DEFAULT_COMMAND)
        self.user, self.workdir = user, workdir
        self.env = [f"TERM={TERM}", *env]
        self._on_output, self._on_exit, self._on_error = on_output, on_exit, on_error
        self._size = size
        self._sent_size: tuple[int, int] | None = None
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._raw: Any = None               # docker-py's hijacked stream (holds the HTTP response)
        self._sock: Any = None              # what we write to: the hijacked socket
        self._reader: Any = None            # what we read from: its buffered reader
        self._threads: list[threading.Thread] = []
        self.exec_id: str | None = None
        self.exit_code: int | None = None
        self.finished = threading.Event()   # set once on_exit or on_error has been called

    # The caller's side: all of these return at once.

    def start(self) -> None:
        """Open the exec on a background thread (output, exit and errors go to the callbacks)."""
        thread = threading.Thread(target=self._run, name=f"exec-{self.container[:12]}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def write(self, data: bytes) -> None:
        """Send bytes to the process's terminal (keystrokes, pasted text)."""
        if data and not self._closing.is_set():
            self._outbox.put(bytes(data))

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size; only the latest size is sent when several queue up."""
        if rows > 0 and cols > 0:
            self._size = (rows, cols)
            self._outbox.put(_Resize(rows, cols))

    def close(self) -> None:
        """Disconnect (as `docker exec -it` does when its terminal goes away); no callback follows.

        The engine has no call to kill an exec: a shell still running stays in the
        container, as it does with dockerd, until it exits or the container stops.
        """
        if self._closing.is_set():
            return
        self._closing.set()
        self._outbox.put(_CLOSE)
        sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the session's threads to end; True if they all did."""
        for thread in list(self._threads):
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        return self._sock is not None and not self.finished.is_set() and not self._closing.is_set()

    # The session's threads.

    def _run(self) -> None:
        try:
            self._open()
        except Exception as err:  # noqa: BLE001 - every failure becomes the user's message
            self._fail(describe_error(err, self.container))
            return
        writer = threading.Thread(target=self._write_loop, name="exec-stdin", daemon=True)
        self._threads.append(writer)
        writer.start()
        self._read_loop()

    def _open(self) -> None:
        created = self.api.exec_create(self.container, self.command, stdin=True, tty=True,
                                       user=self.user, environment=self.env, workdir=self.workdir)
        self.exec_id = created["Id"]
        self._raw = raw = self.api.exec_start(self.exec_id, socket=True, tty=True)
        self._sock = getattr(raw, "_sock", raw)
        # The HTTP parser may already hold the first output bytes (the prompt) in its
        # buffer after the 101 headers: read through that buffer, not the bare socket.
        response = getattr(raw, "_response", None)
        self._reader = response.raw._fp.fp if response is not None else raw
        if hasattr(self._sock, "settimeout"):
            self._sock.settimeout(None)
        if self._closing.is_set():
            _shutdown(self._sock)
        self._outbox.put(_Resize(*self._size))

    def _read_loop(self) -> None:
        read = getattr(self._reader, "read1", None) or self._reader.read
        while True:
            try:
                data = read(READ_SIZE)
            except (OSError, ValueError) as err:   # ValueError: read on a closed file
                if not self._closing.is_set():
                    log.debug("exec output ended with %s", err)
                data = b""
            if not data:
                break
            if not self._closing.is_set():
                self._on_output(data)
        self._outbox.put(_CLOSE)
        if self._closing.is_set():
            return
        try:
            self.exit_code = self._wait_exit_code()
        except Exception as err:  # noqa: BLE001 - the engine went away after the process ended
            self._fail(describe_error(err, self.container))
            return
        self.finished.set()
        self._on_exit(self.exit_code)

    def _wait_exit_code(self) -> int | None:
        # The engine records the exit code before it closes the stream; a client that
        # reads it at once may still, with another engine, see Running: ask again briefly.
        deadline = time.monotonic() + EXIT_CODE_WAIT
        while True:
            info = self.api.exec_inspect(self.exec_id)
            if not info.get("Running") or time.monotonic() > deadline or self._closing.wait(0.05):
                return info.get("ExitCode")

    def _write_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is _CLOSE or self._closing.is_set():
                return
            try:
                if isinstance(item, _Resize):
                    self._send_size()
                else:
                    self._sock.sendall(item)
            except Exception as err:  # noqa: BLE001 - the reader reports the end of the session
                log.debug("exec input stopped: %s", err)
                if isinstance(err, OSError):
                    return

    def _send_size(self) -> None:
        size = self._size
        if size != self._sent_size:
            self.api.exec_resize(self.exec_id, height=size[0], width=size[1])
            self._sent_size = size

    def _fail(self, message: str) -> None:
        log.info("terminal in %s: %s", self.container[:12], message)
        self.finished.set()
        if not self._closing.is_set():
            self._on_error(message)


def _shutdown(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass
    try:
        sock.close()
    except OSError:
        pass


def describe_error(err: BaseException, container: str = "") -> str:
    """A sentence that says what went wrong and what to do, for an exec that failed."""
    import docker.errors
    import requests.exceptions

    full_id = len(container) == 64 and all(c in "0123456789abcdef" for c in container)
    name = (container[:12] if full_id else container) or "the container"
    if isinstance(err, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        return ("Cannot reach the Dockyard engine: it is not running or not answering. "
                "Start the machine (tray menu: Start), then open the terminal again.")
    if isinstance(err, requests.exceptions.Timeout | TimeoutError | socket.timeout):
        return "The Dockyard engine did not answer in time. Check the machine, then try again."
    if isinstance(err, docker.errors.NotFound):
        return f"Container {name} was not found: it may have been removed. Refresh the list."
    if isinstance(err, docker.errors.APIError):
        detail = (err.explanation or str(err)).strip()
        if err.status_code == 409:
            return f"Container {name} is not running: start it, then open the terminal again. ({detail})"
        return f"The engine refused to open a terminal in {name}: {detail}"
    if isinstance(err, docker.errors.DockerException):
        return f"Could not talk to the Dockyard engine: {err}"
    return f"The terminal failed: {err}"
