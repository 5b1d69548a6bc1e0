"""The engine's table of containers: lookup by id, prefix or name, gated on recovery."""

from __future__ import annotations

import threading

from ..containers.store import ContainerStore
from ..errors import InvalidArgument, NotFound, RuntimeFailure
from ..models import Container
from .live import Live


class ContainerRegistry:
    """Every known container's `Live`, and whether the last run's state is loaded yet.

    Lock discipline: `_lock` guards the `_containers` dict only (never held while taking a
    container's own lock, so the two never nest that way round). The name index has its
    own lock in the ContainerStore. `_recovered` is set while no recovery is pending.
    """

    def __init__(self, store: ContainerStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._containers: dict[str, Live] = {}
        self._recovered = threading.Event()
        self._recovered.set()
        self.recovery_error: BaseException | None = None

    # recovery ----------------------------------------------------------------
    def begin_recovery(self) -> None:
        self._recovered.clear()

    def end_recovery(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.recovery_error = error
        self._recovered.set()

    def wait_recovered(self, timeout: float | None = None) -> bool:
        return self._recovered.wait(timeout)

    def await_recovery(self) -> None:
        """Block until the containers of the last run are loaded and reconciled."""
        self._recovered.wait()
        if self.recovery_error is not None:
            raise RuntimeFailure(f"the engine could not load its state: {self.recovery_error}")

    # table -----------------------------------------------------------------
    def add(self, live: Live) -> None:
        with self._lock:
            self._containers[live.c.id] = live

    def discard(self, cid: str) -> None:
        with self._lock:
            self._containers.pop(cid, None)

    def all(self) -> list[Live]:
        """Every container (after recovery)."""
        self.await_recovery()
        with self._lock:
            return list(self._containers.values())

    def all_now(self) -> list[Live]:
        """Every container loaded so far, without waiting for recovery (shutdown)."""
        with self._lock:
            return list(self._containers.values())

    def get(self, cid: str) -> Live | None:
        """By full id, without waiting for recovery; None if unknown."""
        with self._lock:
            return self._containers.get(cid)

    def lookup(self, ref: str) -> Live:
        """By full id, unique id prefix, or name (with or without "/"). NotFound otherwise."""
        self.await_recovery()
        ref = ref or ""
        with self._lock:
            live = self._containers.get(ref)
            if live is not None:
                return live
        try:
            cid: str | None = self.store.lookup_name(ref)
        except NotFound:
            cid = None
        with self._lock:
            if cid is not None and cid in self._containers:
                return self._containers[cid]
            if ref:
                matches = [live for i, live in self._containers.items() if i.startswith(ref)]
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def record(self, ref: str) -> Container:
        """The live record (engine-internal reads of fields that never change, and tests)."""
        return self.lookup(ref).c

    def save_state(self, live: Live) -> None:
        """Record the state on disk; never raises for a full disk (the store retries later).

        The state in memory is the truth: waiters, `--rm` and restart policies act on it
        whether or not this write succeeded.
        """
        self.store.save_state(live.c, {"stopped_by_user": live.stopped_by_user})
