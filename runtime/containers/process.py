"""Start container processes: namespaces, rootfs, cgroups, user, capabilities, exec.

Speed matters (the engine starts a container per `docker run`), so nothing
here starts a Python interpreter and there is a single fork per process:

    engine thread: unshare(CLONE_NEWPID)        (per thread: affects only its children)
                   ──fork──▶ pid 1 of the container
                   setns(own pid namespace)     (the thread is back to normal)
    child:         setns(net) or unshare(mnt, uts, ipc [, net]); stdio, setsid;
                   overlay rootfs + pivot_root; hostname; user; cgroups;
                   capabilities and seccomp; execve

The container process is the engine's direct child, so `wait()` is a plain
waitpid and a pidfd pins its identity for signals. The child reports setup
failures through a close-on-exec pipe; a successful execve closes it with
nothing written, which is how `launch` knows the command is running.
`exec_in` is the same shape: the thread enters the container's pid namespace
for the fork, and the child joins its other namespaces and cgroups.

With a TTY, `launch(..., console=True)` does what runc does with a console
socket: the child opens a pty in the container's own devpts (after mounting it),
makes the slave its stdio, controlling terminal and /dev/console, and sends the
master back over a socketpair made before the fork (SCM_RIGHTS), so the process
sees /dev/pts/0 as under Docker.

The children are forks of a multi-threaded process: between fork and exec they
only make syscalls (os.*, ctypes) and never log, print or take a lock. What runs
there lives in `process_child` (the launch- and exec-specific steps below, the
`container_init` and `exec_init` closures, are the only child code left here and
keep the same rule). The seccomp filter is compiled in the parent
(`seccomp_filter.program_for`, cached); the child only installs the ready BPF program.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from ..errors import Conflict, ContainerStartError, InvalidArgument, RuntimeFailure
from ..linux import cgroups
from ..linux import syscalls as sc
from . import cgroup_mounts
from .device_rules import allow_rules
from .process_child import (
    EXIT_START_FAILED,
    NO_CGROUP_MESSAGE,
    ChildPipes,
    ExecPlan,
    StartFailure,
    apply_sysctls,
    finish_and_exec,
    loopback_up,
    open_namespace,
    os_error_text,
    run_child,
    setup_stdio,
    use_console,
)
from .rootfs import RootfsError, resolve_in_root, setup_rootfs
from .security import seccomp_filter
from .spec import ContainerSpec, ProcessSpec, SharedNamespaces, Stdio

log = logging.getLogger(__name__)

# Where each container's root is mounted, inside its own private mount
# namespace; one shared empty directory serves every container.
ROOTFS_MOUNTPOINT = Path("/run/dockyard/rootfs")

# The pid namespace is entered at fork; the mount namespace last (it changes the root).
_NAMESPACES_TO_JOIN = (("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
                       ("net", sc.CLONE_NEWNET), ("cgroup", sc.CLONE_NEWCGROUP),
                       ("mnt", sc.CLONE_NEWNS))
# _spawn's "pid namespace to join" for --pid host: fork in the engine's own.
HOST_PID_NAMESPACE = -1

# Our own pid namespace, to switch a thread back after forking into another.
_OWN_PID_NAMESPACE = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


class ContainerProcess:
    """A running container init (from `launch`) or exec'd process (from `exec_in`).

    `pid` is the process's host pid and a child of the engine process, which
    `wait()` reaps. Safe to use from several threads: `signal()` never waits
    for `wait()`.
    """

    def __init__(self, pid: int, cgroup: cgroups.ContainerCgroup, oom_baseline: int = 0,
                 console: int | None = None) -> None:
        self.pid = pid
        self.cgroup = cgroup
        self._oom_baseline = oom_baseline
        self._console = console
        self._wait_lock = threading.Lock()     # one waitpid at a time
        self._state_lock = threading.Lock()    # exit code and pidfd
        self._exit_code: int | None = None
        # Our own unreaped child, so the pid cannot be recycled before this
        # pidfd pins it; signals through it can never hit another process.
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None                 # kernel before 5.3: plain kill()
        self._alive = True

    def wait(self) -> int:
        """Block until the process exits; Docker's exit code (the code, or 128+signal)."""
        code = self._reap(0)
        assert code is not None, "a blocking waitpid returns only once the process has exited"
        return code

    def poll(self) -> int | None:
        """The exit code if the process has exited, else None (does not block)."""
        return self._reap(os.WNOHANG)

    def _reap(self, flags: int) -> int | None:
        if self._exit_code is not None:
            return self._exit_code
        with self._wait_lock:
            if self._exit_code is None:
                pid, status = os.waitpid(self.pid, flags)
                if pid == 0:
                    return None
                with self._state_lock:
                    self._exit_code = _docker_exit_code(status)
                    self._alive = False
                    self._close_pidfd()
            return self._exit_code

    @property
    def exit_code(self) -> int | None:
        """Docker's exit code once wait() or poll() saw the exit, else None."""
        return self._exit_code

    def signal(self, sig: int) -> bool:
        """Send `sig` to the process; False if it has already exited."""
        with self._state_lock:
            if not self._alive:
                return False
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, sig)
                else:
                    os.kill(self.pid, sig)
            except ProcessLookupError:
                return False
            return True

    def take_console(self) -> int | None:
        """The pty master of a `launch(..., console=True)`, once; the caller owns and closes it."""
        console, self._console = self._console, None
        return console

    def oom_killed(self) -> bool:
        """Whether the container's memory cgroup OOM-killed a process since this start."""
        return cgroups.oom_kill_count(self.cgroup) > self._oom_baseline

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __repr__(self) -> str:
        return f"ContainerProcess(pid={self.pid}, exit_code={self._exit_code})"


# ---------------------------------------------------------------- public API


def launch(spec: ContainerSpec, stdio: Stdio,
           rootfs_mountpoint: Path = ROOTFS_MOUNTPOINT, *, console: bool = False,
           console_size: tuple[int, int] | None = None) -> ContainerProcess:
    """Start the container's first process; returns once it has exec'd.

    With `console` and a TTY process, the terminal is a new pty of the container's
    own devpts (sized `console_size`, rows and columns, when given): `stdio` only
    serves during setup, and `take_console()` on the result gives the master.
    Raises ContainerStartError (exit_code 127/126/128) when the process cannot start.
    """
    want_console = console and spec.process.tty
    size = console_size if console_size and console_size[0] > 0 and console_size[1] > 0 else None
    plan = _plan(spec, spec.process)
    shared = spec.namespaces
    cg = cgroups.container_cgroup(spec.id)
    try:
        cgroups.create(cg, spec.limits, privileged=spec.process.privileged,
                       device_rules=allow_rules(spec.devices, spec.device_rules))
        plan.cgroup_view = cgroup_mounts.plan(cgroups.host_layout(), cg, shared.private_cgroupns,
                                              spec.process.privileged)
        if shared.shm_own_dir:
            _mount_shareable_shm(shared.shm_own_dir, spec.shm_size)
    except (RuntimeFailure, OSError):
        _quiet_cleanup(cg, shared)
        raise
    oom_baseline = cgroups.oom_kill_count(cg)
    os.makedirs(rootfs_mountpoint, exist_ok=True)
    mountpoint = os.fspath(rootfs_mountpoint)
    ns_flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS
    if not spec.host_network and not spec.netns_path:
        ns_flags |= sc.CLONE_NEWNET
    if not shared.ipc_host and not shared.ipc_path:
        ns_flags |= sc.CLONE_NEWIPC
    joins = [(path, flag) for path, flag in ((spec.netns_path, sc.CLONE_NEWNET),
                                             (shared.ipc_path, sc.CLONE_NEWIPC)) if path]

    def before_pivot(root: str) -> None:
        cgroup_mounts.mount_before_pivot(plan.cgroup_view, root, resolve_in_root)

    def container_init(pipes: ChildPipes) -> NoReturn:
        for path, flag in joins:
            fd = open_namespace(path)
            sc.setns(fd, flag)
            os.close(fd)
        sc.unshare(ns_flags)
        if ns_flags & sc.CLONE_NEWNET:
            loopback_up()
        apply_sysctls(spec.sysctls)
        setup_stdio(stdio, pipes)
        try:
            pty = setup_rootfs(spec, mountpoint, spec.process.tty, want_console, before_pivot)
        except RootfsError as err:
            raise StartFailure(str(err)) from None
        except OSError as err:
            raise StartFailure(f"error mounting the container's filesystem: {os_error_text(err)}") from None
        if pty is not None:
            use_console(pipes, *pty, size)
        if spec.hostname:
            sc.sethostname(spec.hostname)
        if spec.domainname:
            sc.setdomainname(spec.domainname)
        finish_and_exec(plan, pipes)

    try:
        pid_ns = _pid_namespace_to_join(shared)
    except StartFailure as err:
        _quiet_cleanup(cg, shared)
        raise Conflict(str(err)) from None
    try:
        pid, master = _spawn(stdio, pid_ns, container_init, cg.procs_files(), want_console)
    except (ContainerStartError, RuntimeFailure):
        _quiet_cleanup(cg, shared)
        raise
    finally:
        if pid_ns is not None and pid_ns != HOST_PID_NAMESPACE:
            os.close(pid_ns)
    log.debug("container %s started as pid %d", spec.id[:12], pid)
    return ContainerProcess(pid, cg, oom_baseline, master)


def exec_in(container: ContainerProcess | int, spec: ContainerSpec, process: ProcessSpec,
            stdio: Stdio) -> ContainerProcess:
    """Run `process` inside a running container (its namespaces and cgroups)."""
    if isinstance(container, ContainerProcess) and container.exit_code is not None:
        raise Conflict(f"container {spec.id[:12]} is not running")
    target = container.pid if isinstance(container, ContainerProcess) else int(container)
    plan = _plan(spec, process)
    cg = cgroups.container_cgroup(spec.id)
    try:
        pid_ns = open_namespace(f"/proc/{target}/ns/pid")
    except StartFailure:
        raise Conflict(f"container {spec.id[:12]} is not running") from None

    def exec_init(pipes: ChildPipes) -> NoReturn:
        fds = [(open_namespace(f"/proc/{target}/ns/{kind}"), flag) for kind, flag in _NAMESPACES_TO_JOIN]
        for fd, flag in fds:
            sc.setns(fd, flag)
            os.close(fd)
        setup_stdio(stdio, pipes)
        finish_and_exec(plan, pipes)

    try:
        pid, _ = _spawn(stdio, pid_ns, exec_init, [p for p in cg.procs_files() if p.exists()])
    finally:
        os.close(pid_ns)
    return ContainerProcess(pid, cg, cgroups.oom_kill_count(cg))


def cleanup(spec: ContainerSpec) -> None:
    """Remove the container's cgroups and shareable /dev/shm after it exited (kills leftovers). Idempotent."""
    cgroups.remove(cgroups.container_cgroup(spec.id))
    if spec.namespaces.shm_own_dir:
        _unmount_shareable_shm(spec.namespaces.shm_own_dir)


def container_pids(spec: ContainerSpec) -> list[int]:
    """Host pids of every process in the container, for `docker top`."""
    return cgroups.pids(cgroups.container_cgroup(spec.id))


# ---------------------------------------------------------------- parent side


def _plan(spec: ContainerSpec, process: ProcessSpec) -> ExecPlan:
    if not process.args:
        raise InvalidArgument("no command specified")
    last_cap = sc.last_capability()
    try:
        keep = ((1 << (last_cap + 1)) - 1 if process.privileged
                else sc.capability_mask(process.capabilities))
    except ValueError as err:
        raise InvalidArgument(str(err)) from None
    program = (seccomp_filter.program_for(process.seccomp, process.capabilities)
               if process.seccomp is not None else None)
    return ExecPlan(process=process, keep_caps=keep, last_cap=last_cap, seccomp=program)


def _pid_namespace_to_join(shared: SharedNamespaces) -> int | None:
    """For _spawn: None (a new pid namespace), HOST_PID_NAMESPACE, or an open namespace fd."""
    if shared.pid_host:
        return HOST_PID_NAMESPACE
    if shared.pid_path:
        return open_namespace(shared.pid_path)
    return None


def _mount_shareable_shm(directory: str, size: int) -> None:
    """--ipc shareable: /dev/shm is a tmpfs on the host, so joiners can bind the same one."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.ismount(directory):
        return
    try:
        sc.mount("shm", directory, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 f"mode=1777,size={size}")
    except OSError as err:
        raise RuntimeFailure(f"cannot mount the shareable /dev/shm: {os_error_text(err)}") from None


def _unmount_shareable_shm(directory: str) -> None:
    # Joiners still running keep their own reference to the tmpfs; detach ours.
    if os.path.ismount(directory):
        try:
            sc.umount2(directory, sc.MNT_DETACH)
        except OSError as err:
            log.warning("cannot unmount %s: %s", directory, err)


def _fork_into_pid_namespace(join_fd: int | None) -> int:
    """os.fork() with the child in a new pid namespace (join_fd None) or in the given one.

    The pid namespace for children is per thread: only this thread switches,
    and it is switched back before returning, so the child is the container's
    pid 1 (or a member of its namespace) and the engine's direct child.
    HOST_PID_NAMESPACE (--pid host) forks without switching.
    """
    if join_fd == HOST_PID_NAMESPACE:
        return os.fork()
    if join_fd is None:
        sc.unshare(sc.CLONE_NEWPID)
    else:
        sc.setns(join_fd, sc.CLONE_NEWPID)
    try:
        pid = os.fork()
    except BaseException:
        sc.setns(_OWN_PID_NAMESPACE, sc.CLONE_NEWPID)
        raise
    if pid != 0:
        # Only the parent switches back (the child's namespace is fixed, and
        # an error here must never unwind the child into the engine's code).
        sc.setns(_OWN_PID_NAMESPACE, sc.CLONE_NEWPID)
    return pid


def _spawn(stdio: Stdio, join_pid_ns: int | None, child_main: Callable[[ChildPipes], NoReturn],
           cgroup_procs: list[Path], want_console: bool = False) -> tuple[int, int | None]:
    """Fork the process and wait until it has exec'd or reported a failure.

    Returns its pid and, with `want_console`, the pty master the child sent back.

    The parent moves the child into its cgroups while the child builds its
    root: the first write to a cgroup.procs waits for an RCU grace period
    (4-14 ms measured here), which would otherwise be the biggest part of a
    container start. The child waits for the sync byte before it execs.
    """
    errr, errw = os.pipe2(os.O_CLOEXEC)
    syncr, syncw = os.pipe2(os.O_CLOEXEC)
    # Python sockets are close-on-exec; SEQPACKET keeps the message after the child's end closes.
    console_r, console_w = (socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                            if want_console else (None, None))
    try:
        pid = _fork_into_pid_namespace(join_pid_ns)
    except OSError as err:
        for fd in (errr, errw, syncr, syncw):
            os.close(fd)
        for sock in (console_r, console_w):
            if sock is not None:
                sock.close()
        raise RuntimeFailure(f"cannot start the container process: {os_error_text(err)}") from None
    if pid == 0:
        run_child(ChildPipes(errw, syncr, console_w), stdio, child_main)
    os.close(errw)
    os.close(syncr)
    if console_w is not None:
        console_w.close()
    cgroup_error: Exception | None = None
    try:
        try:
            for procs in cgroup_procs:
                cgroups.add_process(procs, pid)
            os.write(syncw, b"1")
        except (RuntimeFailure, OSError) as err:
            # Without the sync byte the child gives up; it may also have failed first.
            cgroup_error = err
        finally:
            os.close(syncw)
        chunks = []
        while chunk := os.read(errr, 65536):
            chunks.append(chunk)
        error = _parse_error(b"".join(chunks))
        master = None
        if console_r is not None and error is None and cgroup_error is None:
            master = _receive_console(console_r)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(errr)
        if console_r is not None:
            console_r.close()    # a master still queued in it is closed with it
    if error is None and cgroup_error is None:
        return pid, master
    os.waitpid(pid, 0)
    if error is not None and error[1] != NO_CGROUP_MESSAGE:
        raise ContainerStartError(error[1], error[0])
    raise ContainerStartError(f"cannot start the container: {cgroup_error}", EXIT_START_FAILED)


def _receive_console(sock: socket.socket) -> int:
    """The pty master the child sent before it exec'd (already queued: never blocks)."""
    _, ancdata, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(4), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = [fd for level, kind, data in ancdata if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
           for (fd,) in struct.iter_unpack("i", data[:len(data) - len(data) % 4])]
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise RuntimeFailure("cannot start the container: its terminal was not handed over")
    return fds[0]


def _parse_error(data: bytes) -> tuple[int, str] | None:
    if len(data) < 6:
        return None
    (length,) = struct.unpack("I", data[1:5])
    body = data[5:5 + length]
    return body[0], body[1:].decode("utf-8", "replace")


def _quiet_cleanup(cg: cgroups.ContainerCgroup, shared: SharedNamespaces | None = None) -> None:
    try:
        cgroups.remove(cg)
    except RuntimeFailure as err:
        log.warning("%s", err)
    if shared is not None and shared.shm_own_dir:
        _unmount_shareable_shm(shared.shm_own_dir)


def _docker_exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
