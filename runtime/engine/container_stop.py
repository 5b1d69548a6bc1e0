"""`docker stop`, `kill`, `pause` and `unpause`: signals and the cgroup freezer."""

from __future__ import annotations

import logging
import signal as signal_mod

from ..containers import config as cc
from ..errors import Conflict, DockyardError, NotModified, RuntimeFailure
from ..models import Container
from .container_context import ContainerContext
from .live import Live
from .processes import DEFAULT_STOP_TIMEOUT, KILL_WAIT, signal_process

log = logging.getLogger(__name__)


class ContainerStopper:
    """Stops, kills, pauses and unpauses containers; cancels pending policy restarts.

    Lock discipline: decisions (is it running, which process, cancel a restart) are taken
    under the container's `lock`; signals are sent and exits awaited outside it, on the
    `changed` condition, by the exit sequence number read under the lock.
    """

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx

    def stop_timeout(self, live: Live, timeout: int | None) -> float:
        if timeout is None:
            timeout = live.c.config.get("StopTimeout")
        if timeout is None:
            timeout = DEFAULT_STOP_TIMEOUT
        return float(timeout)

    def stop(self, live: Live, timeout: float, signal: str | None, by_user: bool) -> None:
        """StopSignal (default SIGTERM), wait `timeout`, then SIGKILL."""
        ctx = self._ctx
        c = live.c
        sig = cc.parse_signal(signal or c.config.get("StopSignal") or None)
        with live.lock:
            # A start in progress finishes in milliseconds; stop what it started.
            live.changed.wait_for(lambda: not live.starting, KILL_WAIT)
            if by_user:
                cancelled = self.cancel_restart(live)
                live.stopped_by_user = True
                if cancelled:
                    ctx.save_state(live)
                    live.changed.notify_all()
                    ctx.events.container(c, "stop")
                    return
            if not c.state.running:
                raise NotModified(f"container {c.id} is not running")
            proc, seq = live.process, live.exit_seq
        signal_process(proc, sig)
        self.thaw_if_paused(live)
        ctx.events.container(c, "kill", signal=sig)
        with live.changed:
            exited = live.changed.wait_for(lambda: live.exit_seq > seq, timeout if timeout >= 0 else None)
        if not exited:
            log.info("container %s did not stop within %.0fs; killing it", c.id[:12], timeout)
            signal_process(proc, signal_mod.SIGKILL)
            ctx.events.container(c, "kill", signal=int(signal_mod.SIGKILL))
            with live.changed:
                if not live.changed.wait_for(lambda: live.exit_seq > seq, KILL_WAIT):
                    raise RuntimeFailure(f"container {c.id} did not exit after SIGKILL")
        ctx.events.container(c, "stop")

    def cancel_restart(self, live: Live) -> bool:
        """Cancel a pending policy restart (caller holds live.lock); True if there was one."""
        if live.restart_timer is None and not live.c.state.restarting:
            return False
        if live.restart_timer is not None:
            live.restart_timer.cancel()
            live.restart_timer = None
        st = live.c.state
        st.status, st.restarting = "exited", False
        return True

    def kill(self, live: Live, signal: str = "SIGKILL") -> None:
        ctx = self._ctx
        c = live.c
        sig = cc.parse_signal(signal or "SIGKILL")
        with live.lock:
            if sig == signal_mod.SIGKILL:
                cancelled = self.cancel_restart(live)
                if cancelled:
                    live.stopped_by_user = True
                    ctx.save_state(live)
                    live.changed.notify_all()
                    return
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if sig == signal_mod.SIGKILL:
                live.stopped_by_user = True
            proc, seq = live.process, live.exit_seq
        signal_process(proc, sig)
        self.thaw_if_paused(live)
        ctx.events.container(c, "kill", signal=sig)
        if sig == signal_mod.SIGKILL:
            # Like dockerd: `docker kill` returns once the container is really gone.
            with live.changed:
                live.changed.wait_for(lambda: live.exit_seq > seq, KILL_WAIT)

    def pause(self, live: Live) -> None:
        """Freeze every process of the container (cgroup freezer)."""
        c = live.c
        with live.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is already paused")
            _set_frozen(c, True)
            c.state.paused, c.state.status = True, "paused"
            self._ctx.health.on_pause(live)
            self._ctx.save_state(live)
        self._ctx.events.container(c, "pause")

    def unpause(self, live: Live) -> None:
        c = live.c
        with live.lock:
            if not c.state.paused:
                raise Conflict(f"Container {c.id} is not paused")
            _set_frozen(c, False)
            c.state.paused = False
            c.state.status = "running" if c.state.running else c.state.status
            self._ctx.health.on_resume(live)
            self._ctx.save_state(live)
        self._ctx.events.container(c, "unpause")

    def thaw_if_paused(self, live: Live) -> None:
        """Signals reach frozen processes only once they are thawed (dockerd does the same)."""
        with live.lock:
            if not live.c.state.paused:
                return
            try:
                _set_frozen(live.c, False)
            except DockyardError as err:
                log.warning("thawing %s failed: %s", live.c.id[:12], err)
            live.c.state.paused = False
            live.c.state.status = "running" if live.c.state.running else live.c.state.status


def _set_frozen(c: Container, frozen: bool) -> None:
    from ..linux import cgroups
    cgroups.set_frozen(cgroups.container_cgroup(c.id), frozen)
