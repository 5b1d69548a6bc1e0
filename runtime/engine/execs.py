"""The exec service: `docker exec` instances in running containers."""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from .. import path_scope
from ..containers import config as cc
from ..containers.detach_keys import parse_detach_keys
from ..containers.security.options import parse_security_options
from ..containers.spec import ProcessSpec
from ..containers.stdio import AttachSession, StreamHub
from ..errors import Conflict, ContainerStartError, InvalidArgument, NotFound
from ..linux import cgroup_lock_warmer
from ..models import Container, ExecInstance
from .events import EventService
from .processes import DRAIN_TIMEOUT, launcher, wait_exit
from .registry import ContainerRegistry

log = logging.getLogger(__name__)

# dockerd's exit code of an exec whose process could not be started (missing or not executable).
EXEC_START_FAILED = 126


class ExecRecord:
    """An exec instance plus its stdio hub and process."""

    def __init__(self, inst: ExecInstance) -> None:
        self.inst = inst
        self.hub = StreamHub(inst.tty, inst.attach_stdin, True, None)
        self.started = False
        self.done = threading.Event()


class ExecService:
    """Create, start, resize, wait and inspect exec instances.

    Lock discipline: `_lock` guards the `_execs` dict only. An exec's `started` flag and
    its container's exec ids are changed under the container's lock, which is never
    taken while holding `_lock`.
    """

    def __init__(self, registry: ContainerRegistry, events: EventService) -> None:
        self._registry = registry
        self._events = events
        self._lock = threading.Lock()
        self._execs: dict[str, ExecRecord] = {}

    def create(self, ref: str, cmd: list[str], env: list[str] | None = None, user: str = "",
               working_dir: str = "", tty: bool = False, attach_stdin: bool = False,
               attach_stdout: bool = True, attach_stderr: bool = True,
               privileged: bool = False, detach_keys: str = "") -> ExecInstance:
        """Conflict if the container is not running; InvalidArgument for malformed detach keys."""
        cgroup_lock_warmer.warmer().kick()   # the exec's process joins the cgroups at start
        live = self._registry.lookup(ref)
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
            self._execs[inst.id] = ExecRecord(inst)
        self._events.container(c, f"exec_create: {' '.join(cmd)}", execID=inst.id)
        return inst

    def forget(self, cid: str) -> None:
        """Exec records of a container's earlier runs go (at its next start, or its removal)."""
        with self._lock:
            for exec_id in [e for e, rec in self._execs.items() if rec.inst.container_id == cid]:
                del self._execs[exec_id]

    def discard(self, inst: ExecInstance) -> None:
        """Forget one exec at once (a health probe: dockerd lists none in ExecIDs)."""
        with self._lock:
            self._execs.pop(inst.id, None)
        live = self._registry.get(inst.container_id)
        if live is not None:
            with live.lock:
                if inst.id in live.c.exec_ids:
                    live.c.exec_ids.remove(inst.id)

    def _record(self, exec_id: str) -> ExecRecord:
        with self._lock:
            rec = self._execs.get(exec_id)
        if rec is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return rec

    def get(self, exec_id: str) -> ExecInstance:
        return self._record(exec_id).inst

    def start(self, exec_id: str, detach: bool = False) -> AttachSession | None:
        rec = self._record(exec_id)
        inst = rec.inst
        live = self._registry.lookup(inst.container_id)
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
            proc = launcher().exec_in(container_proc, spec, process, stdio)
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
        self._events.container(c, f"exec_start: {' '.join(inst.cmd)}", execID=inst.id)
        threading.Thread(target=self._watch, args=(rec, proc, c), daemon=True).start()
        return session

    def _watch(self, rec: ExecRecord, proc: Any, c: Container) -> None:
        try:
            code = wait_exit(proc)
        except Exception as err:  # noqa: BLE001 - never lose the exec's exit bookkeeping
            log.error("waiting for exec %s failed: %s", rec.inst.id[:12], err)
            code = 255
        rec.hub.wait_drained(DRAIN_TIMEOUT)
        rec.inst.exit_code = code
        rec.inst.running = False
        rec.done.set()
        self._events.container(c, "exec_die", execID=rec.inst.id, exitCode=code)

    def resize_tty(self, exec_id: str, height: int, width: int) -> None:
        rec = self._record(exec_id)
        if rec.inst.tty:
            rec.hub.resize(height, width)

    def wait(self, exec_id: str, timeout: float | None = None) -> int | None:
        """Block until the exec finished; its exit code (None on timeout)."""
        rec = self._record(exec_id)
        rec.done.wait(timeout)
        return rec.inst.exit_code
