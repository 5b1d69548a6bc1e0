"""The child side of a container process: everything between fork and execve.

`process` forks (see its docstring for the shape); the forked child runs
`run_child`, which calls the launch- or exec-specific step the parent passed,
which in turn uses the helpers here and ends in `finish_and_exec`.

The children are forks of a multi-threaded process: between fork and exec they
only make syscalls (os.*, ctypes) and never log, print or take a lock. So this
module has no logger, and everything the child needs is computed by the parent
beforehand (`ExecPlan`; the seccomp filter is compiled in the parent by
`seccomp_filter.program_for`, cached, and the child only installs the ready BPF
program). A failure is reported to the parent through a close-on-exec pipe as
one record (`_fail`); a successful execve closes it with nothing written.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import signal
import socket
import stat
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from ..linux import syscalls as sc
from . import cgroup_mounts, sysctls, ulimits
from .security import seccomp_filter
from .spec import ProcessSpec, Stdio
from .user import UserLookupError, resolve_groups, resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
EXIT_START_FAILED = 128

_SIOCSIFFLAGS = 0x8914
_IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40
_MAX_FD = os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 1 << 20

_REC_ERROR = b"E"
# The parent recognises this failure as its own (it could not write the cgroups).
NO_CGROUP_MESSAGE = "the engine could not place the process in its cgroups"


class StartFailure(Exception):
    """A setup step in the child failed; carries Docker's exit code for it."""

    def __init__(self, message: str, exit_code: int = EXIT_START_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ExecPlan:
    """Everything the child needs, computed in the parent so the child only makes syscalls."""

    process: ProcessSpec
    keep_caps: int
    last_cap: int
    cgroup_view: cgroup_mounts.CgroupView = field(default_factory=cgroup_mounts.CgroupView)  # container init only
    seccomp: seccomp_filter.SeccompProgram | None = None   # compiled in the engine, loaded by the child


@dataclass
class ChildPipes:
    """The child's ends of its two pipes (and console socket) to the parent."""

    errw: int     # close-on-exec: failures are written here; exec closes it empty
    syncr: int    # one byte arrives once the parent has put the child into its cgroups
    console: socket.socket | None = None   # close-on-exec: the pty master goes back here

    def keep(self) -> set[int]:
        fds = {self.errw, self.syncr}
        if self.console is not None:
            fds.add(self.console.fileno())
        return fds


def _fail(errw: int, code: int, message: str) -> NoReturn:
    """Report a failure to the parent and exit (the child's only way out besides exec)."""
    try:
        body = bytes([code & 0xFF]) + message.encode("utf-8", "replace")[:3000]
        os.write(errw, _REC_ERROR + struct.pack("I", len(body)) + body)
    finally:
        os._exit(code)


def os_error_text(err: OSError) -> str:
    if err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return str(err.strerror or err)


def _close_fds_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep) + [_MAX_FD]:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def run_child(pipes: ChildPipes, stdio: Stdio, child_main: Callable[[ChildPipes], NoReturn]) -> NoReturn:
    """The forked child: never returns into the engine's code."""
    errw = pipes.errw
    try:
        gc.disable()
        _close_fds_except({stdio.stdin, stdio.stdout, stdio.stderr, *pipes.keep()})
        signal.set_wakeup_fd(-1)
        sc.reset_all_signal_dispositions()
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        child_main(pipes)
    except StartFailure as err:
        _fail(errw, err.exit_code, str(err))
    except OSError as err:
        _fail(errw, EXIT_START_FAILED, f"cannot start the container process: {os_error_text(err)}")
    except BaseException as err:  # never let a forked child unwind into the engine
        _fail(errw, EXIT_START_FAILED, f"container init: {type(err).__name__}: {err}")


def setup_stdio(stdio: Stdio, pipes: ChildPipes) -> None:
    """Make the caller's fds 0, 1, 2, close everything else, start a new session."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in (stdio.stdin, stdio.stdout, stdio.stderr)]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    _close_fds_except({0, 1, 2, *pipes.keep()})
    os.umask(0)
    os.setsid()


def use_console(pipes: ChildPipes, master: int, slave: int, size: tuple[int, int] | None) -> None:
    """Make the container's own pty our stdio (the controlling terminal comes before exec)
    and send its master to the parent; like runc with a console socket."""
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)
    if size is not None:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    assert pipes.console is not None
    pipes.console.sendmsg([b"C"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", master))])
    pipes.console.close()
    pipes.console = None
    os.close(master)


def open_namespace(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StartFailure(f"namespace {path} does not exist (is the container running?)") from None


def _await_cgroups(syncr: int) -> None:
    """Block until the parent has put this process into the container's cgroups."""
    if os.read(syncr, 1) != b"1":
        raise StartFailure(NO_CGROUP_MESSAGE)
    os.close(syncr)


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", _IFF_UP_LOOPBACK_RUNNING))


def apply_sysctls(settings: dict[str, str]) -> None:
    try:
        sysctls.apply(settings)
    except OSError as err:
        raise StartFailure(f"cannot set sysctl: {os_error_text(err)}") from None


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
    raise StartFailure(f'exec: "{name}": executable file not found in $PATH', EXIT_NOT_FOUND)


def _env_mapping(env: list[str]) -> dict[str, str]:
    # os.execve wants a mapping; a later duplicate wins, as in Docker.
    mapping: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key:
            mapping[key] = value
    return mapping


def _install_seccomp(program: seccomp_filter.SeccompProgram) -> None:
    try:
        program.install()
    except OSError as err:
        raise StartFailure(f"cannot start the container process: {err.strerror}") from None


def finish_and_exec(plan: ExecPlan, pipes: ChildPipes) -> NoReturn:
    """In the container's root: tty, user, cwd, cgroups, capabilities, then execve."""
    process = plan.process
    if process.tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        user = resolve_user(process.user)
        if process.group_add:
            # As runc: the primary group leads the supplementary list, then the added ones.
            user.groups = list(dict.fromkeys([*(user.groups or [user.gid]),
                                              *resolve_groups(process.group_add)]))
    except UserLookupError as err:
        raise StartFailure(str(err)) from None
    env = list(process.env)
    if not any(item.startswith("HOME=") for item in env):
        env.append(f"HOME={user.home}")
    cwd = process.cwd or "/"
    try:
        os.makedirs(cwd, mode=0o755, exist_ok=True)
        os.chdir(cwd)
    except OSError as err:
        raise StartFailure(f"cannot use working directory {cwd}: {err.strerror}") from None
    _await_cgroups(pipes.syncr)
    try:
        # As Docker: with its own cgroup namespace the container sees its cgroup as the root.
        cgroup_mounts.enter_namespace(plan.cgroup_view)
    except OSError as err:
        raise StartFailure(f"cannot mount /sys/fs/cgroup: {os_error_text(err)}") from None
    try:
        # Never the engine's own OOM protection: the container's value (0 unless --oom-score-adj).
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(process.oom_score_adj))
    except OSError as err:
        if process.oom_score_adj:
            raise StartFailure(f"cannot set oom_score_adj: {os_error_text(err)}") from None
    try:
        ulimits.apply(process.rlimits)
    except (OSError, ValueError) as err:
        raise StartFailure(f"error setting rlimits: {err}") from None
    program = _find_program(process.args[0], env)

    bounding = plan.keep_caps
    for cap in range(plan.last_cap + 1):
        if not bounding >> cap & 1:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
    try:
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    seccomp = plan.seccomp
    if process.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    elif seccomp is not None:
        # As runc: without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it
        # goes in before setuid/capset drop it (the profile allows every call below).
        _install_seccomp(seccomp)
        seccomp = None
    os.setgroups(user.groups)
    os.setgid(user.gid)
    os.setuid(user.uid)
    if user.uid == 0:
        _, permitted, _ = sc.capget()
        sc.capset(bounding & permitted, bounding & permitted, 0)
    os.umask(0o022)
    if seccomp is not None:
        _install_seccomp(seccomp)   # with no_new_privs: as late as possible, as runc does
    try:
        os.execve(program, process.args, _env_mapping(env))
    except OSError as err:
        name = process.args[0]
        if err.errno == errno.ENOENT:
            raise StartFailure(f'exec: "{name}": stat {program}: no such file or directory',
                                EXIT_NOT_FOUND) from None
        if err.errno == errno.EACCES:
            raise StartFailure(f'exec: "{name}": permission denied', EXIT_CANNOT_EXECUTE) from None
        raise StartFailure(f'exec: "{name}": {err.strerror}', EXIT_CANNOT_EXECUTE) from None
    raise AssertionError("unreachable")
