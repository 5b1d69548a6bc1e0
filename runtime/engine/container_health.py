"""Health checks: the engine's side of `runtime.containers.health` (probes run as execs)."""

from __future__ import annotations

import os
import signal as signal_mod
from typing import Any

from ..containers import health as container_health
from ..errors import RuntimeFailure
from .events import EventService
from .execs import ExecService
from .live import Live
from .processes import KILL_WAIT
from .registry import ContainerRegistry


class HealthService:
    """Starts, pauses and ends a container's probes, runs each probe, records its result.

    Lock discipline: the HealthMonitor has its own lock and threads. `on_start`,
    `on_resume` and `on_stop` are called with the container's `lock` held (they change
    State.Health with the rest of the state); a probe's report takes that lock itself.
    """

    def __init__(self, registry: ContainerRegistry, events: EventService, execs: ExecService) -> None:
        self._registry = registry
        self._events = events
        self._execs = execs
        self.monitor = container_health.HealthMonitor(self._run_probe, self._report)

    def on_start(self, live: Live) -> None:
        """A (re)started container with a probe is "starting" again and probed (caller holds live.lock)."""
        c = live.c
        settings = container_health.HealthSettings.from_config(c.config)
        if settings is None:
            self.monitor.unwatch(c.id)
            return
        c.state.health = container_health.initial_health(c.state.health)
        self.monitor.watch(c.id, settings, c.state.health)

    def on_pause(self, live: Live) -> None:
        self.monitor.unwatch(live.c.id)   # as dockerd: no probes while frozen

    def on_resume(self, live: Live) -> None:
        settings = container_health.HealthSettings.from_config(live.c.config)
        if settings is not None and live.c.state.health is not None and live.c.state.running:
            self.monitor.resume(live.c.id, settings, live.c.state.health, live.started_mono)

    def on_stop(self, live: Live) -> None:
        """Probes end with the container; as dockerd, a stopped container's health reads "unhealthy"."""
        self.monitor.unwatch(live.c.id)
        if live.c.state.health is not None:
            live.c.state.health = {**live.c.state.health, "Status": container_health.UNHEALTHY}

    def close(self) -> None:
        self.monitor.close()

    def _report(self, container_id: str, health: dict[str, Any], new_status: str | None) -> None:
        live = self._registry.get(container_id)
        if live is None:
            return
        with live.lock:
            if not live.c.state.running or live.removed:
                return   # a result that raced with the exit: the stop already set the status
            if new_status is not None:
                # Published before anyone can observe the new status (publish never blocks).
                self._events.container(live.c, f"health_status: {new_status}")
            live.c.state.health = health
            self._registry.save_state(live)

    def _run_probe(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, bytes]:
        """One probe as dockerd runs it: an exec as the container's user, stdout and stderr
        together; TimeoutError (after killing it) when it overruns. Its exec record goes at
        once (dockerd lists no probe in ExecIDs)."""
        inst = self._execs.create(container_id, argv)
        try:
            session = self._execs.start(inst.id)
            if session is None or self._execs.wait(inst.id, timeout) is None:
                if inst.pid:
                    try:
                        os.kill(inst.pid, signal_mod.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._execs.wait(inst.id, KILL_WAIT)
                raise TimeoutError(argv)
            out = bytearray()
            for _, data in session.output():
                if len(out) < container_health.MAX_OUTPUT_LEN:
                    out += data
            if not inst.pid:
                # It never started: dockerd records the runtime's error, exit code -1.
                raise RuntimeFailure(out.decode("utf-8", "replace").rstrip("\r\n"))
            return inst.exit_code if inst.exit_code is not None else -1, bytes(out)
        finally:
            self._execs.discard(inst)
