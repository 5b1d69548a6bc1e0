"""Container records on disk: <root>/containers/<id>/config.json and state.json.

config.json changes rarely (create, rename, network), state.json at every state
transition; both are written atomically, so a crash leaves the old or the new record.
The names index lives here too, because a name must be unique across all records.

A state write that fails (full disk, read-only file system, no descriptors) does not
fail the transition: the in-memory state is the truth, and the record is marked
pending. Pending records are written by the next state write that succeeds, or by
a retry thread that tries every RETRY_INTERVAL seconds while any are pending, so
after space is freed the records catch up without a restart.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from ..atomic_file import read_json, write_json_atomic
from ..errors import Conflict, NotFound, describe_os_error
from ..models import Container, ContainerState, NetworkAttachment, PortMapping

log = logging.getLogger(__name__)

RETRY_INTERVAL = 5.0   # seconds between retries of pending state writes


def _state_from_json(obj: dict[str, Any]) -> ContainerState:
    names = {f.name for f in dataclasses.fields(ContainerState)}
    return ContainerState(**{k: v for k, v in obj.items() if k in names})


def _network_from_json(obj: dict[str, Any] | None) -> NetworkAttachment | None:
    if not obj:
        return None
    obj = dict(obj)
    obj["ports"] = [PortMapping(**p) for p in obj.get("ports") or []]
    names = {f.name for f in dataclasses.fields(NetworkAttachment)}
    return NetworkAttachment(**{k: v for k, v in obj.items() if k in names})


class ContainerStore:
    """Reads and writes container records and keeps the name → id index."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.names_lock = threading.Lock()
        self._names: dict[str, str] = {}
        # Pending state writes: id -> (container, extra, generation); guarded by _pending_lock.
        self._pending: dict[str, tuple[Container, dict[str, Any], int]] = {}
        self._generation = 0
        self._pending_lock = threading.Lock()
        self._retry_wake = threading.Event()
        self._retry_thread: threading.Thread | None = None
        # One lock per record, so a retry never writes an older state over a newer one.
        self._write_locks: dict[str, threading.Lock] = {}

    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    # persistence -----------------------------------------------------------
    def save_config(self, c: Container) -> None:
        """Everything but the state (and the per-run network attachment)."""
        record = dataclasses.asdict(c)
        record.pop("state")
        record.pop("network")
        write_json_atomic(self.dir(c.id) / "config.json", record)

    def save_state(self, c: Container, extra: dict[str, Any] | None = None) -> bool:
        """State, restart count and network attachment: the fields that change per run.

        Never raises for an OS error: the record is then pending (see the module doc)
        and False is returned. A success also writes every other pending record.
        """
        extra = dict(extra or {})
        try:
            self._write_state(c, extra)
        except FileNotFoundError:
            return False   # the record directory is gone: the container is being removed
        except OSError as err:
            self._defer(c, extra, err)
            return False
        with self._pending_lock:
            self._pending.pop(c.id, None)
            others = bool(self._pending)
        if others:
            self.flush_pending()
        return True

    def _write_state(self, c: Container, extra: dict[str, Any]) -> None:
        with self._write_lock(c.id):
            # Serialised under the record's lock: the last write holds the newest state.
            record = {"state": dataclasses.asdict(c.state), "restart_count": c.restart_count,
                      "network": dataclasses.asdict(c.network) if c.network else None}
            record.update(extra)
            write_json_atomic(self.dir(c.id) / "state.json", record)

    def _write_lock(self, container_id: str) -> threading.Lock:
        with self._pending_lock:
            lock = self._write_locks.get(container_id)
            if lock is None:
                lock = self._write_locks[container_id] = threading.Lock()
            return lock

    def _defer(self, c: Container, extra: dict[str, Any], err: OSError) -> None:
        with self._pending_lock:
            first = c.id not in self._pending
            self._generation += 1
            self._pending[c.id] = (c, extra, self._generation)
            if self._retry_thread is None:
                self._retry_thread = threading.Thread(target=self._retry_loop,
                                                      name="state-retry", daemon=True)
                self._retry_thread.start()
        if first:
            log.warning("cannot record the state of container %s (%s); kept in memory, "
                        "retrying every %.0fs", c.id[:12], describe_os_error(err), RETRY_INTERVAL)

    def pending(self) -> list[str]:
        """Ids of containers whose state on disk is behind the state in memory."""
        with self._pending_lock:
            return list(self._pending)

    def flush_pending(self) -> bool:
        """Try every pending state write once; True when none is left pending."""
        with self._pending_lock:
            items = list(self._pending.items())
        for cid, (c, extra, generation) in items:
            try:
                self._write_state(c, extra)
                written = True
            except FileNotFoundError:
                written = False   # the record was removed meanwhile: nothing to catch up
            except OSError:
                return False      # still failing: keep the rest for the next try
            with self._pending_lock:
                # A newer failure since we read the entry stays pending.
                if cid in self._pending and self._pending[cid][2] == generation:
                    del self._pending[cid]
            if written:
                log.info("state of container %s written after an earlier failure", cid[:12])
        with self._pending_lock:
            return not self._pending

    def _retry_loop(self) -> None:
        """Retries pending writes every RETRY_INTERVAL seconds; ends when none is pending."""
        while True:
            self._retry_wake.wait(RETRY_INTERVAL)
            self._retry_wake.clear()
            done = self.flush_pending()
            with self._pending_lock:
                if done and not self._pending:
                    self._retry_thread = None
                    return

    def load_all(self) -> list[tuple[Container, dict[str, Any]]]:
        """Every record that can be read, with the extra state fields; indexes names."""
        result = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".removing-"):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                cfg = read_json(entry / "config.json")
                state = read_json(entry / "state.json", {}) or {}
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable container record %s: %s", entry.name, err)
                continue
            if not isinstance(cfg, dict) or not isinstance(state, dict):
                continue
            try:
                names = {f.name for f in dataclasses.fields(Container)}
                c = Container(**{k: v for k, v in cfg.items() if k in names and k not in ("state", "network")})
                c.state = _state_from_json(state.get("state") or {})
                c.restart_count = int(state.get("restart_count") or 0)
                c.network = _network_from_json(state.get("network"))
            except (TypeError, ValueError) as err:
                log.warning("skipping unreadable container record %s: %s", entry.name, err)
                continue
            extra = {k: v for k, v in state.items() if k not in ("state", "restart_count", "network")}
            result.append((c, extra))
            with self.names_lock:
                self._names[c.name] = c.id
        return result

    def delete(self, container_id: str) -> None:
        """Remove the record directory (rename first: a crash never leaves half a record).

        The rename is the removal; the tree (the container's writable layer,
        logs) is deleted by a background thread, because `docker run --rm`
        waits for the removal and a large upper layer can take a while. A
        tree left by a crash is swept by `load_all` at the next start.
        """
        with self._pending_lock:
            self._pending.pop(container_id, None)
            self._write_locks.pop(container_id, None)
        d = self.dir(container_id)
        doomed = self.root / f".removing-{container_id}"
        try:
            os.rename(d, doomed)
        except FileNotFoundError:
            return
        except OSError as err:
            # A rename can need a directory block on a full disk: delete in place
            # (which is what frees the space), so the removal still happens.
            log.warning("removing container record %s in place: %s", container_id[:12],
                        describe_os_error(err))
            shutil.rmtree(d, ignore_errors=True)
            return
        threading.Thread(target=shutil.rmtree, args=(doomed,), kwargs={"ignore_errors": True},
                         name=f"rm-{container_id[:12]}", daemon=True).start()

    # names -----------------------------------------------------------------
    def reserve_name(self, name: str, container_id: str) -> None:
        """Claim `name` for `container_id`; Conflict with Docker's message if it is taken."""
        with self.names_lock:
            owner = self._names.get(name)
            if owner is not None and owner != container_id:
                raise Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                               f'"{owner}". You have to remove (or rename) that container to be able '
                               f"to reuse that name.")
            self._names[name] = container_id

    def release_name(self, name: str, container_id: str) -> None:
        with self.names_lock:
            if self._names.get(name) == container_id:
                del self._names[name]

    def name_taken(self, name: str) -> bool:
        with self.names_lock:
            return name in self._names

    def lookup_name(self, name: str) -> str:
        with self.names_lock:
            cid = self._names.get(name.lstrip("/"))
        if cid is None:
            raise NotFound(f"No such container: {name}")
        return cid
