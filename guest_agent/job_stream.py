"""Long jobs (pull, push, load, build) answered as a stream of JSON lines, as dockerd does.

The job runs on a thread and emits messages; the HTTP answer starts with the first one.
An error before it is raised in the request's own thread (a plain error status, as
dockerd answers then); a later one ends the stream with an `errorDetail` line.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .api_errors import error_response_for, stream_error
from .http_response import StreamResponse

Emit = Callable[[dict[str, Any]], None]
_DONE = object()


def job_stream(what: str, job: Callable[[Emit], Any],
               last_lines: Callable[[Any], list[dict[str, Any]]] | None = None,
               error_line: Callable[[BaseException, dict[str, Any]], dict[str, Any]] | None = None,
               ) -> StreamResponse:
    """Run `job(emit)` and stream what it emits. `last_lines(result)` adds lines after a
    success; `error_line(err, line)` may amend the error line dockerd-style."""
    messages: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = job(messages.put)
        except BaseException as err:  # reported to the client, in the stream or as a status
            outcome["error"] = err
        finally:
            messages.put(_DONE)

    threading.Thread(target=run, name=what, daemon=True).start()
    first = messages.get()
    if first is _DONE and "error" in outcome:
        raise outcome["error"]

    def stream() -> Iterator[bytes]:
        item = first
        while item is not _DONE:
            yield json.dumps(item).encode() + b"\r\n"
            item = messages.get()
        if "error" in outcome:
            _, message = error_response_for(outcome["error"], what)
            line = stream_error(message)
            if error_line is not None:
                line = error_line(outcome["error"], line)
            yield json.dumps(line).encode() + b"\r\n"
        elif last_lines is not None:
            for line in last_lines(outcome.get("result")):
                yield json.dumps(line).encode() + b"\r\n"

    return StreamResponse(chunks=stream())
