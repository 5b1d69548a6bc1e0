"""Inspect and list hand out snapshots taken under the container's lock, never the live record."""

from __future__ import annotations

import threading

from runtime.models import Container
from tests.runtime.engine_helpers import start_background

CYCLES = 15


def _consistent(c: Container) -> bool:
    """Running ⇔ Pid > 0 ⇔ Status == "running" (these containers are never paused)."""
    st = c.state
    return st.running == (st.pid > 0) == (st.status == "running")


def test_a_snapshot_does_not_change_with_the_container(engine, busybox):
    cid = start_background(engine, busybox, ["sleep", "1000"], StopTimeout=0)
    inspected = engine.containers.inspect(cid)
    listed = next(c for c in engine.containers.list() if c.id == cid)
    engine.containers.stop(cid, timeout=0)
    engine.containers.rename(cid, f"renamed-{cid[:8]}")
    for snap in (inspected, listed):
        assert snap.state.running and snap.state.pid > 0 and snap.state.status == "running"
        assert snap.name != f"renamed-{cid[:8]}"
    # ... and changing a snapshot does not reach the container.
    inspected.state.running = True
    inspected.config["Labels"] = {"changed": "by the caller"}
    now = engine.containers.inspect(cid)
    assert not now.state.running and now.config.get("Labels") != {"changed": "by the caller"}
    engine.containers.remove(cid)


def test_every_inspect_and_list_is_consistent_while_the_container_starts_and_stops(engine, busybox):
    cid = start_background(engine, busybox, ["sleep", "1000"], StopTimeout=0)
    done = threading.Event()
    errors: list[BaseException] = []

    def cycle() -> None:
        try:
            for _ in range(CYCLES):
                engine.containers.stop(cid, timeout=0)
                engine.containers.start(cid)
        except BaseException as err:   # noqa: BLE001 - reported by the main thread
            errors.append(err)
        finally:
            done.set()

    cycler = threading.Thread(target=cycle, daemon=True)
    cycler.start()
    seen, bad = 0, []
    while not done.is_set():
        for c in [engine.containers.inspect(cid)] + [c for c in engine.containers.list(all=True)
                                                     if c.id == cid]:
            seen += 1
            if not _consistent(c):
                bad.append((c.state.running, c.state.pid, c.state.status))
    cycler.join()
    assert not errors, errors
    assert seen > 0
    assert not bad, f"{len(bad)} of {seen} reads were half-updated, e.g. {bad[:3]}"
    engine.containers.remove(cid, force=True)
