"""`docker rm`, `--rm`, `rename` and `container prune`."""

from __future__ import annotations

import logging
import signal as signal_mod

from ..containers.names import validate_container_name
from ..errors import Conflict, DockyardError, InvalidArgument, NotFound, RuntimeFailure
from .container_context import ContainerContext
from .container_stop import ContainerStopper
from .filters import created_before, label_ok
from .live import Live
from .processes import KILL_WAIT, signal_process

log = logging.getLogger(__name__)


class ContainerRemover:
    """Removes and renames containers.

    Lock discipline: `removing` is set under the container's `lock` (refusing a second
    remove and any start); the process is killed and awaited outside it; the registry
    entry, name and record go next, and `removed` is set under the lock at the end, waking
    every waiter. A rename reserves the new name (store lock) before changing the record
    under the container's lock.
    """

    def __init__(self, ctx: ContainerContext, stopper: ContainerStopper) -> None:
        self._ctx = ctx
        self._stopper = stopper

    def remove(self, live: Live, force: bool, remove_volumes: bool) -> None:
        ctx = self._ctx
        c = live.c
        with live.lock:
            live.changed.wait_for(lambda: not live.starting, KILL_WAIT)
            if live.removed:
                raise NotFound(f"No such container: {c.id}")
            if live.removing:
                raise Conflict(f"removal of container {c.id} is already in progress")
            running = c.state.running
            # Between two policy restarts the container is not running, but it will be:
            # dockerd counts it as running too.
            restarting = c.state.restarting or live.restart_timer is not None
            if (running or restarting) and not force:
                state = "paused" if c.state.paused else "running" if running else "restarting"
                procedure = "Stop the container before attempting removal or force remove"
                if state == "paused":
                    procedure = "Unpause and then stop the container before attempting removal or force remove"
                raise Conflict(f"You cannot remove a {state} container {c.id}. {procedure}")
            live.removing = True
            self._stopper.cancel_restart(live)
            live.stopped_by_user = True
            proc, seq = live.process, live.exit_seq
        try:
            if running and proc is not None:
                signal_process(proc, signal_mod.SIGKILL)
                self._stopper.thaw_if_paused(live)
                with live.changed:
                    if not live.changed.wait_for(lambda: live.exit_seq > seq, KILL_WAIT):
                        raise RuntimeFailure(f"container {c.id} did not exit after SIGKILL")
        except BaseException:
            with live.lock:
                live.removing = False
            raise
        ctx.networks.detach(c.id)
        ctx.networks.forget(c.id)
        ctx.registry.discard(c.id)
        ctx.execs.forget(c.id)
        ctx.store.release_name(c.name, c.id)
        ctx.store.delete(c.id)
        if remove_volumes:
            for m in c.mounts:
                if m.get("Type") == "volume":
                    ctx.volumes.remove_anonymous(m["Name"])
        with live.lock:
            live.removed = True
            c.state.status = "removing"
            live.changed.notify_all()
        live.hub.end_sessions()
        ctx.events.container(c, "destroy")

    def auto_remove(self, live: Live) -> None:
        """`--rm`: remove after the exit; runs on the exit watcher, so it logs, never raises."""
        try:
            self.remove(live, force=True, remove_volumes=True)
        except NotFound:
            pass
        except Exception as err:   # noqa: BLE001 - runs on the exit watcher: log, never die
            log.warning("auto-remove of %s failed: %s", live.c.name, err)

    def rename(self, live: Live, new_name: str) -> None:
        ctx = self._ctx
        c = live.c
        new = validate_container_name(new_name)
        if new == c.name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        ctx.store.reserve_name(new, c.id)
        with live.lock:
            old = c.name
            c.name = new
            try:
                ctx.store.save_config(c)
            except BaseException:
                c.name = old
                ctx.store.release_name(new, c.id)
                raise
        ctx.store.release_name(old, c.id)
        ctx.networks.rename(c.id, new)
        ctx.events.container(c, "rename", oldName="/" + old)

    def prune(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        ctx = self._ctx
        filters = {k: v for k, v in (filters or {}).items() if v}
        until = filters.pop("until", None)
        deleted: list[str] = []
        reclaimed = 0
        lives = sorted(ctx.registry.all(), key=lambda entry: entry.c.created, reverse=True)
        for live in lives:
            c = live.snapshot()
            if c.state.running or c.state.restarting:
                continue
            labels = c.config.get("Labels") or {}
            if not all(label_ok(labels, v) for v in filters.get("label", [])):
                continue
            if any(label_ok(labels, v) for v in filters.get("label!", [])):
                continue
            if until and not created_before(c.created, until[0]):
                continue
            size = ctx.rw_size(c)
            try:
                self.remove(live, force=False, remove_volumes=False)
            except DockyardError as err:
                log.info("prune skipped %s: %s", c.id[:12], err)
                continue
            deleted.append(c.id)
            reclaimed += size
        return deleted, reclaimed
