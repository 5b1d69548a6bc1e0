"""`dockyard machine ssh` and `dockyard machine reset-host-key`.

`machine ssh` runs in a clean login environment in the guest: the host's home
is usually shared at the same path (/root for root), so a shell with HOME
there would run the host's dotfiles. The guest's sshd sets HOME to a
guest-local directory (vmimage's sshd_config), and the command starts from an
empty environment (`env -i`) as a login shell reading only the guest's own
profile.

When the machine runs, the command goes over the supervisor's live SSH link
(desktop.machine.control_socket), so it costs one channel instead of a new
SSH connection; without the supervisor (or on a host without descriptor
passing) the CLI connects itself, with OpenSSH's `ssh` when installed. This
module is on `machine ssh`'s path: it imports little, and paramiko, libvirt
and the manager only on the fallback path.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desktop.machine.config import MachineState
    from desktop.machine.manager import MachineManager
    from desktop.paths import MachinePaths

# Matches SetEnv HOME in vmimage/guest_init/files/sshd_config.
GUEST_HOME = "/var/lib/dockyard/home"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def guest_command(words: list[str], term: str | None, home: str = GUEST_HOME) -> str:
    """The command line sshd runs: an empty environment and a login shell in the guest-local home.

    One word is a shell command line ("ls | wc -l"); several are argv words and
    keep their boundaries (sh -c 'echo hi'), unlike plain ssh. No words: an
    interactive login shell (`env -i ... bash -l`). A command runs in the shell
    sshd starts, after it has emptied its environment and read the login
    profile, as `bash -l -c` would: under TCG every exec costs ~0.1 s, and this
    saves two (env, bash) on `machine ssh CMD`.
    """
    env = [f"HOME={home}", f"PATH={GUEST_PATH}", "LANG=C.UTF-8", "USER=root", "LOGNAME=root",
           "SHELL=/bin/bash"]
    if term:
        env.append(f"TERM={term}")
    quoted = shlex.quote(home)
    enter = f"cd {quoted} 2>/dev/null || {{ mkdir -p {quoted} && cd {quoted}; }} || exit 255"
    if not words:
        return f"{enter}; exec env -i {' '.join(shlex.quote(e) for e in env)} /bin/bash -l"
    line = words[0] if len(words) == 1 else shlex.join(words)
    return (f"{enter}; for v in $(compgen -e); do unset \"$v\" 2>/dev/null; done; "
            f"export {' '.join(shlex.quote(e) for e in env)}; "
            # What bash -l reads: /etc/profile, then the first of the personal files (guest-local here).
            "[ -r /etc/profile ] && . /etc/profile; "
            "for f in ~/.bash_profile ~/.bash_login ~/.profile; do [ -r \"$f\" ] && { . \"$f\"; break; }; done; "
            f"eval {shlex.quote(line)}")


def cmd_ssh(args: argparse.Namespace) -> int:
    from desktop import paths

    machine = paths.MachinePaths.of(args.name)
    words = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    tty = not words and sys.stdin.isatty()
    check_pin(machine, args.name)
    command = guest_command(words, os.environ.get("TERM", "xterm") if tty else None)
    code = exec_over_supervisor(machine.control_socket, command, tty)
    if code is not None:
        return code
    return ssh_fallback(args.name, command, tty, interactive=not words)


def check_pin(machine: MachinePaths, name: str) -> None:
    """Refuse (naming both fingerprints) when the running guest's key is not the pinned one."""
    from desktop.machine.host_key_pin import check

    try:
        with open(machine.state) as f:
            running_key = str(json.load(f).get("host_key") or "")
    except (FileNotFoundError, ValueError):
        running_key = ""
    if running_key:
        check(machine.host_key_pin, name, running_key)


def exec_over_supervisor(control: Path, command: str, tty: bool) -> int | None:
    """Run `command` on a new channel of the supervisor's link; None when the supervisor is not reachable."""
    if not hasattr(socket, "send_fds"):
        return None   # Windows: no descriptor passing
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(control))
    except OSError:
        conn.close()
        return None
    with conn:
        request: dict[str, object] = {"op": "exec", "command": command, "tty": tty}
        if tty:
            size = os.get_terminal_size(sys.stdin.fileno())
            request.update(term=os.environ.get("TERM", "xterm"), cols=size.columns, rows=size.lines)
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        answer = _await_answer(conn) if not tty else _await_with_terminal(conn)
    if "error" in answer:
        from runtime.errors import RuntimeFailure

        raise RuntimeFailure(str(answer["error"]))
    return int(answer.get("exit", 255))


def _await_answer(conn: socket.socket) -> dict:
    buf = b""
    while b"\n" not in buf:
        data = conn.recv(4096)
        if not data:
            return {"error": "the machine supervisor closed the connection without an exit status"}
        buf += data
    return json.loads(buf.split(b"\n", 1)[0])


def _await_with_terminal(conn: socket.socket) -> dict:
    """Raw mode on the user's terminal while the guest's pty drives it; window resizes passed on."""
    import signal
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def resized(_signum: int, _frame: object) -> None:
        size = os.get_terminal_size(fd)
        try:
            conn.sendall(json.dumps({"op": "resize", "cols": size.columns, "rows": size.lines}).encode() + b"\n")
        except OSError:
            pass

    previous = signal.signal(signal.SIGWINCH, resized)
    tty.setraw(fd, termios.TCSADRAIN)   # keep what was typed ahead (TCSAFLUSH would drop it)
    try:
        return _await_answer(conn)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)


def ssh_fallback(name: str, command: str, tty: bool, interactive: bool) -> int:
    """The CLI's own SSH connection: OpenSSH's `ssh` if installed, else paramiko (commands only)."""
    import shutil
    import subprocess

    from desktop.machine.backend import VmState
    from desktop.machine.manager import MachineManager
    from runtime.errors import Conflict

    manager = MachineManager(name)
    state = manager.state()
    if manager.backend().state() is not VmState.RUNNING or not state.host_key:
        raise Conflict(f"machine {name!r} is not running: start it with `dockyard machine start`")
    ssh = shutil.which("ssh")
    if ssh:
        argv = [ssh, "-q", "-i", str(manager.key_path), "-p", str(state.ssh_port),
                "-o", f"UserKnownHostsFile={manager.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]
        argv += ["-t"] if tty else []
        argv += ["root@127.0.0.1", command]
        sys.stdout.flush()
        code = subprocess.call(argv)
        if code == 255:
            explain_refusal(manager, state)
        return code
    if interactive:
        raise Conflict("an interactive shell needs the OpenSSH `ssh` client on PATH")
    from desktop.ssh_link import SshLink

    link = SshLink("127.0.0.1", state.ssh_port, "root", manager.key_path, state.host_key)
    link.connect()
    try:
        code, out, err = link.run(command, timeout=3600)
    finally:
        link.close()
    sys.stdout.buffer.write(out)
    sys.stderr.buffer.write(err)
    return code


def explain_refusal(manager: MachineManager, state: MachineState) -> None:
    """After `ssh` failed: if the guest's host key is not the pinned one, say so (ssh -q said nothing)."""
    from desktop.ssh_link import HostKeyMismatch, LinkError, SshLink

    link = SshLink("127.0.0.1", state.ssh_port, "root", manager.key_path, state.host_key)
    try:
        link.connect(timeout=10)
    except HostKeyMismatch:
        raise
    except LinkError:
        return
    finally:
        link.close()


def cmd_reset_host_key(args: argparse.Namespace) -> int:
    """Forget the pinned guest host key; a running machine's current key is pinned in its place."""
    from desktop.machine.host_key_pin import fingerprint, read_pin, write_pin
    from desktop.machine.manager import MachineManager

    manager = MachineManager(args.name)
    manager.config()   # NotFound for a machine that does not exist
    pin = manager.paths.host_key_pin
    old = read_pin(pin)
    running_key = manager.state().host_key if manager.supervisor_pid() else ""
    if running_key:
        write_pin(pin, running_key)
        print(f"pinned the running machine's host key {fingerprint(running_key)}"
              + (f" (was {fingerprint(old)})" if old else ""), file=sys.stderr)
    else:
        pin.unlink(missing_ok=True)
        print(f"host key pin removed{f' (was {fingerprint(old)})' if old else ''}: the next start pins the key "
              "the guest announces", file=sys.stderr)
    return 0
