"""Docker's stdio stream framing and the pump between a hijacked connection and an attach session.

Without a TTY, output is multiplexed: each frame is an 8-byte header
(stream id, 3 zero bytes, big-endian length) and the payload. With a TTY it is raw.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from runtime.containers.detach_keys import DetachScanner
from runtime.containers.stdio import AttachSession

from .http_response import HijackedConnection

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR = 0, 1, 2


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame carrying `data` on `stream` (1 stdout, 2 stderr)."""
    return bytes((stream, 0, 0, 0)) + len(data).to_bytes(4, "big") + data


def encode_output(chunks: Iterable[tuple[int, bytes]], multiplexed: bool) -> Iterable[bytes]:
    for stream, data in chunks:
        if data:
            yield frame(stream, data) if multiplexed else data


def _forward_stdin(conn: HijackedConnection, session: AttachSession,
                   detach_keys: bytes | None, detached: threading.Event) -> None:
    """Client bytes → the process's stdin; the client's half-close (EOF) closes stdin.

    With `detach_keys`, that sequence ends the session instead: the process keeps running
    with its stdin open, and the connection closes (what dockerd does on a TTY).
    """
    scanner = DetachScanner(detach_keys) if detach_keys else None
    try:
        while True:
            data = conn.read()
            if not data:
                break
            if scanner is not None:
                data, detach = scanner.feed(data)
                if data:
                    session.write_stdin(data)
                if detach:
                    log.debug("attach session detached by its detach keys")
                    detached.set()
                    session.close()   # ends the output side, which closes the connection
                    return
                continue
            session.write_stdin(data)
    except Exception as err:  # the process may be gone; the output side finishes the session
        log.debug("stdin forwarding stopped: %s", err)
    try:
        session.close_stdin()
    except Exception as err:
        log.debug("close_stdin failed: %s", err)


def pump_session(conn: HijackedConnection, session: AttachSession, multiplexed: bool,
                 forward_stdin: bool, before_close: Callable[[], None] | None = None,
                 detach_keys: bytes | None = None) -> None:
    """Run a full-duplex attach until the process's output ends or the client leaves.

    `before_close` runs after the last output byte and before the connection closes:
    clients read the exit code right after the stream ends, so it must be final by then.
    It is skipped when the client detached (`detach_keys` typed): the process runs on.
    """
    detached = threading.Event()
    if forward_stdin:
        threading.Thread(target=_forward_stdin, args=(conn, session, detach_keys, detached),
                         name="attach-stdin", daemon=True).start()
    try:
        for chunk in encode_output(session.output(), multiplexed):
            conn.write(chunk)
    except OSError as err:
        log.debug("attach client went away: %s", err)
        session.close()
        return
    except Exception:
        log.exception("attach output failed")
        session.close()
        return
    if before_close is not None and not detached.is_set():
        try:
            before_close()
        except Exception as err:
            log.debug("before-close hook failed: %s", err)
    session.close()
