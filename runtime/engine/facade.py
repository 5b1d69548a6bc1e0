"""The Engine facade: one engine per root directory, its services, start-up and shutdown.

The guest agent's API layer calls the services through it (`engine.containers.inspect(ref)`,
`engine.images.pull(...)`, ...). Inputs that mirror the Docker Engine API take Docker's own
JSON shapes (dicts); outputs are the dataclasses in `runtime.models`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from ..containers.restart_policy import RestartPolicy
from ..containers.store import ContainerStore
from ..errors import DockyardError
from ..images.store import ImageStore
from ..models import Container
from ..timestamps import now_rfc3339
from ..volumes.store import VolumeStore
from .builds import BuildService
from .container_context import ContainerContext
from .container_health import HealthService
from .containers import ContainerService
from .events import EventService
from .execs import ExecService
from .images import ImageService
from .live import Live
from .networks import NetworkService
from .processes import KILL_WAIT, SHUTDOWN_STOP_CAP, launcher
from .registry import ContainerRegistry
from .system import SystemService
from .volumes import VolumeService

log = logging.getLogger(__name__)


class Engine:
    """One engine per root directory: <root>/images, containers, volumes, network.

    Services: `containers`, `execs`, `images`, `volumes`, `networks`, `events`, `system`
    (each documents its own locks); `registry` is the table of containers they share.
    The facade itself only sequences start-up (network set-up, state recovery) and shutdown.
    """

    def __init__(self, root: Path, insecure_registries: list[str] | None = None,
                 network: Any = None) -> None:
        """`network` may be given to share or replace the NetworkManager (tests, bench)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.id = self._engine_id()
        if network is None:
            from ..network.manager import NetworkManager
            network = NetworkManager(self.root / "network")
        self.store = ContainerStore(self.root / "containers")
        self.registry = ContainerRegistry(self.store)
        self.events = EventService()
        image_store = ImageStore(self.root / "images", insecure_registries)
        self.images = ImageService(image_store, self.registry, self.events)
        self.volumes = VolumeService(VolumeStore(self.root / "volumes"), self.registry, self.events)
        self.networks = NetworkService(network, self.registry)
        self.execs = ExecService(self.registry, self.events)
        self.health = HealthService(self.registry, self.events, self.execs)
        self._ctx = ContainerContext(self.registry, self.store, self.images, self.volumes,
                                     self.networks, self.events, self.execs, self.health)
        self.containers = ContainerService(self._ctx)
        self.builds = BuildService(self.root, self.images, self.containers)
        self.system = SystemService(self.id, self.root, self.registry, image_store)
        self._start_threads: list[threading.Thread] = []

    def _engine_id(self) -> str:
        path = self.root / "engine-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            from ..atomic_file import write_bytes_atomic
            value = secrets.token_hex(16)
            write_bytes_atomic(path, value.encode())
            return value

    # start-up ----------------------------------------------------------------
    def start(self, background: bool = False) -> None:
        """Load state; mark containers that were running as exited; apply restart policies.

        Two parts: network set-up (bridge, ip_forward, NAT) and state recovery (records
        loaded, containers the last engine left running marked exited and cleaned up, restart
        policies applied). By default both run here, network first, and errors are raised.
        With background=True both run in threads at once and start() returns immediately (the
        agent serves /_ping meanwhile): every request that needs containers waits for
        recovery, every container start also waits for the network (events, no polling). A
        recovery error is then raised to those requests; a network error to container starts,
        each of which tries the (idempotent) set-up again first.
        """
        self.registry.begin_recovery()
        self.networks.begin_setup()
        if background:
            self._start_threads = [
                threading.Thread(target=self.networks.setup, name="network-setup", daemon=True),
                threading.Thread(target=self._recover, name="engine-recovery", daemon=True),
            ]
            for t in self._start_threads:
                t.start()
            return
        self.networks.setup()
        if self.networks.setup_error is not None:
            self.registry.end_recovery()   # nothing will be recovered; do not leave waiters hanging
            raise self.networks.setup_error
        self._recover()
        if self.registry.recovery_error is not None:
            raise self.registry.recovery_error

    def wait_recovered(self) -> None:
        """Block until state recovery is over; RuntimeFailure if it failed."""
        self.registry.await_recovery()

    def wait_started(self, timeout: float | None = None) -> bool:
        """True once state recovery and network set-up are over (successfully or not)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for wait in (self.registry.wait_recovered, self.networks.wait_ready):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not wait(remaining):
                return False
        return True

    def _recover(self) -> None:
        error: BaseException | None = None
        to_restart: list[Live] = []
        try:
            to_restart = self._load_state()
        except BaseException as err:   # noqa: BLE001 - kept for the waiters
            error = err
            log.error("loading the engine state failed: %s", err)
        finally:
            self.registry.end_recovery(error)
        if to_restart:
            threading.Thread(target=self._restart_at_boot, args=(to_restart,),
                             name="restart-at-boot", daemon=True).start()

    def _load_state(self) -> list[Live]:
        """The containers of the last run, reconciled; returns those to restart by policy."""
        to_restart: list[Live] = []
        for c, extra in self.store.load_all():
            live = Live(c, stopped_by_user=bool(extra.get("stopped_by_user")))
            self.registry.add(live)
            st = c.state
            if st.running or st.restarting or st.status in ("running", "restarting", "removing"):
                # The last engine died without recording the exit; Docker keeps the last
                # known code, which we never learnt, so say so.
                st.running = st.restarting = st.paused = False
                st.status = "exited"
                st.pid = 0
                st.exit_code = 255
                st.error = "engine restarted"
                st.finished_at = now_rfc3339()
                c.network = None
                self.health.on_stop(live)
                self._cleanup_leftovers(c)
                self.registry.save_state(live)
            policy = RestartPolicy.from_host_config(c.host_config)
            if st.status == "exited" and policy.restarts_at_engine_start(live.stopped_by_user):
                to_restart.append(live)
            if c.host_config.get("AutoRemove") and st.status == "exited" and st.error == "engine restarted":
                threading.Thread(target=self.containers.auto_remove, args=(live,), daemon=True).start()
        return to_restart

    def _restart_at_boot(self, lives: list[Live]) -> None:
        for live in lives:
            try:
                self.containers.run_at_boot(live)
            except DockyardError as err:
                log.warning("could not restart %s at engine start: %s", live.c.name, err)

    def _cleanup_leftovers(self, c: Container) -> None:
        self.networks.detach(c.id, "network cleanup")
        try:
            launcher().cleanup(self._ctx.bare_spec(c))
        except Exception as err:  # noqa: BLE001 - best effort on stale state
            log.warning("process cleanup of %s failed: %s", c.id[:12], err)

    # shutdown ----------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop running containers (state kept on disk); called on SIGTERM/SIGINT."""
        self._ctx.shutting_down = True
        self.health.close()
        # A start-up still in progress finishes first (its threads use the network manager).
        for t in self._start_threads:
            t.join()
        threads: list[threading.Thread] = []
        for live in self.registry.all_now():
            with live.lock:
                if self.containers.cancel_restart(live):
                    # Not the user's doing: the policy applies again at the next start.
                    self.registry.save_state(live)
                running = live.c.state.running
            if running:
                t = threading.Thread(target=self._stop_for_shutdown, args=(live,), daemon=True)
                t.start()
                threads.append(t)
        for t in threads:
            t.join(SHUTDOWN_STOP_CAP + KILL_WAIT)
        self.networks.shutdown()

    def _stop_for_shutdown(self, live: Live) -> None:
        try:
            self.containers.stop_for_shutdown(live, SHUTDOWN_STOP_CAP)
        except DockyardError as err:
            log.warning("stopping %s at shutdown: %s", live.c.name, err)
