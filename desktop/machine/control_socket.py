"""The supervisor's control socket: `dockyard machine ssh` as a new channel on the live SSH link.

A new SSH connection costs the CLI ~1-2 s under TCG (TCP, key exchange,
authentication, in a slow guest); a session channel on the supervisor's
established transport costs a few milliseconds plus the command's own process
start. The CLI connects to this unix socket (0600, in the machine's 0700 run
directory) and sends one JSON line with its stdin, stdout and stderr
descriptors attached (SCM_RIGHTS), so the supervisor pumps the channel
straight to and from the CLI's own terminal or pipes:

    -> {"op": "exec", "command": "...", "tty": false, "term": "xterm", "cols": 80, "rows": 24}  + 3 fds
    -> {"op": "resize", "cols": 100, "rows": 30}          (any number, with a TTY)
    <- {"exit": 0}  or  {"error": "message"}

When the CLI goes away (its end of the socket closes), the channel is closed.
Descriptor passing needs a Unix host (Linux, macOS); elsewhere the CLI keeps
its own SSH connection (desktop.cli_machine_ssh).
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
from pathlib import Path
from typing import Any

from desktop.unix_listener import close_listener, owner_only_listener

log = logging.getLogger(__name__)

CHUNK = 65536
MAX_REQUEST = 256 * 1024


class ControlSocket:
    """Serves exec requests on `path` over `link` (a desktop.ssh_link.SshLink)."""

    def __init__(self, path: Path, link: Any) -> None:
        self.path = Path(path)
        self.link = link
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if not hasattr(socket, "recv_fds"):
            log.info("no descriptor passing on this host: `machine ssh` opens its own connection")
            return
        self.path.unlink(missing_ok=True)   # left by a supervisor that died: the lifecycle lock serialises us
        self._listener = owner_only_listener(self.path, 16)
        threading.Thread(target=self._accept_loop, name="control-accept", daemon=True).start()
        log.info("control socket %s", self.path)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            close_listener(self._listener)
            self._listener = None
        self.path.unlink(missing_ok=True)

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="control-exec", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 3)
            line, _, rest = data.partition(b"\n")
            request = json.loads(line)
            if request.get("op") != "exec" or len(fds) != 3:
                raise ValueError("expected an exec request with three descriptors")
            code = ExecSession(self.link, request, fds, conn, rest).run()
            fds = []   # the session closed them before answering
            _send(conn, {"exit": code})
        except Exception as err:  # noqa: BLE001 - told to the CLI, which prints it
            log.info("control request failed: %s", err)
            _send(conn, {"error": getattr(err, "message", None) or str(err) or type(err).__name__})
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


class ExecSession:
    """One command on a session channel, pumped to the CLI's descriptors; `run` returns its exit status."""

    def __init__(self, link: Any, request: dict[str, Any], fds: list[int], conn: socket.socket,
                 pending: bytes) -> None:
        self.link = link
        self.request = request
        self.stdin, self.stdout, self.stderr = fds
        self.conn = conn
        self.pending = pending
        self.tty = bool(request.get("tty"))
        self._wake_r, self._wake_w = os.pipe()   # ends the stdin and control readers

    def run(self) -> int:
        from desktop.ssh_link import close_channel

        chan = self.link.open_session()
        threads: list[threading.Thread] = []
        try:
            if self.tty:
                chan.get_pty(term=str(self.request.get("term") or "xterm"),
                             width=int(self.request.get("cols") or 80), height=int(self.request.get("rows") or 24))
            chan.exec_command(str(self.request["command"]))
            threads = [threading.Thread(target=self._stdin_to_channel, args=(chan,), daemon=True),
                       threading.Thread(target=self._control, args=(chan,), daemon=True)]
            if not self.tty:
                threads.append(threading.Thread(target=self._copy, args=(chan.recv_stderr, self.stderr), daemon=True))
            for thread in threads:
                thread.start()
            self._copy(chan.recv, self.stdout)
            if threads[2:]:
                threads[2].join()
            code = chan.recv_exit_status()
            return code if code >= 0 else 255
        finally:
            os.write(self._wake_w, b"x")
            close_channel(chan)
            for thread in threads[:2]:
                thread.join(5)
            for fd in (self.stdin, self.stdout, self.stderr, self._wake_r, self._wake_w):
                os.close(fd)

    @staticmethod
    def _copy(recv: Any, fd: int) -> None:
        writing = True
        try:
            while data := recv(CHUNK):
                view = memoryview(data)
                while writing and view:
                    try:
                        view = view[os.write(fd, view):]
                    except OSError as exc:
                        # The reader went away (EPIPE): drop the rest, as ssh does, but keep
                        # draining so the command is not stalled on a full window.
                        log.debug("output copy stopped: %s", exc)
                        writing = False
        except (OSError, EOFError) as exc:
            log.debug("channel read ended: %s", exc)

    def _stdin_to_channel(self, chan: Any) -> None:
        # select, never a blocking read: after the command ends, a read left waiting on the
        # user's terminal would steal the next keystroke from their shell.
        try:
            while True:
                ready, _, _ = select.select([self.stdin, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                data = os.read(self.stdin, CHUNK)
                if not data:
                    chan.shutdown_write()
                    return
                chan.sendall(data)
        except (OSError, EOFError) as exc:
            log.debug("stdin copy ended: %s", exc)

    def _control(self, chan: Any) -> None:
        """Resize requests from the CLI; its end closing means it is gone: close the channel."""
        buf = self.pending
        try:
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    message = json.loads(line)
                    if message.get("op") == "resize" and self.tty:
                        chan.resize_pty(width=int(message["cols"]), height=int(message["rows"]))
                ready, _, _ = select.select([self.conn.fileno(), self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                data = self.conn.recv(4096)
                if not data:
                    chan.close()
                    return
                buf += data
        except (OSError, EOFError, ValueError) as exc:
            log.debug("control reader ended: %s", exc)
