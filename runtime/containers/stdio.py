"""Stdio plumbing for containers and execs: pipes or a pty, pumps, attach sessions.

A `StreamHub` belongs to one container (or one exec) for its whole life. Each run
gets fresh file descriptors (`prepare_run`); one pump thread per run reads the
process's output, appends it to the json-file log and hands it to every attached
session. A session attached before the run starts therefore sees every byte, and
its output ends only once the process's streams are drained.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import selectors
import stat
import struct
import termios
import threading
from collections.abc import Iterator

from .log_store import LogFile
from .spec import Stdio

log = logging.getLogger(__name__)

STDOUT = 1
STDERR = 2
_READ_SIZE = 64 * 1024


class AttachSession:
    """A live connection to a container's (or exec's) stdio.

    `output()` yields (stream, bytes) with stream 1 = stdout, 2 = stderr (TTY: all 1)
    until the process exits and every byte it wrote has been yielded, then stops.
    """

    def output(self) -> Iterator[tuple[int, bytes]]:
        raise NotImplementedError

    def write_stdin(self, data: bytes) -> None:
        raise NotImplementedError

    def close_stdin(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Detach (client went away); the process keeps running."""
        raise NotImplementedError


class HubSession(AttachSession):
    """An AttachSession fed by a StreamHub."""

    def __init__(self, hub: StreamHub, stdin: bool, stdout: bool, stderr: bool) -> None:
        self._hub = hub
        self.stdin = stdin
        self._streams = {STDOUT} if stdout else set()
        if stderr:
            self._streams.add(STDERR)
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()  # None: the end
        self._ended = False

    def _deliver(self, stream: int, data: bytes) -> None:
        if stream in self._streams:
            self._queue.put((stream, data))

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put(None)

    def output(self) -> Iterator[tuple[int, bytes]]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            yield item

    def write_stdin(self, data: bytes) -> None:
        if self.stdin:
            self._hub.write_stdin(data)

    def close_stdin(self) -> None:
        if self.stdin:
            self._hub.close_stdin()

    def close(self) -> None:
        self._hub.detach(self)
        self._end()


class _Run:
    """The file descriptors of one process run, parent side and child side."""

    def __init__(self, tty: bool, open_stdin: bool, size: tuple[int, int] | None,
                 ptmx: str | None = None, console: bool = False) -> None:
        self.tty = tty
        self.open_stdin = open_stdin
        self.child_fds: list[int] = []
        self.readers: dict[int, int] = {}      # parent fd → stream number
        self.stdin_fd: int | None = None       # parent's write side (the pty master with a TTY)
        self.master: int | None = None
        self.drained = threading.Event()
        self.thread: threading.Thread | None = None
        self.started = False                   # the process exists (stdin may be written)
        self.closed = False                    # the pump closed our descriptors
        # Written to when the engine gives up waiting for EOF (see StreamHub.wait_drained).
        self.wake_r, self.wake_w = os.pipe()
        self.console = tty and console         # the launcher makes the pty; see attach_console
        if self.console:
            # Only the container's setup runs on these; the pty master arrives at start.
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self.child_fds = [null]
            self.stdio = Stdio(null, null, null)
        elif tty:
            master, slave = open_pty(ptmx)
            self.master = master
            self.readers[master] = STDOUT
            self.stdin_fd = master if open_stdin else None
            self.child_fds = [slave]
            self.stdio = Stdio(slave, slave, slave)
            if size:
                set_winsize(slave, *size)
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self.readers = {out_r: STDOUT, err_r: STDERR}
            if open_stdin:
                in_r, in_w = os.pipe()
                self.stdin_fd = in_w
            else:
                in_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            self.child_fds = [in_r, out_w, err_w]
            self.stdio = Stdio(in_r, out_w, err_w)

    def attach_console(self, master: int) -> None:
        """The pty master the launcher made in the container: pump it, write stdin to it."""
        self.master = master
        self.readers[master] = STDOUT
        self.stdin_fd = master if self.open_stdin else None

    def close_child_side(self) -> None:
        for fd in self.child_fds:
            _close(fd)
        self.child_fds = []


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


# linux/tty.h: unlock a pty master; open its slave straight from the master (4.13+).
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441
_PTMX_DEVICE = os.makedev(5, 2)


def open_pty(ptmx: str | None = None) -> tuple[int, int]:
    """(master, slave) of a new pty, from the devpts instance of `ptmx` when given.

    A running container has its own devpts: a pty made there is /dev/pts/N inside it
    (ttyname works, as under Docker), one made on the host is nameless there.
    TIOCGPTPEER opens the slave without a path lookup in the container's tree, and the
    master must really be a ptmx device, so a container cannot redirect us elsewhere.
    """
    if ptmx:
        master = -1
        try:
            master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
            st = os.fstat(master)
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != _PTMX_DEVICE:
                raise OSError(f"{ptmx} is not a ptmx device")
            fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            return master, slave
        except OSError as err:
            log.debug("no pty from %s (%s); using a host pty", ptmx, err)
            if master >= 0:
                os.close(master)
    return os.openpty()


def set_winsize(fd: int, height: int, width: int) -> None:
    """TIOCSWINSZ; the kernel sends SIGWINCH to the terminal's foreground process group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class StreamHub:
    """All stdio of one container or exec: the current run, its log and attached sessions."""

    def __init__(self, tty: bool, open_stdin: bool, stdin_once: bool, log_file: LogFile | None) -> None:
        self.tty = tty
        self.open_stdin = open_stdin
        self.stdin_once = stdin_once
        self.log = log_file
        self._lock = threading.Lock()          # sessions, log appends, current run
        self._stdin_lock = threading.Lock()    # ordering of stdin writes
        self._sessions: list[HubSession] = []
        self._run: _Run | None = None
        self._pending_stdin = bytearray()
        self._pending_close = False
        self._size: tuple[int, int] | None = None
        self._size_lock = threading.Lock()     # the last resize wins, also against a new pty

    # sessions ----------------------------------------------------------------
    def attach(self, stdin: bool, stdout: bool, stderr: bool, logs: bool = False) -> HubSession:
        """A new session; with `logs` it first replays the json-file log."""
        session = HubSession(self, stdin and self.open_stdin, stdout, stderr)
        with self._lock:
            # Under the hub lock the pump cannot append, so replay + live is gap-free.
            if logs and self.log is not None:
                for rec in self.log.read(stdout=stdout, stderr=stderr):
                    session._deliver(STDOUT if rec.stream == "stdout" else STDERR, rec.data)
            self._sessions.append(session)
        return session

    def detach(self, session: HubSession) -> None:
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def end_sessions(self) -> None:
        """End every session now (container removed, or the run never happened)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s._end()

    # runs --------------------------------------------------------------------
    def prepare_run(self, ptmx: str | None = None, console: bool = False) -> Stdio:
        """Fresh descriptors for a process about to be launched; returns the child's side.

        `ptmx`: allocate the pty in that devpts (an exec's container) rather than the host's.
        `console` (with a TTY): the launcher allocates the pty itself, in the container's
        own devpts, and `run_started` gets its master; the Stdio is /dev/null until then.
        """
        run = _Run(self.tty, self.open_stdin, self._size, ptmx, console)
        with self._lock:
            self._run = run
        if self.log is not None:
            self.log.begin_run()
        if not run.console:
            # Pump from before the launch: a reader already blocked on both pipes keeps the
            # stdout/stderr interleaving closest to the order the process wrote in.
            self._start_pump(run)
        return run.stdio

    @property
    def size(self) -> tuple[int, int] | None:
        """The terminal size (rows, columns) a new pty gets, if one was chosen."""
        return self._size

    def _start_pump(self, run: _Run) -> None:
        run.thread = threading.Thread(target=self._pump, args=(run,), name="stdio-pump", daemon=True)
        run.thread.start()

    def run_started(self, console: int | None = None) -> None:
        """The process exists: drop our copies of its descriptors and start pumping.

        `console`: the pty master of a `prepare_run(console=True)` run (the hub owns it now).
        """
        run = self._run
        assert run is not None
        run.close_child_side()
        if run.console:
            if console is not None:
                with self._size_lock:
                    run.attach_console(console)
                    if self._size is not None:
                        # A resize that came while the process started (the same size is a no-op).
                        _set_winsize_quietly(console, *self._size)
            self._start_pump(run)
        with self._stdin_lock:
            run.started = True
            pending, self._pending_stdin = bytes(self._pending_stdin), bytearray()
            close = self._pending_close
            self._pending_close = False
        if pending or close:
            # A client may have typed before the start; a big backlog must not block start.
            threading.Thread(target=self._flush_pending, args=(pending, close), daemon=True).start()

    def run_failed(self) -> None:
        """The launch failed: close everything and end the sessions (docker run must return)."""
        run = self._run
        if run is not None:
            run.close_child_side()
            if run.thread is None:
                self._start_pump(run)   # nothing to read: it only cleans up
            # The pump owns the parent-side descriptors: wake it and let it close them.
            self._wake(run)
            run.drained.wait(5.0)
        with self._lock:
            self._run = None
        self.end_sessions()

    def fail_run(self, message: bytes) -> None:
        """The launch failed: attached sessions get `message` on stdout, then end (run_failed)."""
        self._fan_out(STDOUT, message)
        self.run_failed()

    def wait_drained(self, timeout: float) -> bool:
        """After the process exited: wait until its output is pumped; force the end otherwise.

        Only a process that escaped the container (keeping our pipe open) makes this time out.
        """
        run = self._run
        if run is None:
            return True
        if run.drained.wait(timeout):
            return True
        log.warning("output of a finished process did not drain within %.1fs; closing it", timeout)
        self._wake(run)
        return run.drained.wait(5.0)

    def _wake(self, run: _Run) -> None:
        """Make the pump stop now (under the stdin lock, so its fds cannot be closed meanwhile)."""
        with self._stdin_lock:
            if not run.closed:
                try:
                    os.write(run.wake_w, b"x")
                except OSError:
                    pass

    def _pump(self, run: _Run) -> None:
        sel = selectors.DefaultSelector()
        try:
            for fd in run.readers:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(run.wake_r, selectors.EVENT_READ)
            open_fds = set(run.readers)
            while open_fds:
                for key, _ in sel.select():
                    fd = key.fd
                    if fd == run.wake_r:
                        open_fds.clear()
                        break
                    try:
                        data = os.read(fd, _READ_SIZE)
                    except OSError:
                        data = b""    # EIO on the pty master: the last slave fd closed
                    if data:
                        self._fan_out(run.readers[fd], data)
                        continue
                    sel.unregister(fd)
                    open_fds.discard(fd)
        except (OSError, ValueError) as err:
            log.debug("stdio pump ended: %s", err)
        finally:
            sel.close()
            with self._stdin_lock:
                for fd in (*run.readers, run.wake_r, run.wake_w):
                    _close(fd)
                run.closed = True
                if run.stdin_fd is not None and run.stdin_fd not in run.readers:
                    _close(run.stdin_fd)
                run.stdin_fd = None
            with self._lock:
                if self._run is run:
                    self._run = None
                if self.log is not None:
                    self.log.end_run()
                sessions, self._sessions = self._sessions, []
            for s in sessions:
                s._end()
            run.drained.set()

    def _fan_out(self, stream: int, data: bytes) -> None:
        with self._lock:
            if self.log is not None:
                self.log.write("stdout" if stream == STDOUT else "stderr", data)
            for s in self._sessions:
                s._deliver(stream, data)

    # stdin ---------------------------------------------------------------------
    def write_stdin(self, data: bytes) -> None:
        """Forward to the process; before it starts, keep the bytes for it."""
        if not self.open_stdin or not data:
            return
        with self._stdin_lock:
            run = self._run
            if run is None or not run.started:
                self._pending_stdin += data
                return
            fd = run.stdin_fd
            if fd is None:
                return
            try:
                _write_all(fd, data)
            except OSError as err:     # the process closed its stdin or exited
                log.debug("stdin write dropped: %s", err)

    def close_stdin(self) -> None:
        """The client closed its stdin: with StdinOnce the process sees EOF (no pty: a pipe)."""
        if not self.stdin_once:
            return
        with self._stdin_lock:
            run = self._run
            if run is None or not run.started:
                self._pending_close = True
                return
            if run.stdin_fd is not None and not run.tty:
                _close(run.stdin_fd)
                run.stdin_fd = None

    def _flush_pending(self, pending: bytes, close: bool) -> None:
        if pending:
            self.write_stdin(pending)
        if close:
            self.close_stdin()

    # tty -------------------------------------------------------------------------
    def default_size(self, height: int, width: int) -> None:
        """The size a new pty gets unless a resize already chose one (HostConfig.ConsoleSize)."""
        if self._size is None and height > 0 and width > 0:
            self._size = (height, width)

    def resize(self, height: int, width: int) -> None:
        """Record the size for future runs and apply it to the current pty."""
        with self._size_lock:
            self._size = (height, width)
            run = self._run
            if run is not None and run.master is not None:
                _set_winsize_quietly(run.master, height, width)


def _set_winsize_quietly(fd: int, height: int, width: int) -> None:
    try:
        set_winsize(fd, height, width)
    except OSError as err:
        log.debug("resize of a closing pty ignored: %s", err)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
