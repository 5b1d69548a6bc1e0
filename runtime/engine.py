"""The engine: containers, execs, volumes and events on top of images, processes and networks.

The guest agent's API layer relies on the names and signatures below. Inputs that
mirror the Docker Engine API take Docker's own JSON shapes (dicts), because that is
the domain model of a Docker-compatible runtime; outputs are the dataclasses in
`runtime.models`.

Concurrency: each container has its own lock (guarding its record and run state) and
a condition on it that is notified at every exit and at removal; the name index has
its own lock in the ContainerStore. No lock is held while waiting for a process.
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import shutil
import signal as signal_mod
import socket
import pwd
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from . import path_scope
from .containers import config as cc
from .containers import device_rules, namespace_modes, volumes_from
from .containers import health as container_health
from .containers import update as container_update
from .containers.detach_keys import parse_detach_keys
from .containers.links import LinkedContainer, hosts_line, link_env, parse_links
from .containers.log_store import LogFile, LogRecord
from .containers.restart_policy import Backoff, RestartPolicy
from .containers.security.options import check_host_config as check_security_options
from .containers.security.options import parse_security_options
from .containers.security.seccomp_filter import security_options as seccomp_security_options
from .containers.spec import BindMount, ContainerSpec, ProcessSpec, SharedNamespaces, TmpfsMount
from .containers.stdio import AttachSession, StreamHub
from .containers.store import ContainerStore
from .errors import (Conflict, ContainerStartError, DockyardError, InvalidArgument, NotFound,
                     NotModified, ResourceError, RuntimeFailure)
from .event_bus import EventBus, EventSubscription
from .images.store import Image, ImageStore
from .models import Container, ExecInstance, Volume
from .timestamps import now_rfc3339
from .version import SERVER_VERSION
from .volumes.store import VolumeStore, check_volume_targets, directory_size, populate_from_layers

__all__ = ["Engine", "AttachSession", "WaitHandle", "EventSubscription", "LogRecord"]

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
SHUTDOWN_STOP_CAP = 10
DRAIN_TIMEOUT = 5.0
KILL_WAIT = 30.0
NULL_TIME = "0001-01-01T00:00:00Z"
# dockerd's exit code of an exec whose process could not be started (missing or not executable).
EXEC_START_FAILED = 126


def _launcher():
    """The process launcher, imported on first use (it pulls in ctypes and syscalls)."""
    from .containers import process as container_process
    return container_process


class WaitHandle:
    """Registered before the container starts (the docker CLI waits before it starts)."""

    def __init__(self, live: "_Live", condition: str) -> None:
        self._live = live
        self._condition = condition
        self._cancelled = False
        with live.changed:
            self._seq = live.exit_seq
            self._immediate = condition == "not-running" and not live.active()

    def _done(self) -> bool:
        live = self._live
        if self._cancelled or self._immediate or live.removed:
            return True
        if self._condition == "removed":
            return False
        return live.exit_seq > self._seq

    def result(self, timeout: float | None = None) -> tuple[int, str]:
        """Block until the condition is met: (exit code, error message or "")."""
        live = self._live
        with live.changed:
            if not live.changed.wait_for(self._done, timeout):
                raise TimeoutError("the container did not reach the wait condition in time")
            if self._cancelled:
                raise RuntimeFailure("wait cancelled")
            return live.c.state.exit_code, live.c.state.error

    def cancel(self) -> None:
        with self._live.changed:
            self._cancelled = True
            self._live.changed.notify_all()


class _Live:
    """In-memory companion of a container record: locks, the running process, its stdio."""

    def __init__(self, c: Container, stopped_by_user: bool = False) -> None:
        self.c = c
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        max_size, max_files = cc.log_rotation(c.host_config)
        self.log = LogFile(Path(c.log_path), max_size, max_files, keep=cc.keeps_logs(c.host_config))
        cfg = c.config
        self.hub = StreamHub(bool(cfg.get("Tty")), bool(cfg.get("OpenStdin")),
                             bool(cfg.get("StdinOnce")), self.log)
        self.process: Any = None
        self.spec: ContainerSpec | None = None
        self.exit_seq = 0
        self.removed = False
        self.removing = False
        self.starting = False
        self.stopped_by_user = stopped_by_user
        self.backoff = Backoff()
        self.restart_timer: threading.Timer | None = None
        self.started_mono = 0.0
        self.volume_names: list[str] = []
        self.link_env: list[str] = []      # of the current run's --link targets (execs get them too)

    def active(self) -> bool:
        """Running, starting or about to restart: a "not-running" wait must block."""
        s = self.c.state
        return s.running or s.restarting or self.starting


class _ExecRecord:
    """An exec instance plus its stdio hub and process."""

    def __init__(self, inst: ExecInstance) -> None:
        self.inst = inst
        self.hub = StreamHub(inst.tty, inst.attach_stdin, True, None)
        self.started = False
        self.done = threading.Event()


class _EventingImageStore:
    """The image store as the engine exposes it: same API, plus image events and in-use checks."""

    def __init__(self, store: ImageStore, engine: "Engine") -> None:
        self._store = store
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def pull(self, reference: str, credentials: Any = None, progress: Any = None) -> Image:
        image = self._store.pull(reference, credentials, progress)
        self._engine.events.publish("image", "pull", reference, {"name": reference})
        return image

    def tag(self, ref_or_id: str, repo: str, tag: str = "latest") -> None:
        self._store.tag(ref_or_id, repo, tag)
        image = self._store.get(f"{repo}:{tag}")
        self._engine.events.publish("image", "tag", image.id, {"name": f"{repo}:{tag}"})

    def remove(self, ref_or_id: str, force: bool = False, prune: bool = True,
               in_use_by: Callable[[str], list[str]] | None = None) -> list[dict[str, str]]:
        records = self._store.remove(ref_or_id, force=force, prune=prune,
                                     in_use_by=in_use_by or self._engine._image_users)
        self._publish_removals(records)
        return records

    def prune(self, dangling_only: bool = True, in_use: set[str] | None = None) -> tuple[list[dict[str, str]], int]:
        if in_use is None:
            in_use = self._engine._images_in_use()
        records, reclaimed = self._store.prune(dangling_only=dangling_only, in_use=in_use)
        self._publish_removals(records)
        return records, reclaimed

    def _publish_removals(self, records: list[dict[str, str]]) -> None:
        for rec in records:
            if "Untagged" in rec:
                self._engine.events.publish("image", "untag", rec["Untagged"], {"name": rec["Untagged"]})
            if "Deleted" in rec:
                self._engine.events.publish("image", "delete", rec["Deleted"], {"name": rec["Deleted"]})


class Engine:
    """One engine per root directory: <root>/images, containers, volumes, network."""

    images: ImageStore

    def __init__(self, root: Path, insecure_registries: list[str] | None = None,
                 network: Any = None) -> None:
        """`network` may be given to share or replace the NetworkManager (tests, bench)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._image_store = ImageStore(self.root / "images", insecure_registries)
        self.events = EventBus()
        self.images = _EventingImageStore(self._image_store, self)  # type: ignore[assignment]
        self.volumes = VolumeStore(self.root / "volumes")
        self.store = ContainerStore(self.root / "containers")
        if network is None:
            from .network.manager import NetworkManager
            network = NetworkManager(self.root / "network")
        self.network = network
        self._lock = threading.Lock()            # the two dicts below
        self._containers: dict[str, _Live] = {}
        self._execs: dict[str, _ExecRecord] = {}
        self._shutting_down = False
        self._started = False
        # Set while nothing is pending: an engine that was never started has no state to wait
        # for. start() clears them; requests that need containers wait for recovery, container
        # starts also for the network (see start()).
        self._recovered = threading.Event()
        self._recovered.set()
        self._recovery_error: BaseException | None = None
        self._network_ready = threading.Event()
        self._network_ready.set()
        self._network_error: BaseException | None = None
        self._network_lock = threading.Lock()   # serialises set-up retries after a failure
        self._start_threads: list[threading.Thread] = []
        self.health = container_health.HealthMonitor(self._run_health_probe, self._health_report)
        self.id = self._engine_id()

    def _engine_id(self) -> str:
        path = self.root / "engine-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            from .atomic_file import write_bytes_atomic
            value = secrets.token_hex(16)
            write_bytes_atomic(path, value.encode())
            return value

    # lifecycle -----------------------------------------------------------
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
        self._recovered.clear()
        self._network_ready.clear()
        if background:
            self._start_threads = [
                threading.Thread(target=self._setup_network, name="network-setup", daemon=True),
                threading.Thread(target=self._recover, name="engine-recovery", daemon=True),
            ]
            for t in self._start_threads:
                t.start()
            return
        self._setup_network()
        if self._network_error is not None:
            self._recovered.set()   # nothing will be recovered; do not leave waiters hanging
            raise self._network_error
        self._recover()
        if self._recovery_error is not None:
            raise self._recovery_error

    def _setup_network(self) -> None:
        try:
            self.network.setup()
        except BaseException as err:   # noqa: BLE001 - kept for the waiters
            self._network_error = err
            log.error("network set-up failed (container starts will retry it): %s", err)
        finally:
            self._network_ready.set()

    def _await_network(self) -> None:
        """Block until network set-up finished; retry it once more if it had failed."""
        self._network_ready.wait()
        if self._network_error is None:
            return
        with self._network_lock:
            if self._network_error is None:
                return
            try:
                self.network.setup()
            except Exception as err:   # noqa: BLE001
                self._network_error = err
                raise RuntimeFailure(f"container networking is not available: {err}") from err
            self._network_error = None

    def _await_recovery(self) -> None:
        """Block until the containers of the last run are loaded and reconciled (start())."""
        self._recovered.wait()
        if self._recovery_error is not None:
            raise RuntimeFailure(f"the engine could not load its state: {self._recovery_error}")

    def wait_recovered(self) -> None:
        """Block until state recovery is over; RuntimeFailure if it failed."""
        self._await_recovery()

    def wait_started(self, timeout: float | None = None) -> bool:
        """True once state recovery and network set-up are over (successfully or not)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in (self._recovered, self._network_ready):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not event.wait(remaining):
                return False
        return True

    def _recover(self) -> None:
        try:
            to_restart = self._load_state()
        except BaseException as err:   # noqa: BLE001 - kept for the waiters
            self._recovery_error = err
            log.error("loading the engine state failed: %s", err)
            return
        finally:
            self._recovered.set()
        if to_restart:
            threading.Thread(target=self._restart_at_boot, args=(to_restart,),
                             name="restart-at-boot", daemon=True).start()

    def _load_state(self) -> list[_Live]:
        """The containers of the last run, reconciled; returns those to restart by policy."""
        to_restart: list[_Live] = []
        for c, extra in self.store.load_all():
            live = _Live(c, stopped_by_user=bool(extra.get("stopped_by_user")))
            with self._lock:
                self._containers[c.id] = live
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
                self._stop_health(live)
                self._cleanup_leftovers(c)
                self._save_state(live)
            policy = RestartPolicy.from_host_config(c.host_config)
            if st.status == "exited" and policy.restarts_at_engine_start(live.stopped_by_user):
                to_restart.append(live)
            if c.host_config.get("AutoRemove") and st.status == "exited" and st.error == "engine restarted":
                threading.Thread(target=self._auto_remove, args=(live,), daemon=True).start()
        self._started = True
        return to_restart

    def _restart_at_boot(self, lives: list[_Live]) -> None:
        for live in lives:
            try:
                self._start(live, manual=False)
            except DockyardError as err:
                log.warning("could not restart %s at engine start: %s", live.c.name, err)

    def _cleanup_leftovers(self, c: Container) -> None:
        try:
            self.network.detach(c.id)
        except Exception as err:    # noqa: BLE001 - best effort on stale state
            log.warning("network cleanup of %s failed: %s", c.id[:12], err)
        try:
            _launcher().cleanup(self._bare_spec(c))
        except Exception as err:    # noqa: BLE001
            log.warning("process cleanup of %s failed: %s", c.id[:12], err)

    def shutdown(self) -> None:
        """Stop running containers (state kept on disk); called on SIGTERM/SIGINT."""
        self._shutting_down = True
        self.health.close()
        # A start-up still in progress finishes first (its threads use the network manager).
        for t in self._start_threads:
            t.join()
        with self._lock:
            lives = list(self._containers.values())
        threads = []
        for live in lives:
            with live.lock:
                if self._cancel_restart(live):
                    # Not the user's doing: the policy applies again at the next start.
                    self._save_state(live)
                running = live.c.state.running
            if running:
                t = threading.Thread(target=self._stop_for_shutdown, args=(live,), daemon=True)
                t.start()
                threads.append(t)
        for t in threads:
            t.join(SHUTDOWN_STOP_CAP + KILL_WAIT)
        try:
            self.network.shutdown()
        except Exception as err:    # noqa: BLE001
            log.warning("network shutdown failed: %s", err)

    def _stop_for_shutdown(self, live: _Live) -> None:
        timeout = min(self._stop_timeout(live, None), SHUTDOWN_STOP_CAP)
        try:
            self._stop(live, timeout, None, by_user=False)
        except DockyardError as err:
            log.warning("stopping %s at shutdown: %s", live.c.name, err)

    def info(self) -> dict[str, Any]:
        """Counts and host facts for `GET /info` (Containers, ContainersRunning, Images, NCPU, MemTotal, ...)."""
        self._await_recovery()
        with self._lock:
            states = [l.c.state for l in self._containers.values()]
        running = sum(1 for s in states if s.running and not s.paused)
        paused = sum(1 for s in states if s.paused)
        try:
            n_images = len(self._image_store.list())
        except Exception:   # noqa: BLE001 - info must answer even if the image store is broken
            n_images = 0
        return {
            "ID": self.id,
            "Containers": len(states),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": len(states) - running - paused,
            "Images": n_images,
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"]],
            "KernelVersion": os.uname().release,
            "OperatingSystem": _os_pretty_name(),
            "OSType": "linux",
            "OSVersion": _os_release().get("VERSION_ID", ""),
            "Architecture": platform.machine(),
            "NCPU": os.cpu_count() or 1,
            "MemTotal": _mem_total(),
            "Name": socket.gethostname(),
            "ServerVersion": SERVER_VERSION,
            "DockerRootDir": str(self.root),
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1",
            "LoggingDriver": "json-file",
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                        "Log": ["json-file"]},
            "MemoryLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "PidsLimit": True,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "SecurityOptions": seccomp_security_options(),
            "Labels": [],
            "Debug": False,
        }

    # lookups ---------------------------------------------------------------
    def _live(self, ref: str) -> _Live:
        self._await_recovery()
        ref = ref or ""
        with self._lock:
            live = self._containers.get(ref)
            if live is not None:
                return live
        try:
            cid = self.store.lookup_name(ref)
        except NotFound:
            cid = None
        with self._lock:
            if cid is not None and cid in self._containers:
                return self._containers[cid]
            if ref:
                matches = [l for i, l in self._containers.items() if i.startswith(ref)]
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def get_container(self, ref: str) -> Container:
        """By full id, unique id prefix, or name (with or without "/"). NotFound otherwise."""
        return self._live(ref).c

    def _attrs(self, c: Container, **extra: Any) -> dict[str, str]:
        attrs = {k: str(v) for k, v in (c.config.get("Labels") or {}).items()}
        attrs.update({"name": c.name, "image": c.image})
        attrs.update({k: str(v) for k, v in extra.items()})
        return attrs

    def _emit(self, c: Container, action: str, **extra: Any) -> None:
        self.events.publish("container", action, c.id, self._attrs(c, **extra))

    def _save_state(self, live: _Live) -> None:
        """Record the state on disk; never raises for a full disk (the store retries later).

        The state in memory is the truth: waiters, `--rm` and restart policies act on it
        whether or not this write succeeded.
        """
        self.store.save_state(live.c, {"stopped_by_user": live.stopped_by_user})

    # containers ----------------------------------------------------------
    def create_container(self, name: str | None, config: dict[str, Any], host_config: dict[str, Any],
                         networking_config: dict[str, Any] | None = None) -> Container:
        """Raises NotFound("No such image: X") so the CLI pulls, Conflict on a taken name."""
        self._await_recovery()   # names of recovered containers are taken
        config = dict(config or {})
        ref = config.get("Image") or ""
        if not ref:
            raise InvalidArgument("no image specified")
        image = self._image_store.get(ref)
        cid = secrets.token_hex(32)
        name = cc.validate_container_name(name) if name else cc.generate_name(self.store.name_taken)
        runtime_cfg = image.config.get("config") or {}
        cfg, hc = cc.build_config(cid, config, host_config or {}, runtime_cfg)
        check_security_options(hc, cc.capabilities(hc))
        self._check_sharing_and_devices(hc)
        _set_mac_address(cfg, hc, networking_config)
        requests = volumes_from.merge(cc.parse_mounts(cfg, hc),
                                      volumes_from.inherited_requests(hc.get("VolumesFrom"),
                                                                      lambda ref: self._live(ref).c.mounts), hc)
        for m in requests:
            if m.type == "bind" and not m.create_source and not os.path.exists(m.source):
                raise InvalidArgument(f'invalid mount config for type "bind": '
                                      f"bind source path does not exist: {m.source}")
        self._check_links(hc)
        volume_targets = [m.target for m in requests if m.type == "volume"]
        layers = list(self._image_store.layer_dirs(image)) if volume_targets else []
        if volume_targets:
            check_volume_targets(layers, volume_targets)   # over a file or "/": refused now
        self.store.reserve_name(name, cid)
        created_volumes: list[str] = []
        try:
            cdir = self.store.dir(cid)
            cdir.mkdir(parents=True)
            mounts = []
            for m in requests:
                record = self._mount_record(m, created_volumes, hc)
                mounts.append(record)
                if m.type == "volume" and not m.nocopy and not os.listdir(record["Source"]):
                    populate_from_layers(layers, m.target, Path(record["Source"]))
            c = Container(id=cid, name=name, created=now_rfc3339(), image=ref, image_id=image.id,
                          config=cfg, host_config=hc, mounts=mounts,
                          log_path=str(cdir / f"{cid}-json.log") if cc.keeps_logs(hc) else "")
            # No state.json yet: a record without one is "created" (saves an fsync per run).
            self.store.save_config(c)
            live = _Live(c)
        except BaseException:
            self.store.release_name(name, cid)
            shutil.rmtree(self.store.dir(cid), ignore_errors=True)
            for vname in created_volumes:
                try:
                    self.volumes.remove(vname)
                except DockyardError:
                    pass
            raise
        with self._lock:
            self._containers[cid] = live
        self._emit(c, "create")
        return c

    def _check_sharing_and_devices(self, hc: dict[str, Any]) -> None:
        """--pid/--ipc/--cgroupns, --device and --device-cgroup-rule values, with dockerd's messages."""
        namespace_modes.validate(hc, self._donor, _pure_cgroup_v2())
        if hc.get("Devices") is not None:
            hc["Devices"] = device_rules.validate_devices(hc["Devices"])
        if hc.get("DeviceCgroupRules") is not None:
            hc["DeviceCgroupRules"] = device_rules.validate_rules(hc["DeviceCgroupRules"])
        for entry in hc.get("VolumesFrom") or []:
            volumes_from.parse(entry)

    def _donor(self, ref: str) -> namespace_modes.Donor:
        """A container another joins (--pid/--ipc container:REF): its init pid and shareable /dev/shm."""
        c = self._live(ref).c
        shareable = c.host_config.get("IpcMode") == "shareable"
        return namespace_modes.Donor(c.id, c.state.pid if c.state.running else 0,
                                     self.store.dir(c.id) / "shm" if shareable else None)

    def _mount_record(self, m: cc.MountRequest, created: list[str],
                      hc: dict[str, Any]) -> dict[str, Any]:
        """Docker's inspect "Mounts" entry; volumes are created now, as dockerd does."""
        if m.type == "volume":
            driver, options, labels = _volume_options(hc, m.target)
            vol, new = self.volumes.create(m.source or None, driver, labels, options,
                                           anonymous=not m.source)
            if new:
                created.append(vol.name)
                self.events.publish("volume", "create", vol.name, {"driver": "local"})
            return {"Type": "volume", "Name": vol.name, "Source": vol.mountpoint,
                    "Destination": m.target, "Driver": "local", "Mode": "z" if not m.readonly else "ro",
                    "RW": not m.readonly, "Propagation": ""}
        if m.type == "bind":
            return {"Type": "bind", "Source": m.source, "Destination": m.target, "Mode": "",
                    "RW": not m.readonly, "Propagation": "rprivate"}
        return {"Type": "tmpfs", "Source": "", "Destination": m.target, "Mode": "",
                "RW": not m.readonly, "Propagation": ""}

    def list_containers(self, all: bool = False, filters: dict[str, list[str]] | None = None,
                        limit: int = -1) -> list[Container]:
        self._await_recovery()
        with self._lock:
            lives = list(self._containers.values())
        containers = sorted((l.c for l in lives), key=lambda c: c.created, reverse=True)
        if limit is not None and limit > 0:
            all = True
        filters = {k: v for k, v in (filters or {}).items() if v}
        if not all and "status" not in filters:
            containers = [c for c in containers if c.state.running or c.state.restarting]
        for value in (filters or {}).get("health", []):
            if value not in container_health.FILTER_VALUES:
                raise InvalidArgument(f"Unrecognised filter value for health: {value}")
        if filters:
            containers = [c for c in containers if self._matches(c, filters)]
        if limit is not None and limit > 0:
            containers = containers[:limit]
        return containers

    def _matches(self, c: Container, filters: dict[str, list[str]]) -> bool:
        for key, values in filters.items():
            if key == "id":
                ok = any(c.id.startswith(v) for v in values)
            elif key == "name":
                try:
                    ok = any(re.search(v.lstrip("/"), c.name) for v in values)
                except re.error as err:
                    raise InvalidArgument(f"invalid name filter: {err}") from None
            elif key == "label":
                labels = c.config.get("Labels") or {}
                ok = all(_label_ok(labels, v) for v in values)
            elif key == "status":
                ok = c.state.status in values
            elif key == "exited":
                ok = c.state.status == "exited" and str(c.state.exit_code) in values
            elif key == "ancestor":
                ok = any(self._is_ancestor(c, v) for v in values)
            elif key == "volume":
                ok = any(m.get("Name") in values or m.get("Destination") in values
                         or m.get("Source") in values for m in c.mounts)
            elif key == "network":
                ok = c.host_config.get("NetworkMode") in values
            elif key == "health":
                health = c.state.health
                ok = (health.get("Status") if health else container_health.NO_HEALTHCHECK) in values
            elif key in ("before", "since"):
                ok = True
                for v in values:
                    try:
                        other = self._live(v).c
                    except NotFound:
                        return False
                    ok = ok and (c.created < other.created if key == "before" else c.created > other.created)
            else:
                raise InvalidArgument(f"invalid filter '{key}'")
            if not ok:
                return False
        return True

    def _is_ancestor(self, c: Container, ref: str) -> bool:
        if ref in (c.image, c.image_id) or c.image_id.startswith("sha256:" + ref):
            return True
        try:
            return self._image_store.get(ref).id == c.image_id
        except DockyardError:
            return False

    def start_container(self, ref: str) -> None:
        """NotModified if running; ContainerStartError if the process cannot start."""
        live = self._live(ref)
        if not live.c.state.running:
            try:
                self._resolve_links(live.c)
            except DockyardError:
                # As dockerd: refused before anything ran, so no exit is recorded (a waiting
                # `docker run` reports the start error alone), and --rm still removes it.
                if live.c.host_config.get("AutoRemove"):
                    self._auto_remove(live)
                raise
        self._start(live, manual=True)

    def _start(self, live: _Live, manual: bool, from_policy: bool = False) -> None:
        c = live.c
        self._await_network()
        with live.lock:
            if from_policy and not c.state.restarting:
                return   # a stop, kill or remove cancelled the restart after its timer fired
            if live.removing or live.removed:
                raise Conflict(f"container {c.id} is marked for removal and cannot be started")
            if c.state.running or live.starting:
                raise NotModified(f"container {c.id} is already running")
            if live.restart_timer is not None:
                live.restart_timer.cancel()
                live.restart_timer = None
            live.starting = True
            if manual:
                live.stopped_by_user = False
                c.restart_count = 0
                live.backoff.reset()
        self._forget_execs(c)
        try:
            spec, proc = self._launch(live)
        except BaseException as err:
            self._start_failed(live, err)
            if isinstance(err, (DockyardError, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(err, OSError):   # a full disk, no descriptors: say which, as dockerd
                raise ResourceError.from_os_error(err) from err
            raise RuntimeFailure(f"cannot start container {c.id[:12]}: {err}") from err
        with live.lock:
            live.process = proc
            live.spec = spec
            live.starting = False
            live.started_mono = time.monotonic()
            st = c.state
            st.status, st.running, st.restarting, st.paused = "running", True, False, False
            st.pid, st.exit_code, st.error, st.oom_killed = proc.pid, 0, "", False
            st.started_at = now_rfc3339()
            self._start_health(live)
            self._save_state(live)
            live.changed.notify_all()
        threading.Thread(target=self._watch, args=(live, proc, spec), name=f"watch-{c.id[:12]}",
                         daemon=True).start()
        for m in c.mounts:
            if m.get("Type") == "volume":
                self.events.publish("volume", "mount", m["Name"], {
                    "container": c.id, "destination": m["Destination"], "driver": "local",
                    "propagation": "", "read/write": str(m["RW"]).lower()})
        self._emit(c, "start")

    def _start_failed(self, live: _Live, err: BaseException) -> None:
        c = live.c
        try:
            self.network.detach(c.id)
        except Exception as detach_err:   # noqa: BLE001
            log.warning("network detach after failed start: %s", detach_err)
        self.volumes.release(c.id)
        live.hub.run_failed()
        with live.lock:
            live.starting = False
            st = c.state
            st.status, st.running, st.restarting, st.pid = "exited", False, False, 0
            st.exit_code = err.exit_code if isinstance(err, ContainerStartError) else 128
            st.error = str(err)
            st.finished_at = now_rfc3339()
            c.network = None
            live.exit_seq += 1
            self._save_state(live)
            live.changed.notify_all()
        if c.host_config.get("AutoRemove"):
            self._auto_remove(live)

    def _launch(self, live: _Live) -> tuple[ContainerSpec, Any]:
        """Everything between "start" and a running process: layers, mounts, network, stdio."""
        c = live.c
        cfg, hc = c.config, c.host_config
        try:
            image = self._image_store.get(c.image_id)
        except NotFound:
            raise ContainerStartError(f"image {c.image_id} of container {c.name} was removed") from None
        lower = self._image_store.layer_dirs(image)
        cdir = self.store.dir(c.id)
        upper, work = cdir / "diff", cdir / "work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        mounts = self._resolve_mounts(c)
        attachment = self.network.attach(c.id, hc["NetworkMode"], cc.port_mappings(cfg, hc),
                                         mac_address=cfg.get("MacAddress") or "")
        c.network = attachment
        link_hosts, live.link_env = self._resolve_links(c) if attachment.mode == "bridge" else ("", [])
        from .host_loopback import host_loopback_address
        from .network.resolv_conf import container_etc_files
        etc_files: dict[str, Path] = {}
        for target, content in container_etc_files(c.id, cfg.get("Hostname", ""), attachment,
                                                   list(hc.get("ExtraHosts") or []),
                                                   host_loopback=host_loopback_address()).items():
            if target == "/etc/resolv.conf":
                content = _apply_dns_options(content, hc)
            if target == "/etc/hosts" and link_hosts:
                content = _insert_link_hosts(content, link_hosts, attachment.ip_address)
            host_file = cdir / os.path.basename(target)
            host_file.write_bytes(content)
            etc_files[target] = host_file
        init = cc.init_mount(hc)
        caps, privileged = cc.capabilities(hc), bool(hc.get("Privileged"))
        security = parse_security_options(hc.get("SecurityOpt"))
        spec = ContainerSpec(
            id=c.id, lower_dirs=list(lower), upper_dir=upper, work_dir=work,
            process=ProcessSpec(
                args=cc.process_args(cfg, hc), env=cc.merge_env(live.link_env, cc.process_env(cfg)),
                cwd=cfg.get("WorkingDir") or "/",
                user=cfg.get("User") or "", tty=bool(cfg.get("Tty")),
                capabilities=caps, privileged=privileged,
                no_new_privileges=security.no_new_privileges,
                seccomp=security.seccomp_policy(caps, privileged), **cc.process_extras(hc)),
            hostname=cfg.get("Hostname", ""), domainname=cfg.get("Domainname", ""),
            mounts=mounts + ([init] if init else []), etc_files=etc_files, netns_path=attachment.netns_path,
            host_network=attachment.mode == "host", readonly_rootfs=bool(hc.get("ReadonlyRootfs")),
            limits=cc.limits(hc), **cc.container_extras(hc),
            namespaces=namespace_modes.resolve(hc, self._donor, cdir / "shm", _pure_cgroup_v2()),
            devices=device_rules.gather(hc.get("Devices") or []),
            device_rules=list(hc.get("DeviceCgroupRules") or []))
        console = hc.get("ConsoleSize") or []
        if cfg.get("Tty") and len(console) == 2:
            # The CLI sends its terminal size at create and resizes after start; starting
            # with the right size spares the shell a SIGWINCH (and a redrawn prompt).
            live.hub.default_size(int(console[0] or 0), int(console[1] or 0))
        # With a TTY the launcher opens the pty in the container's own devpts (it is
        # /dev/pts/0 there, as under Docker) and hands its master over to the hub.
        tty = bool(cfg.get("Tty"))
        stdio = live.hub.prepare_run(console=tty)
        proc = _launcher().launch(spec, stdio, console=tty, console_size=live.hub.size)
        live.hub.run_started(proc.take_console())
        return spec, proc

    def _check_links(self, hc: dict[str, Any]) -> None:
        """At create, as dockerd: linked containers exist, and links need the bridge."""
        requests = parse_links(hc.get("Links"))
        if requests and hc.get("NetworkMode") == "host":
            raise InvalidArgument("conflicting options: host type networking can't be used with "
                                  "links. This would result in undefined behavior")
        for link in requests:
            try:
                self._live(link.name)
            except NotFound as err:
                # Not a 404: the docker CLI would take that for a missing image and pull.
                raise InvalidArgument(f"could not get container for {link.name}: {err}") from None

    def _resolve_links(self, c: Container) -> tuple[str, list[str]]:
        """(/etc/hosts lines, environment) of the container's links; the targets must run."""
        hosts, env = "", []
        for link in parse_links(c.host_config.get("Links")):
            try:
                child = self._live(link.name).c
            except NotFound as err:
                raise InvalidArgument(f"could not get container for {link.name}: {err}") from None
            address = child.network.ip_address if child.network and child.state.running else ""
            if not address:
                raise Conflict(f"Cannot link to a non running container: /{child.name} AS "
                               f"/{c.name}/{link.alias}")
            target = LinkedContainer(name=child.name,
                                     hostname=child.config.get("Hostname") or child.id[:12],
                                     ip=address, exposed_ports=list(child.config.get("ExposedPorts") or {}),
                                     env=list(child.config.get("Env") or []))
            hosts += hosts_line(link.alias, target)
            env += link_env(c.name, link.alias, target)
        return hosts, env

    def _resolve_mounts(self, c: Container) -> list[BindMount | TmpfsMount]:
        volume_by_target = {m["Destination"]: m.get("Name", "") for m in c.mounts if m.get("Type") == "volume"}
        result: list[BindMount | TmpfsMount] = []
        requests = volumes_from.at_start(cc.parse_mounts(c.config, c.host_config), c.mounts, c.host_config)
        for m in requests:
            if m.type == "bind":
                if not os.path.exists(m.source):
                    if not m.create_source:
                        raise InvalidArgument(f'invalid mount config for type "bind": '
                                              f"bind source path does not exist: {m.source}")
                    os.makedirs(m.source, exist_ok=True)
                result.append(BindMount(m.source, m.target, m.readonly))
            elif m.type == "volume":
                name = volume_by_target.get(m.target) or m.source
                vol, new = self.volumes.create(name or None, anonymous=not m.source)
                if new:
                    self.events.publish("volume", "create", vol.name, {"driver": "local"})
                # A volume with driver options is mounted (tmpfs, bind ...) while in use.
                result.append(BindMount(self.volumes.acquire(vol.name, c.id), m.target, m.readonly))
            else:
                result.append(TmpfsMount(m.target, m.options))
        return result

    def _watch(self, live: _Live, proc: Any, spec: ContainerSpec) -> None:
        """Waits for the container's first process, then records the exit and applies policies."""
        c = live.c
        try:
            code = _wait_exit(proc)
        except Exception as err:   # noqa: BLE001 - never lose the exit bookkeeping
            log.error("waiting for %s failed: %s", c.id[:12], err)
            code = 255
        live.hub.wait_drained(DRAIN_TIMEOUT)
        try:
            oom = bool(proc.oom_killed())
        except Exception:   # noqa: BLE001
            oom = False
        try:
            self.network.detach(c.id)
        except Exception as err:   # noqa: BLE001
            log.warning("network detach of %s failed: %s", c.id[:12], err)
        try:
            _launcher().cleanup(spec)
        except Exception as err:   # noqa: BLE001
            log.warning("cleanup of %s failed: %s", c.id[:12], err)
        self.volumes.release(c.id)
        policy = RestartPolicy.from_host_config(c.host_config)
        auto_remove = bool(c.host_config.get("AutoRemove"))
        with live.lock:
            ran_for = time.monotonic() - live.started_mono
            st = c.state
            st.running, st.paused, st.pid = False, False, 0
            st.exit_code, st.oom_killed = code, oom
            self._stop_health(live)
            st.finished_at = now_rfc3339()
            c.network = None
            live.process = None
            restart = (not self._shutting_down and not live.removing
                       and policy.should_restart(code, c.restart_count, live.stopped_by_user))
            st.status = "restarting" if restart else "exited"
            st.restarting = restart
            live.exit_seq += 1
            if not (auto_remove and not restart):
                self._save_state(live)
            # Events go out before anyone can observe the new state (publish never blocks).
            for m in c.mounts:
                if m.get("Type") == "volume":
                    self.events.publish("volume", "unmount", m["Name"], {"container": c.id, "driver": "local"})
            self._emit(c, "die", exitCode=code)
            if oom:
                self._emit(c, "oom")
            live.changed.notify_all()
            if restart:
                delay = live.backoff.next_delay(ran_for)
                timer = threading.Timer(delay, self._policy_restart, args=(live,))
                timer.daemon = True
                live.restart_timer = timer
                timer.start()
        if auto_remove and not restart and not live.removing:
            self._auto_remove(live)

    def _policy_restart(self, live: _Live) -> None:
        with live.lock:
            if live.restart_timer is None or live.removing or live.removed or self._shutting_down:
                return
            live.restart_timer = None
            live.c.restart_count += 1
        try:
            self._start(live, manual=False, from_policy=True)
            self._emit(live.c, "restart")
        except NotModified:
            pass
        except DockyardError as err:
            log.warning("restart of %s failed: %s", live.c.name, err)

    def _auto_remove(self, live: _Live) -> None:
        try:
            self._remove(live, force=True, remove_volumes=True)
        except NotFound:
            pass
        except Exception as err:   # noqa: BLE001 - runs on the exit watcher: log, never die
            log.warning("auto-remove of %s failed: %s", live.c.name, err)

    def _stop_timeout(self, live: _Live, timeout: int | None) -> float:
        if timeout is None:
            timeout = live.c.config.get("StopTimeout")
        if timeout is None:
            timeout = DEFAULT_STOP_TIMEOUT
        return float(timeout)

    def stop_container(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        """StopSignal (default SIGTERM), wait `timeout` (default StopTimeout or 10 s), then SIGKILL."""
        live = self._live(ref)
        self._stop(live, self._stop_timeout(live, timeout), signal, by_user=True)

    def _stop(self, live: _Live, timeout: float, signal: str | None, by_user: bool) -> None:
        c = live.c
        sig = cc.parse_signal(signal or c.config.get("StopSignal") or None)
        with live.lock:
            # A start in progress finishes in milliseconds; stop what it started.
            live.changed.wait_for(lambda: not live.starting, KILL_WAIT)
            if by_user:
                cancelled = self._cancel_restart(live)
                live.stopped_by_user = True
                if cancelled:
                    self._save_state(live)
                    live.changed.notify_all()
                    self._emit(c, "stop")
                    return
            if not c.state.running:
                raise NotModified(f"container {c.id} is not running")
            proc, seq = live.process, live.exit_seq
        self._signal(proc, sig)
        self._thaw_if_paused(live)
        self._emit(c, "kill", signal=sig)
        with live.changed:
            exited = live.changed.wait_for(lambda: live.exit_seq > seq, timeout if timeout >= 0 else None)
        if not exited:
            log.info("container %s did not stop within %.0fs; killing it", c.id[:12], timeout)
            self._signal(proc, signal_mod.SIGKILL)
            self._emit(c, "kill", signal=int(signal_mod.SIGKILL))
            with live.changed:
                if not live.changed.wait_for(lambda: live.exit_seq > seq, KILL_WAIT):
                    raise RuntimeFailure(f"container {c.id} did not exit after SIGKILL")
        self._emit(c, "stop")

    def _cancel_restart(self, live: _Live) -> bool:
        """Cancel a pending policy restart (caller holds live.lock); True if there was one."""
        if live.restart_timer is None and not live.c.state.restarting:
            return False
        if live.restart_timer is not None:
            live.restart_timer.cancel()
            live.restart_timer = None
        st = live.c.state
        st.status, st.restarting = "exited", False
        return True

    @staticmethod
    def _signal(proc: Any, sig: int) -> None:
        try:
            proc.signal(sig)
        except ProcessLookupError:
            pass   # it exited in the meantime; the watcher records it

    def kill_container(self, ref: str, signal: str = "SIGKILL") -> None:
        live = self._live(ref)
        c = live.c
        sig = cc.parse_signal(signal or "SIGKILL")
        with live.lock:
            if sig == signal_mod.SIGKILL:
                cancelled = self._cancel_restart(live)
                if cancelled:
                    live.stopped_by_user = True
                    self._save_state(live)
                    live.changed.notify_all()
                    return
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if sig == signal_mod.SIGKILL:
                live.stopped_by_user = True
            proc, seq = live.process, live.exit_seq
        self._signal(proc, sig)
        self._thaw_if_paused(live)
        self._emit(c, "kill", signal=sig)
        if sig == signal_mod.SIGKILL:
            # Like dockerd: `docker kill` returns once the container is really gone.
            with live.changed:
                live.changed.wait_for(lambda: live.exit_seq > seq, KILL_WAIT)

    def pause_container(self, ref: str) -> None:
        """Freeze every process of the container (cgroup freezer)."""
        live = self._live(ref)
        c = live.c
        with live.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is already paused")
            self._set_frozen(c, True)
            c.state.paused, c.state.status = True, "paused"
            self.health.unwatch(c.id)   # as dockerd: no probes while frozen
            self._save_state(live)
        self._emit(c, "pause")

    def unpause_container(self, ref: str) -> None:
        live = self._live(ref)
        c = live.c
        with live.lock:
            if not c.state.paused:
                raise Conflict(f"Container {c.id} is not paused")
            self._set_frozen(c, False)
            c.state.paused = False
            c.state.status = "running" if c.state.running else c.state.status
            self._resume_health(live)
            self._save_state(live)
        self._emit(c, "unpause")

    @staticmethod
    def _set_frozen(c: Container, frozen: bool) -> None:
        from .linux import cgroups
        cgroups.set_frozen(cgroups.container_cgroup(c.id), frozen)

    def _thaw_if_paused(self, live: _Live) -> None:
        """Signals reach frozen processes only once they are thawed (dockerd does the same)."""
        with live.lock:
            if not live.c.state.paused:
                return
            try:
                self._set_frozen(live.c, False)
            except DockyardError as err:
                log.warning("thawing %s failed: %s", live.c.id[:12], err)
            live.c.state.paused = False
            live.c.state.status = "running" if live.c.state.running else live.c.state.status

    def restart_container(self, ref: str, timeout: int | None = None) -> None:
        live = self._live(ref)
        try:
            self._stop(live, self._stop_timeout(live, timeout), None, by_user=True)
        except NotModified:
            pass
        self._start(live, manual=True)
        self._emit(live.c, "restart")

    def remove_container(self, ref: str, force: bool = False, remove_volumes: bool = False) -> None:
        self._remove(self._live(ref), force, remove_volumes)

    def _remove(self, live: _Live, force: bool, remove_volumes: bool) -> None:
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
            self._cancel_restart(live)
            live.stopped_by_user = True
            proc, seq = live.process, live.exit_seq
        try:
            if running and proc is not None:
                self._signal(proc, signal_mod.SIGKILL)
                self._thaw_if_paused(live)
                with live.changed:
                    if not live.changed.wait_for(lambda: live.exit_seq > seq, KILL_WAIT):
                        raise RuntimeFailure(f"container {c.id} did not exit after SIGKILL")
        except BaseException:
            with live.lock:
                live.removing = False
            raise
        try:
            self.network.detach(c.id)
        except Exception as err:   # noqa: BLE001
            log.warning("network detach of %s failed: %s", c.id[:12], err)
        with self._lock:
            self._containers.pop(c.id, None)
            execs = [e for e, rec in self._execs.items() if rec.inst.container_id == c.id]
            for e in execs:
                self._execs.pop(e, None)
        self.store.release_name(c.name, c.id)
        self.store.delete(c.id)
        if remove_volumes:
            for m in c.mounts:
                if m.get("Type") != "volume":
                    continue
                try:
                    vol = self.volumes.get(m["Name"])
                except NotFound:
                    continue
                if self.volumes.is_anonymous(vol) and not self.volume_users(vol.name):
                    self.volumes.remove(vol.name)
                    self.events.publish("volume", "destroy", vol.name, {"driver": "local"})
        with live.lock:
            live.removed = True
            c.state.status = "removing"
            live.changed.notify_all()
        live.hub.end_sessions()
        self._emit(c, "destroy")

    def rename_container(self, ref: str, new_name: str) -> None:
        live = self._live(ref)
        c = live.c
        new = cc.validate_container_name(new_name)
        if new == c.name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        self.store.reserve_name(new, c.id)
        with live.lock:
            old = c.name
            c.name = new
            try:
                self.store.save_config(c)
            except BaseException:
                c.name = old
                self.store.release_name(new, c.id)
                raise
        self.store.release_name(old, c.id)
        self._emit(c, "rename", oldName="/" + old)

    def prune_containers(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        filters = {k: v for k, v in (filters or {}).items() if v}
        until = filters.pop("until", None)
        deleted, reclaimed = [], 0
        for c in self.list_containers(all=True):
            if c.state.running or c.state.restarting:
                continue
            labels = c.config.get("Labels") or {}
            if not all(_label_ok(labels, v) for v in filters.get("label", [])):
                continue
            if any(_label_ok(labels, v) for v in filters.get("label!", [])):
                continue
            if until and not _created_before(c.created, until[0]):
                continue
            size = self._rw_size(c)
            try:
                self.remove_container(c.id)
            except DockyardError as err:
                log.info("prune skipped %s: %s", c.id[:12], err)
                continue
            deleted.append(c.id)
            reclaimed += size
        return deleted, reclaimed

    def wait_container(self, ref: str, condition: str = "not-running") -> WaitHandle:
        """condition: "not-running" | "next-exit" | "removed"."""
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: \"{condition}\"")
        return WaitHandle(self._live(ref), condition)

    def attach_container(self, ref: str, stdin: bool, stdout: bool, stderr: bool,
                         logs: bool = False) -> AttachSession:
        live = self._live(ref)
        session = live.hub.attach(stdin, stdout, stderr, logs)
        self._emit(live.c, "attach")
        return session

    def container_logs(self, ref: str, stdout: bool = True, stderr: bool = True, follow: bool = False,
                       since: float = 0, until: float = 0, tail: int | None = None,
                       cancel: threading.Event | None = None) -> Iterator[LogRecord]:
        """The container's log records; with `follow`, `cancel_logs(ref, cancel)` ends the wait."""
        live = self._live(ref)
        return live.log.read(stdout=stdout, stderr=stderr, since=since, until=until, tail=tail,
                             follow=follow, cancel=cancel)

    def container_size(self, ref: str) -> tuple[int, int]:
        """(SizeRw, SizeRootFs): bytes in the container's writable layer, and that plus its image.

        (0, 0) for a container removed meanwhile: listings ask for each entry in turn.
        """
        try:
            c = self._live(ref).c
        except NotFound:
            return 0, 0
        rw = self._rw_size(c)
        try:
            image_size = self._image_store.get(c.image_id).size
        except NotFound:
            image_size = 0
        return rw, rw + image_size

    def _rw_size(self, c: Container) -> int:
        """Bytes in the container's writable layer (its overlay upper directory)."""
        return directory_size(self.store.dir(c.id) / "diff")

    def cancel_logs(self, ref: str, cancel: threading.Event) -> None:
        """Release a follower of `container_logs` (its client went away)."""
        try:
            live = self._live(ref)
        except NotFound:
            cancel.set()   # removed: its log ended anyway
            return
        live.log.cancel_follow(cancel)

    def resize_container_tty(self, ref: str, height: int, width: int) -> None:
        live = self._live(ref)
        if not live.c.config.get("Tty"):
            return   # dockerd accepts and ignores a resize without a TTY
        live.hub.resize(height, width)

    def top_container(self, ref: str, ps_args: str = "") -> tuple[list[str], list[list[str]]]:
        """(Titles, Processes) as `docker top` shows."""
        live = self._live(ref)
        with live.lock:
            if not live.c.state.running or live.spec is None:
                raise Conflict(f"Container {live.c.id} is not running")
            spec = live.spec
        pids = set(_launcher().container_pids(spec))
        if ps_args:
            return _ps_with_args(pids, ps_args)
        return _ps_from_proc(sorted(pids))

    def container_pids(self, ref: str) -> list[int]:
        """Host pids of the container's processes (empty when it is not running)."""
        live = self._live(ref)
        spec = live.spec
        if not live.c.state.running or spec is None:
            return []
        return list(_launcher().container_pids(spec))

    def _bare_spec(self, c: Container) -> ContainerSpec:
        cdir = self.store.dir(c.id)
        # The shareable /dev/shm is named so that cleaning up leftovers unmounts it too.
        shm = str(cdir / "shm") if c.host_config.get("IpcMode") == "shareable" else None
        return ContainerSpec(id=c.id, lower_dirs=[], upper_dir=cdir / "diff", work_dir=cdir / "work",
                             process=ProcessSpec(args=[]), namespaces=SharedNamespaces(shm_own_dir=shm))

    # docker update -------------------------------------------------------
    def update_container(self, ref: str, body: Any) -> list[str] | None:
        """Change resource limits / restart policy; live on a running container. Docker's warnings (null)."""
        request = container_update.parse_request(body)
        live = self._live(ref)
        c = live.c
        with live.lock:
            try:
                hc = container_update.merged_host_config(c.host_config, request)
            except container_update.UpdateConflict as err:
                raise InvalidArgument(f"Cannot update container {c.id}: {err.message}") from None
            if c.state.running and not c.state.restarting:
                from .linux import cgroups
                try:
                    cgroups.update(cgroups.container_cgroup(c.id), cc.limits(hc))
                except RuntimeFailure as err:
                    # Limits already written stay as they were asked; dockerd's answer is the same.
                    raise Conflict(f"Cannot update container {c.id}: {err.message}") from None
            c.host_config = hc
            self.store.save_config(c)
        self._emit(c, "update")
        return None

    # health checks -------------------------------------------------------
    def _start_health(self, live: _Live) -> None:
        """A (re)started container with a probe is "starting" again and probed (caller holds live.lock)."""
        c = live.c
        settings = container_health.HealthSettings.from_config(c.config)
        if settings is None:
            self.health.unwatch(c.id)
            return
        c.state.health = container_health.initial_health(c.state.health)
        self.health.watch(c.id, settings, c.state.health)

    def _resume_health(self, live: _Live) -> None:
        settings = container_health.HealthSettings.from_config(live.c.config)
        if settings is not None and live.c.state.health is not None and live.c.state.running:
            self.health.resume(live.c.id, settings, live.c.state.health, live.started_mono)

    def _stop_health(self, live: _Live) -> None:
        """Probes end with the container; as dockerd, a stopped container's health reads "unhealthy"."""
        self.health.unwatch(live.c.id)
        if live.c.state.health is not None:
            live.c.state.health = {**live.c.state.health, "Status": container_health.UNHEALTHY}

    def _health_report(self, container_id: str, health: dict[str, Any], new_status: str | None) -> None:
        with self._lock:
            live = self._containers.get(container_id)
        if live is None:
            return
        with live.lock:
            if not live.c.state.running or live.removed:
                return   # a result that raced with the exit: the stop already set the status
            if new_status is not None:
                # Published before anyone can observe the new status (publish never blocks).
                self._emit(live.c, f"health_status: {new_status}")
            live.c.state.health = health
            self._save_state(live)

    def _run_health_probe(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, bytes]:
        """One probe as dockerd runs it: an exec as the container's user, stdout and stderr
        together; TimeoutError (after killing it) when it overruns. Its exec record goes at
        once (dockerd lists no probe in ExecIDs)."""
        inst = self.create_exec(container_id, argv)
        try:
            session = self.start_exec(inst.id)
            if session is None or self.wait_exec(inst.id, timeout) is None:
                if inst.pid:
                    try:
                        os.kill(inst.pid, signal_mod.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.wait_exec(inst.id, KILL_WAIT)
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
            self._forget_exec(inst)

    def _forget_exec(self, inst: ExecInstance) -> None:
        with self._lock:
            self._execs.pop(inst.id, None)
            live = self._containers.get(inst.container_id)
        if live is not None:
            with live.lock:
                if inst.id in live.c.exec_ids:
                    live.c.exec_ids.remove(inst.id)

    # exec ----------------------------------------------------------------
    def create_exec(self, ref: str, cmd: list[str], env: list[str] | None = None, user: str = "",
                    working_dir: str = "", tty: bool = False, attach_stdin: bool = False,
                    attach_stdout: bool = True, attach_stderr: bool = True,
                    privileged: bool = False, detach_keys: str = "") -> ExecInstance:
        """Conflict if the container is not running; InvalidArgument for malformed detach keys."""
        live = self._live(ref)
        c = live.c
        if not cmd:
            raise InvalidArgument("No exec command specified")
        if detach_keys:
            parse_detach_keys(detach_keys, "escape")
        if working_dir and not working_dir.startswith("/"):
            raise InvalidArgument(f"the working directory '{working_dir}' is invalid, "
                                  "it needs to be an absolute path")
        path_scope.check(working_dir, "working directory")
        with live.lock:
            if not c.state.running:
                raise Conflict(f"Container {c.id} is not running")
            if c.state.paused:
                raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
            inst = ExecInstance(id=secrets.token_hex(32), container_id=c.id, cmd=list(cmd),
                                env=list(env or []), user=user, working_dir=working_dir, tty=tty,
                                attach_stdin=attach_stdin, attach_stdout=attach_stdout,
                                attach_stderr=attach_stderr, privileged=privileged,
                                detach_keys=detach_keys)
            c.exec_ids.append(inst.id)
        with self._lock:
            self._execs[inst.id] = _ExecRecord(inst)
        self._emit(c, f"exec_create: {' '.join(cmd)}", execID=inst.id)
        return inst

    def _forget_execs(self, c: Container) -> None:
        """Exec records of earlier runs go when the container starts again (they are dead)."""
        with self._lock:
            for exec_id in [e for e, rec in self._execs.items() if rec.inst.container_id == c.id]:
                del self._execs[exec_id]
        c.exec_ids = []

    def get_exec(self, exec_id: str) -> ExecInstance:
        with self._lock:
            rec = self._execs.get(exec_id)
        if rec is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return rec.inst

    def start_exec(self, exec_id: str, detach: bool = False) -> AttachSession | None:
        with self._lock:
            rec = self._execs.get(exec_id)
        if rec is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        inst = rec.inst
        live = self._live(inst.container_id)
        c = live.c
        with live.lock:
            if rec.started:
                raise Conflict(f"Exec command {exec_id} has already run")
            if not c.state.running or live.spec is None:
                raise Conflict(f"Container {c.id} is not running")
            rec.started = True
            spec, container_proc = live.spec, live.process
        session = None
        if not detach:
            session = rec.hub.attach(inst.attach_stdin, inst.attach_stdout, inst.attach_stderr)
        privileged = inst.privileged or bool(c.host_config.get("Privileged"))
        container_caps = cc.capabilities(c.host_config)
        security = parse_security_options(c.host_config.get("SecurityOpt"))
        # As runc: an exec keeps its container's no_new_privs and seccomp filter (built
        # for the container's capabilities), even with `exec --privileged`.
        process = ProcessSpec(
            args=list(inst.cmd),
            # As dockerd: TERM=xterm follows the exec's own TTY, not the container's.
            env=cc.merge_env(cc.merge_env(live.link_env, cc.process_env({**c.config, "Tty": inst.tty})),
                             inst.env),
            cwd=inst.working_dir or c.config.get("WorkingDir") or "/",
            user=inst.user or c.config.get("User") or "",
            tty=inst.tty,
            capabilities=cc.ALL_CAPABILITIES if privileged else container_caps,
            privileged=privileged, no_new_privileges=security.no_new_privileges,
            seccomp=security.seccomp_policy(container_caps, bool(c.host_config.get("Privileged"))),
            **cc.process_extras(c.host_config))
        ptmx = f"/proc/{container_proc.pid}/root/dev/pts/ptmx" if inst.tty else None
        stdio = rec.hub.prepare_run(ptmx)
        try:
            proc = _launcher().exec_in(container_proc, spec, process, stdio)
        except ContainerStartError as err:
            # As dockerd: an attached client gets the runtime's message on the stream and the
            # exec exits 126; only a detached start has no stream to say it on.
            inst.exit_code = EXEC_START_FAILED
            if session is None:
                rec.hub.run_failed()
                rec.done.set()
                raise
            rec.hub.fail_run(f"OCI runtime exec failed: exec failed: unable to start container "
                             f"process: {err.message}: unknown\r\n".encode())
            rec.done.set()
            return session
        except BaseException:
            rec.hub.run_failed()
            inst.exit_code = EXEC_START_FAILED
            rec.done.set()
            raise
        rec.hub.run_started()
        inst.running, inst.pid = True, proc.pid
        self._emit(c, f"exec_start: {' '.join(inst.cmd)}", execID=inst.id)
        threading.Thread(target=self._watch_exec, args=(rec, proc, c), daemon=True).start()
        return session

    def _watch_exec(self, rec: _ExecRecord, proc: Any, c: Container) -> None:
        try:
            code = _wait_exit(proc)
        except Exception as err:   # noqa: BLE001
            log.error("waiting for exec %s failed: %s", rec.inst.id[:12], err)
            code = 255
        rec.hub.wait_drained(DRAIN_TIMEOUT)
        rec.inst.exit_code = code
        rec.inst.running = False
        rec.done.set()
        self._emit(c, "exec_die", execID=rec.inst.id, exitCode=code)

    def resize_exec_tty(self, exec_id: str, height: int, width: int) -> None:
        with self._lock:
            rec = self._execs.get(exec_id)
        if rec is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        if rec.inst.tty:
            rec.hub.resize(height, width)

    def wait_exec(self, exec_id: str, timeout: float | None = None) -> int | None:
        """Block until the exec finished; its exit code (None on timeout)."""
        with self._lock:
            rec = self._execs.get(exec_id)
        if rec is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        rec.done.wait(timeout)
        return rec.inst.exit_code

    # volumes -------------------------------------------------------------
    def create_volume(self, name: str | None = None, driver: str = "local",
                      labels: dict[str, str] | None = None,
                      options: dict[str, str] | None = None) -> Volume:
        vol, new = self.volumes.create(name, driver or "local", labels, options)
        if new:
            self.events.publish("volume", "create", vol.name, {"driver": vol.driver})
        return vol

    def get_volume(self, name: str) -> Volume:
        return self.volumes.get(name)

    def list_volumes(self, filters: dict[str, list[str]] | None = None) -> list[Volume]:
        filters = {k: v for k, v in (filters or {}).items() if v}
        result = []
        for vol in self.volumes.list():
            if "name" in filters and not any(f in vol.name for f in filters["name"]):
                continue
            if "label" in filters and not all(_label_ok(vol.labels, f) for f in filters["label"]):
                continue
            if "driver" in filters and vol.driver not in filters["driver"]:
                continue
            if "dangling" in filters:
                dangling = filters["dangling"][0].lower() in ("true", "1")
                if dangling != (not self.volume_users(vol.name)):
                    continue
            result.append(vol)
        return result

    def remove_volume(self, name: str, force: bool = False) -> None:
        """Conflict while a container uses it."""
        self.volumes.remove(name, in_use_by=self.volume_users(name), force=force)
        self.events.publish("volume", "destroy", name, {"driver": "local"})

    def prune_volumes(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        filters = {k: v for k, v in (filters or {}).items() if v}
        # Docker 23+: only anonymous volumes unless all=true.
        prune_all = (filters.pop("all", ["false"])[0].lower() in ("true", "1"))
        deleted, reclaimed = [], 0
        for vol in self.volumes.list():
            if self.volume_users(vol.name):
                continue
            if not prune_all and not self.volumes.is_anonymous(vol):
                continue
            if not all(_label_ok(vol.labels, f) for f in filters.get("label", [])):
                continue
            size = self.volumes.usage(vol.name)
            try:
                self.remove_volume(vol.name)
            except DockyardError:
                continue
            deleted.append(vol.name)
            reclaimed += size
        return deleted, reclaimed

    def volume_users(self, name: str) -> list[str]:
        """Ids of containers that mount the volume."""
        self._await_recovery()
        with self._lock:
            lives = list(self._containers.values())
        return [l.c.id for l in lives
                if any(m.get("Type") == "volume" and m.get("Name") == name for m in l.c.mounts)]

    # images (in-use bookkeeping for the image store) ------------------------
    def _image_users(self, image_id: str) -> list[str]:
        self._await_recovery()
        with self._lock:
            return [l.c.id for l in self._containers.values() if l.c.image_id == image_id]

    def _images_in_use(self) -> set[str]:
        self._await_recovery()
        with self._lock:
            return {l.c.image_id for l in self._containers.values()}

    # events --------------------------------------------------------------
    def subscribe_events(self, since: float | None = None, until: float | None = None,
                         filters: dict[str, list[str]] | None = None) -> EventSubscription:
        return self.events.subscribe(since, until, filters)


# helpers --------------------------------------------------------------------
def _pure_cgroup_v2() -> bool:
    """Whether this host has cgroup v2 only (it decides Docker's default --cgroupns)."""
    from .linux.cgroups import host_layout
    return host_layout().pure_v2


def _wait_exit(proc: Any) -> int:
    """The process's exit code, once it exited.

    ContainerProcess.wait() holds its lock while blocked in waitpid, which would make
    signal() (stop, kill) wait for the exit it is meant to cause; so first wait for the
    reaper's exit without reaping it (WNOWAIT), then let wait() reap at once.
    """
    reaper = getattr(proc, "reaper_pid", None)
    while reaper:
        try:
            os.waitid(os.P_PID, reaper, os.WEXITED | os.WNOWAIT)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    return int(proc.wait())


def _set_mac_address(cfg: dict[str, Any], hc: dict[str, Any], networking: Any) -> None:
    """Config.MacAddress, or (API 1.44+, what the CLI sends now) the endpoint's MacAddress
    in NetworkingConfig: checked at create and kept in Config.MacAddress for the start."""
    mac = cfg.get("MacAddress") or ""
    endpoints = (networking or {}).get("EndpointsConfig") if isinstance(networking, dict) else None
    for endpoint in (endpoints or {}).values():
        if isinstance(endpoint, dict) and endpoint.get("MacAddress"):
            mac = endpoint["MacAddress"]
    if not mac:
        return
    if not isinstance(mac, str):
        raise InvalidArgument("invalid MacAddress: expected a string")
    if hc.get("NetworkMode") == "host":
        raise InvalidArgument("conflicting options: mac-address and the network mode")
    from .network.manager import validate_mac   # the network module (netlink, proxies) loads lazily
    validate_mac(mac)
    cfg["MacAddress"] = mac


def _volume_options(hc: dict[str, Any], target: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(driver, driver options, labels) of `--mount type=volume,...` at `target`, for the
    volume it creates (volume-driver, volume-opt, volume-label); "local" and none otherwise."""
    for m in hc.get("Mounts") or []:
        if not isinstance(m, dict) or m.get("Type") != "volume":
            continue
        if os.path.normpath(str(m.get("Target") or "")) != target:
            continue
        vo = m.get("VolumeOptions") or {}
        driver_config = vo.get("DriverConfig") or {}
        return (str(driver_config.get("Name") or "local"),
                {str(k): str(v) for k, v in (driver_config.get("Options") or {}).items()},
                {str(k): str(v) for k, v in (vo.get("Labels") or {}).items()})
    return "local", {}, {}


def _label_ok(labels: dict[str, str], spec: str) -> bool:
    key, eq, value = spec.partition("=")
    if key not in labels:
        return False
    return not eq or labels[key] == value


def _created_before(created: str, until: str) -> bool:
    from .timestamps import parse_time_ns
    try:
        limit = float(until)
    except ValueError:
        limit = parse_time_ns(until) / 1e9
    return parse_time_ns(created) / 1e9 < limit


def _insert_link_hosts(hosts: bytes, lines: str, own_address: str) -> bytes:
    """Link lines go before the container's own entry (the last line), as in dockerd's file."""
    text = hosts.decode()
    head, sep, last = text.rstrip("\n").rpartition("\n")
    if own_address and last.startswith(own_address + "\t"):
        return (head + sep + lines + last + "\n").encode()
    return (text + lines).encode()


def _apply_dns_options(resolv_conf: bytes, host_config: dict[str, Any]) -> bytes:
    """HostConfig Dns/DnsSearch/DnsOptions replace the matching lines, as `--dns` does."""
    replacements: dict[str, list[str]] = {}
    if host_config.get("Dns"):
        replacements["nameserver"] = list(host_config["Dns"])
    if host_config.get("DnsSearch"):
        replacements["search"] = [" ".join(host_config["DnsSearch"])]
    if host_config.get("DnsOptions"):
        replacements["options"] = [" ".join(host_config["DnsOptions"])]
    if not replacements:
        return resolv_conf
    kept = []
    for line in resolv_conf.decode().splitlines():
        words = line.split()
        if not words or words[0] not in replacements:
            kept.append(line)
    for key, values in replacements.items():
        kept += [f"{key} {v}" for v in values]
    return ("\n".join(kept) + "\n").encode()


TOP_TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


def _ps_from_proc(pids: list[int]) -> tuple[list[str], list[list[str]]]:
    """`ps -ef` columns for the given pids, read from /proc (no process spawned)."""
    clk = os.sysconf("SC_CLK_TCK")
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    rows = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue   # exited while we looked
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ppid, tty_nr = fields[1], int(fields[4])
        cpu_secs = (int(fields[11]) + int(fields[12])) // clk
        started = boot + int(fields[19]) / clk
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        tty = "?"
        if tty_nr:
            major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
            tty = f"pts/{minor}" if 136 <= major <= 143 else f"tty{minor}"
        cmd = " ".join(a.decode(errors="replace") for a in cmdline.split(b"\0") if a) or f"[{comm}]"
        stime = time.strftime("%H:%M", time.localtime(started))
        cpu = f"{cpu_secs // 3600:02d}:{cpu_secs // 60 % 60:02d}:{cpu_secs % 60:02d}"
        rows.append([user, str(pid), ppid, "0", stime, tty, cpu, cmd])
    return list(TOP_TITLES), rows


def _ps_with_args(pids: set[int], ps_args: str) -> tuple[list[str], list[list[str]]]:
    """Like dockerd: run the host's `ps` with the user's arguments, keep the container's rows."""
    try:
        out = subprocess.run(["ps", *shlex.split(ps_args)], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        raise InvalidArgument(f"ps {ps_args}: {err}") from None
    lines = out.splitlines()
    if not lines:
        return [], []
    titles = lines[0].split()
    if "PID" not in titles:
        raise InvalidArgument("Couldn't find PID field in ps output")
    col = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            rows.append(fields)
    return titles, rows


def _os_release() -> dict[str, str]:
    result = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq:
                result[key] = value.strip().strip('"')
    except OSError:
        pass
    return result


def _os_pretty_name() -> str:
    return _os_release().get("PRETTY_NAME", "Linux")


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
