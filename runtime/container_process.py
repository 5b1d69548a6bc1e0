"""Start container processes: namespaces, rootfs, cgroups, user, capabilities, exec.

Speed matters (the engine starts a container per `docker run`), so nothing
here starts a Python interpreter: the engine forks itself.

    engine ──fork──▶ A (reaper, host pid namespace)
                       unshare(mnt, uts, ipc, pid [, net]) or setns(net)
                       ──fork──▶ B (pid 1 of the container)
                                   stdio, setsid, rootfs + pivot_root, hostname,
                                   user, cgroups, capabilities, execve

A reports B's host pid and then just waits for B and exits with Docker's code
for B's status, so the engine can waitpid(A). B reports setup failures through
a close-on-exec pipe; a successful execve closes it with nothing written, which
is how `launch` knows the command is running. `exec_in` is the same shape:
C joins the container's namespaces, D becomes the exec'd process.

The children are forks of a multi-threaded process: between fork and exec they
only make syscalls (os.*, ctypes) and never log, print or take a lock.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import signal
import socket
import stat
import struct
import termios
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NoReturn

from . import cgroups
from . import linux_syscalls as sc
from .container_rootfs import RootfsError, setup_rootfs
from .container_spec import ContainerSpec, ProcessSpec, Stdio
from .container_user import UserLookupError, resolve_user
from .errors import ContainerStartError, InvalidArgument, RuntimeFailure

log = logging.getLogger(__name__)

# Where each container's root is mounted, inside its own private mount
# namespace; one shared empty directory serves every container.
ROOTFS_MOUNTPOINT = Path("/run/dockyard/rootfs")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
EXIT_START_FAILED = 128

_NAMESPACES_TO_JOIN = (("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
                       ("net", sc.CLONE_NEWNET), ("pid", sc.CLONE_NEWPID),
                       ("mnt", sc.CLONE_NEWNS))
# The reaper ignores these so a stray terminal or group signal cannot orphan the container.
_REAPER_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE)
_ALL_SIGNALS = tuple(s for s in signal.valid_signals()
                     if s not in (signal.SIGKILL, signal.SIGSTOP))
_SIOCSIFFLAGS = 0x8914
_IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40
_MAX_FD = os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 1 << 20

_REC_PID, _REC_ERROR = b"P", b"E"


class _StartFailure(Exception):
    """A setup step in the child failed; carries Docker's exit code for it."""

    def __init__(self, message: str, exit_code: int = EXIT_START_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class _ExecPlan:
    """Everything the child needs, computed in the parent so the child only makes syscalls."""

    process: ProcessSpec
    keep_caps: int
    last_cap: int
    cgroup_procs: list[str]


class ContainerProcess:
    """A running container init (from `launch`) or exec'd process (from `exec_in`).

    `pid` is the process's host pid; the engine's own child is the reaper,
    which `wait()` reaps. Safe to use from several threads.
    """

    def __init__(self, pid: int, reaper_pid: int, cgroup: cgroups.ContainerCgroup,
                 oom_baseline: int = 0) -> None:
        self.pid = pid
        self.reaper_pid = reaper_pid
        self.cgroup = cgroup
        self._oom_baseline = oom_baseline
        self._lock = threading.Lock()
        self._exit_code: int | None = None
        try:
            # A pidfd pins the identity: signal() can never hit a recycled pid.
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None

    def wait(self) -> int:
        """Block until the process exits; Docker's exit code (the code, or 128+signal)."""
        with self._lock:
            if self._exit_code is None:
                _, status = os.waitpid(self.reaper_pid, 0)
                self._exit_code = _docker_exit_code(status)
                self._close_pidfd()
            return self._exit_code

    def poll(self) -> int | None:
        """The exit code if the process has exited, else None (does not block)."""
        with self._lock:
            if self._exit_code is None:
                pid, status = os.waitpid(self.reaper_pid, os.WNOHANG)
                if pid == 0:
                    return None
                self._exit_code = _docker_exit_code(status)
                self._close_pidfd()
            return self._exit_code

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    def signal(self, sig: int) -> bool:
        """Send `sig` to the process; False if it has already exited."""
        with self._lock:
            if self._exit_code is not None:
                return False
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, sig)
                else:
                    os.kill(self.pid, sig)
            except ProcessLookupError:
                return False
            return True

    def oom_killed(self) -> bool:
        """Whether the container's memory cgroup OOM-killed a process since this start."""
        return cgroups.oom_kill_count(self.cgroup) > self._oom_baseline

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __repr__(self) -> str:
        return f"ContainerProcess(pid={self.pid}, reaper_pid={self.reaper_pid}, exit={self._exit_code})"


# ---------------------------------------------------------------- public API


def launch(spec: ContainerSpec, stdio: Stdio,
           rootfs_mountpoint: Path = ROOTFS_MOUNTPOINT) -> ContainerProcess:
    """Start the container's first process; returns once it has exec'd.

    Raises ContainerStartError (exit_code 127/126/128) when the process cannot start.
    """
    plan = _plan(spec, spec.process)
    cg = cgroups.container_cgroup(spec.id)
    cgroups.create(cg, spec.limits, privileged=spec.process.privileged)
    plan.cgroup_procs = [os.fspath(p) for p in cg.procs_files()]
    oom_baseline = cgroups.oom_kill_count(cg)
    os.makedirs(rootfs_mountpoint, exist_ok=True)
    mountpoint = os.fspath(rootfs_mountpoint)
    ns_flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID
    if not spec.host_network and not spec.netns_path:
        ns_flags |= sc.CLONE_NEWNET

    def enter_namespaces() -> set[int]:
        if spec.netns_path:
            fd = os.open(spec.netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                sc.setns(fd, sc.CLONE_NEWNET)
            finally:
                os.close(fd)
        sc.unshare(ns_flags)
        if ns_flags & sc.CLONE_NEWNET:
            _loopback_up()
        return set()

    def container_init(errw: int) -> NoReturn:
        cgroup_fds = _open_cgroup_procs(plan.cgroup_procs)
        try:
            setup_rootfs(spec, mountpoint, spec.process.tty)
        except RootfsError as err:
            raise _StartFailure(str(err)) from None
        except OSError as err:
            raise _StartFailure(f"error mounting the container's filesystem: {_os_error_text(err)}") from None
        if spec.hostname:
            sc.sethostname(spec.hostname)
        if spec.domainname:
            sc.setdomainname(spec.domainname)
        _finish_and_exec(plan, cgroup_fds, errw)

    try:
        pid, reaper = _spawn(stdio, enter_namespaces, container_init)
    except ContainerStartError:
        _quiet_cleanup(cg)
        raise
    log.debug("container %s started: pid %d (reaper %d)", spec.id[:12], pid, reaper)
    return ContainerProcess(pid, reaper, cg, oom_baseline)


def exec_in(container: ContainerProcess | int, spec: ContainerSpec, process: ProcessSpec,
            stdio: Stdio) -> ContainerProcess:
    """Run `process` inside a running container (its namespaces and cgroups)."""
    target = container.pid if isinstance(container, ContainerProcess) else int(container)
    plan = _plan(spec, process)
    cg = cgroups.container_cgroup(spec.id)
    plan.cgroup_procs = [os.fspath(p) for p in cg.procs_files() if p.exists()]
    ns_paths = [(f"/proc/{target}/ns/{kind}", flag) for kind, flag in _NAMESPACES_TO_JOIN]
    cgroup_fds: list[int] = []

    def enter_namespaces() -> set[int]:
        try:
            fds = [(os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag) for path, flag in ns_paths]
        except FileNotFoundError:
            raise _StartFailure(f"container {spec.id[:12]} is not running") from None
        # The cgroup files are host paths: open them before entering the container's mounts.
        cgroup_fds.extend(_open_cgroup_procs(plan.cgroup_procs))
        for fd, flag in fds:
            sc.setns(fd, flag)
            os.close(fd)
        return set(cgroup_fds)

    def exec_init(errw: int) -> NoReturn:
        _finish_and_exec(plan, cgroup_fds, errw)

    pid, reaper = _spawn(stdio, enter_namespaces, exec_init)
    return ContainerProcess(pid, reaper, cg, cgroups.oom_kill_count(cg))


def cleanup(spec: ContainerSpec) -> None:
    """Remove the container's cgroups after it exited (kills leftovers). Idempotent."""
    cgroups.remove(cgroups.container_cgroup(spec.id))


def container_pids(spec: ContainerSpec) -> list[int]:
    """Host pids of every process in the container, for `docker top`."""
    return cgroups.pids(cgroups.container_cgroup(spec.id))


# ---------------------------------------------------------------- parent side


def _plan(spec: ContainerSpec, process: ProcessSpec) -> _ExecPlan:
    if not process.args:
        raise InvalidArgument("no command specified")
    last_cap = sc.last_capability()
    try:
        keep = ((1 << (last_cap + 1)) - 1 if process.privileged
                else sc.capability_mask(process.capabilities))
    except ValueError as err:
        raise InvalidArgument(str(err)) from None
    return _ExecPlan(process=process, keep_caps=keep, last_cap=last_cap, cgroup_procs=[])


def _spawn(stdio: Stdio, enter_namespaces: Callable[[], set[int]],
           child_main: Callable[[int], NoReturn]) -> tuple[int, int]:
    """Fork the reaper and, through it, the process; (process pid, reaper pid)."""
    errr, errw = os.pipe2(os.O_CLOEXEC)
    try:
        reaper = os.fork()
    except OSError:
        os.close(errr)
        os.close(errw)
        raise
    if reaper == 0:
        _reaper_main(errw, stdio, enter_namespaces, child_main)
    os.close(errw)
    chunks = []
    try:
        while chunk := os.read(errr, 65536):
            chunks.append(chunk)
    finally:
        os.close(errr)
    pid, error = _parse_reports(b"".join(chunks))
    if error is not None:
        os.waitpid(reaper, 0)
        raise ContainerStartError(error[1], error[0])
    if pid is None:
        _, status = os.waitpid(reaper, 0)
        raise RuntimeFailure(f"container launcher died before starting the process (status {status})")
    return pid, reaper


def _parse_reports(data: bytes) -> tuple[int | None, tuple[int, str] | None]:
    pid: int | None = None
    error: tuple[int, str] | None = None
    while data:
        kind, (length,) = data[:1], struct.unpack("I", data[1:5])
        body, data = data[5:5 + length], data[5 + length:]
        if kind == _REC_PID:
            pid = struct.unpack("i", body)[0]
        elif kind == _REC_ERROR and error is None:
            error = (body[0], body[1:].decode("utf-8", "replace"))
    return pid, error


def _quiet_cleanup(cg: cgroups.ContainerCgroup) -> None:
    try:
        cgroups.remove(cg)
    except RuntimeFailure as err:
        log.warning("%s", err)


def _docker_exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# ---------------------------------------------------------------- child side


def _report(errw: int, kind: bytes, body: bytes) -> None:
    # One write below PIPE_BUF is atomic, so records from A and B never interleave.
    os.write(errw, kind + struct.pack("I", len(body)) + body[:3000])


def _fail(errw: int, code: int, message: str) -> NoReturn:
    try:
        _report(errw, _REC_ERROR, bytes([code & 0xFF]) + message.encode("utf-8", "replace"))
    finally:
        os._exit(code)


def _os_error_text(err: OSError) -> str:
    if err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err.strerror or err)


def _close_fds_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep) + [_MAX_FD]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def _reaper_main(errw: int, stdio: Stdio, enter_namespaces: Callable[[], set[int]],
                 child_main: Callable[[int], NoReturn]) -> NoReturn:
    """Child A: never returns into the engine's code."""
    try:
        gc.disable()
        stdio_fds = {stdio.stdin, stdio.stdout, stdio.stderr}
        _close_fds_except(stdio_fds | {errw})
        signal.set_wakeup_fd(-1)
        for sig in _ALL_SIGNALS:
            try:
                signal.signal(sig, signal.SIG_IGN if sig in _REAPER_IGNORED else signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        os.setsid()
        keep_fds = enter_namespaces()
        child = os.fork()
        if child == 0:
            _process_main(errw, stdio, child_main, keep_fds)
        _report(errw, _REC_PID, struct.pack("i", child))
        for fd in stdio_fds | {errw}:
            os.close(fd)
        _, status = os.waitpid(child, 0)
        os._exit(_docker_exit_code(status))
    except _StartFailure as err:
        _fail(errw, err.exit_code, str(err))
    except OSError as err:
        _fail(errw, EXIT_START_FAILED, f"cannot create the container's namespaces: {_os_error_text(err)}")
    except BaseException as err:  # never let a forked child unwind into the engine
        _fail(errw, EXIT_START_FAILED, f"container launcher: {type(err).__name__}: {err}")


def _process_main(errw: int, stdio: Stdio, child_main: Callable[[int], NoReturn],
                  keep_fds: set[int]) -> NoReturn:
    """Child B (or D): set up stdio and session, then the caller's setup and exec."""
    try:
        for sig in _ALL_SIGNALS:
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in (stdio.stdin, stdio.stdout, stdio.stderr)]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        _close_fds_except({0, 1, 2, errw} | keep_fds)
        os.umask(0)
        os.setsid()
        child_main(errw)
    except _StartFailure as err:
        _fail(errw, err.exit_code, str(err))
    except OSError as err:
        _fail(errw, EXIT_START_FAILED, _os_error_text(err))
    except BaseException as err:
        _fail(errw, EXIT_START_FAILED, f"container init: {type(err).__name__}: {err}")


def _open_cgroup_procs(paths: list[str]) -> list[int]:
    fds = []
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise _StartFailure(f"cannot join cgroup {path}: {err.strerror}") from None
        # Keep clear of 0-2, which the stdio set-up overwrites.
        fds.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return fds


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", _IFF_UP_LOOPBACK_RUNNING))


def _find_program(name: str, env: list[str]) -> str:
    """Go's exec.LookPath inside the container's root: the first executable regular file in PATH."""
    if "/" in name:
        return name
    path_value = DEFAULT_PATH
    for item in env:
        if item.startswith("PATH="):
            path_value = item[5:]
    for directory in path_value.split(":"):
        candidate = f"{directory or '.'}/{name}"
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise _StartFailure(f'exec: "{name}": executable file not found in $PATH', EXIT_NOT_FOUND)


def _env_mapping(env: list[str]) -> dict[str, str]:
    # os.execve wants a mapping; a later duplicate wins, as in Docker.
    mapping: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key:
            mapping[key] = value
    return mapping


def _finish_and_exec(plan: _ExecPlan, cgroup_fds: list[int], errw: int) -> NoReturn:
    """In the container's root: tty, user, cwd, cgroups, capabilities, then execve."""
    process = plan.process
    if process.tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        user = resolve_user(process.user)
    except UserLookupError as err:
        raise _StartFailure(str(err)) from None
    env = list(process.env)
    if not any(item.startswith("HOME=") for item in env):
        env.append(f"HOME={user.home}")
    cwd = process.cwd or "/"
    try:
        os.makedirs(cwd, mode=0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as err:
        raise _StartFailure(f"cannot use working directory {cwd}: {err.strerror}") from None
    for fd in cgroup_fds:
        os.write(fd, b"0")
        os.close(fd)
    program = _find_program(process.args[0], env)

    bounding = plan.keep_caps
    for cap in range(plan.last_cap + 1):
        if not bounding >> cap & 1:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
    try:
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    if process.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    os.setgroups(user.groups)
    os.setgid(user.gid)
    os.setuid(user.uid)
    if user.uid == 0:
        _, permitted, _ = sc.capget()
        sc.capset(bounding & permitted, bounding & permitted, 0)
    os.umask(0o022)
    try:
        os.execve(program, process.args, _env_mapping(env))
    except OSError as err:
        name = process.args[0]
        if err.errno == 2:
            raise _StartFailure(f'exec: "{name}": stat {program}: no such file or directory',
                                EXIT_NOT_FOUND) from None
        if err.errno == 13:
            raise _StartFailure(f'exec: "{name}": permission denied', EXIT_CANNOT_EXECUTE) from None
        raise _StartFailure(f'exec: "{name}": {err.strerror}', EXIT_CANNOT_EXECUTE) from None
    raise AssertionError("unreachable")
