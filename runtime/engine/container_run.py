"""`docker start` and what follows: launch, the exit watcher, restart policies."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..containers import config as cc
from ..containers import device_rules, namespace_modes, volumes_from
from ..containers.mounts import parse_mounts
from ..containers.restart_policy import RestartPolicy
from ..containers.security.options import parse_security_options
from ..containers.spec import BindMount, ContainerSpec, ProcessSpec, TmpfsMount
from ..errors import (
    Conflict,
    ContainerStartError,
    DockyardError,
    InvalidArgument,
    NotFound,
    NotModified,
    ResourceError,
    RuntimeFailure,
)
from ..linux import cgroup_lock_warmer
from ..models import Container
from ..timestamps import now_rfc3339
from .container_context import ContainerContext
from .live import Live
from .processes import DRAIN_TIMEOUT, launcher, pure_cgroup_v2, wait_exit

log = logging.getLogger(__name__)


class ContainerRunner:
    """Starts containers, watches their exits and applies restart policies.

    Lock discipline: a container's `lock` guards its state; `starting` is set under it
    before the launch and cleared under it after, so a stop or remove waits for a start
    in progress. Nothing is launched, waited for or detached while holding the lock.
    `auto_remove` is the remove operation's, given at construction.
    """

    def __init__(self, ctx: ContainerContext, auto_remove: Callable[[Live], None]) -> None:
        self._ctx = ctx
        self._auto_remove = auto_remove

    def start(self, ref: str) -> None:
        """NotModified if running; ContainerStartError if the process cannot start."""
        live = self._ctx.registry.lookup(ref)
        if not live.c.state.running:
            try:
                self._ctx.networks.resolve_links(live.c)
            except DockyardError:
                # As dockerd: refused before anything ran, so no exit is recorded (a waiting
                # `docker run` reports the start error alone), and --rm still removes it.
                if live.c.host_config.get("AutoRemove"):
                    self._auto_remove(live)
                raise
        self.run(live, manual=True)

    def run(self, live: Live, manual: bool, from_policy: bool = False) -> None:
        ctx = self._ctx
        c = live.c
        cgroup_lock_warmer.warmer().kick()   # before the process's cgroup move: see the module
        ctx.networks.await_ready()
        with live.lock:
            if from_policy and not c.state.restarting:
                return   # a stop, kill or remove cancelled the restart after its timer fired
            if live.removing or live.removed:
                raise Conflict(f"container {c.id} is marked for removal and cannot be started")
            if c.state.running or live.starting:
                raise NotModified(f"container {c.id} is already running")
            if live.copying:
                # Its upper dir is mounted by the copy's helper; two overlays on one upper dir
                # are undefined behaviour in overlayfs.
                raise Conflict(f"container {c.id} cannot start while files are copied into it")
            if live.restart_timer is not None:
                live.restart_timer.cancel()
                live.restart_timer = None
            live.starting = True
            if manual:
                live.stopped_by_user = False
                c.restart_count = 0
                live.backoff.reset()
        ctx.execs.forget(c.id)
        with live.lock:
            c.exec_ids = []
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
            ctx.health.on_start(live)
            ctx.save_state(live)
            live.changed.notify_all()
        threading.Thread(target=self._watch, args=(live, proc, spec), name=f"watch-{c.id[:12]}",
                         daemon=True).start()
        for m in c.mounts:
            if m.get("Type") == "volume":
                ctx.events.publish("volume", "mount", m["Name"], {
                    "container": c.id, "destination": m["Destination"], "driver": "local",
                    "propagation": "", "read/write": str(m["RW"]).lower()})
        ctx.events.container(c, "start")

    def _start_failed(self, live: Live, err: BaseException) -> None:
        c = live.c
        self._ctx.networks.detach(c.id, "network detach after failed start")
        self._ctx.volumes.store.release(c.id)
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
            self._ctx.save_state(live)
            live.changed.notify_all()
        if c.host_config.get("AutoRemove"):
            self._auto_remove(live)

    def _launch(self, live: Live) -> tuple[ContainerSpec, Any]:
        """Everything between "start" and a running process: layers, mounts, network, stdio."""
        ctx = self._ctx
        c = live.c
        cfg, hc = c.config, c.host_config
        try:
            image = ctx.images.get(c.image_id)
        except NotFound:
            raise ContainerStartError(f"image {c.image_id} of container {c.name} was removed") from None
        lower = ctx.images.layer_dirs(image)
        cdir = ctx.store.dir(c.id)
        upper, work = cdir / "diff", cdir / "work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        mounts = self._resolve_mounts(c)
        attachment = ctx.networks.attach(c, cc.port_mappings(cfg, hc))
        with live.lock:
            c.network = attachment
        link_hosts, live.link_env = (ctx.networks.resolve_links(c) if attachment.mode == "bridge"
                                     else ("", []))
        etc_files = ctx.networks.etc_files(c, attachment, link_hosts, cdir)
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
            namespaces=namespace_modes.resolve(hc, ctx.donor, cdir / "shm", pure_cgroup_v2()),
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
        proc = launcher().launch(spec, stdio, console=tty, console_size=live.hub.size)
        live.hub.run_started(proc.take_console())
        return spec, proc

    def _resolve_mounts(self, c: Container) -> list[BindMount | TmpfsMount]:
        volumes = self._ctx.volumes
        volume_by_target = {m["Destination"]: m.get("Name", "") for m in c.mounts if m.get("Type") == "volume"}
        result: list[BindMount | TmpfsMount] = []
        requests = volumes_from.at_start(parse_mounts(c.config, c.host_config), c.mounts, c.host_config)
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
                vol, _ = volumes.created(name or None, anonymous=not m.source)
                # A volume with driver options is mounted (tmpfs, bind ...) while in use.
                result.append(BindMount(volumes.store.acquire(vol.name, c.id), m.target, m.readonly))
            else:
                result.append(TmpfsMount(m.target, m.options))
        return result

    def _watch(self, live: Live, proc: Any, spec: ContainerSpec) -> None:
        """Waits for the container's first process, then records the exit and applies policies."""
        ctx = self._ctx
        c = live.c
        try:
            code = wait_exit(proc)
        except Exception as err:   # noqa: BLE001 - never lose the exit bookkeeping
            log.error("waiting for %s failed: %s", c.id[:12], err)
            code = 255
        live.hub.wait_drained(DRAIN_TIMEOUT)
        try:
            oom = bool(proc.oom_killed())
        except Exception:  # noqa: BLE001 - an unreadable OOM flag must not lose the exit
            oom = False
        ctx.networks.detach(c.id)
        try:
            launcher().cleanup(spec)
        except Exception as err:  # noqa: BLE001 - cleanup is best effort; the exit is recorded anyway
            log.warning("cleanup of %s failed: %s", c.id[:12], err)
        ctx.volumes.store.release(c.id)
        policy = RestartPolicy.from_host_config(c.host_config)
        auto_remove = bool(c.host_config.get("AutoRemove"))
        with live.lock:
            ran_for = time.monotonic() - live.started_mono
            st = c.state
            st.running, st.paused, st.pid = False, False, 0
            st.exit_code, st.oom_killed = code, oom
            ctx.health.on_stop(live)
            st.finished_at = now_rfc3339()
            c.network = None
            live.process = None
            restart = (not ctx.shutting_down and not live.removing
                       and policy.should_restart(code, c.restart_count, live.stopped_by_user))
            st.status = "restarting" if restart else "exited"
            st.restarting = restart
            live.exit_seq += 1
            if not (auto_remove and not restart):
                ctx.save_state(live)
            # Events go out before anyone can observe the new state (publish never blocks).
            for m in c.mounts:
                if m.get("Type") == "volume":
                    ctx.events.publish("volume", "unmount", m["Name"], {"container": c.id, "driver": "local"})
            ctx.events.container(c, "die", exitCode=code)
            if oom:
                ctx.events.container(c, "oom")
            live.changed.notify_all()
            if restart:
                delay = live.backoff.next_delay(ran_for)
                timer = threading.Timer(delay, self._policy_restart, args=(live,))
                timer.daemon = True
                live.restart_timer = timer
                timer.start()
        if auto_remove and not restart and not live.removing:
            self._auto_remove(live)

    def _policy_restart(self, live: Live) -> None:
        with live.lock:
            if live.restart_timer is None or live.removing or live.removed or self._ctx.shutting_down:
                return
            live.restart_timer = None
            live.c.restart_count += 1
        try:
            self.run(live, manual=False, from_policy=True)
            self._ctx.events.container(live.c, "restart")
        except NotModified:
            pass
        except DockyardError as err:
            log.warning("restart of %s failed: %s", live.c.name, err)
