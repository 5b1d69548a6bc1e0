"""Helpers for the engine tests: start an engine, run and collect containers.

Their fixtures (`engine`, `busybox`) are in this folder's conftest.py.

The engine runs for real: images pulled from the session's test registry, the real
process launcher (namespaces, overlayfs, cgroups) and the real network manager.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from runtime.engine.facade import Engine


def make_engine(root: Path) -> Engine:
    engine = Engine(root)
    engine.start()
    return engine


def run(engine: Engine, image: str, cmd: list[str], host_config: dict | None = None,
        stdin: bytes | None = None, name: str | None = None, **config: Any) -> tuple[str, int, bytes, bytes]:
    """Like `docker run`: create, attach, wait (registered before start), start, collect.

    Returns (container id, exit code, stdout, stderr).
    """
    cfg = {"Image": image, "Cmd": cmd, **config}
    if stdin is not None:
        cfg.update(OpenStdin=True, StdinOnce=True, AttachStdin=True)
    hc = {"NetworkMode": "none", **(host_config or {})}
    c = engine.containers.create(name, cfg, hc)
    session = engine.containers.attach(c.id, stdin is not None, True, True)
    waiter = engine.containers.wait(c.id, "removed" if hc.get("AutoRemove") else "next-exit")
    engine.containers.start(c.id)
    if stdin is not None:
        session.write_stdin(stdin)
        session.close_stdin()
    out, err = bytearray(), bytearray()
    for stream, data in session.output():
        (out if stream == 1 else err).extend(data)
    code, _ = waiter.result(timeout=30)
    return c.id, code, bytes(out), bytes(err)


def start_background(engine: Engine, image: str, cmd: list[str], host_config: dict | None = None,
                     **config: Any) -> str:
    """Like `docker run -d`; returns the id once the container is running."""
    c = engine.containers.create(None, {"Image": image, "Cmd": cmd, **config},
                                {"NetworkMode": "none", **(host_config or {})})
    engine.containers.start(c.id)
    return c.id


def collect(iterator, into: list, done: threading.Event | None = None) -> threading.Thread:
    """Drain `iterator` into `into` on a thread (for follow/attach streams)."""
    def worker():
        for item in iterator:
            into.append(item)
        if done is not None:
            done.set()
    t = threading.Thread(target=worker, daemon=True)
    t.start()
    return t
