"""`machine ssh` over the supervisor's live link: the control socket against a real sshd.

The client side runs as a real process (it hands its own stdin/stdout/stderr
to the supervisor), the server side is desktop.machine.control_socket on an
SshLink to the local sshd (same OpenSSH as the guest). The VM test in
tests/machine/test_vm_rough_edges.py runs the same through a booted machine.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.cli_machine_ssh import exec_over_supervisor, guest_command
from desktop.machine.control_socket import ControlSocket

REPO = Path(__file__).resolve().parents[2]
CLIENT = """
import sys
from desktop.cli_machine_ssh import exec_over_supervisor, guest_command
words = sys.argv[3:]
tty = sys.argv[2] == "tty"
command = guest_command(words, "xterm" if tty else None, home=sys.argv[1] + ".home")
code = exec_over_supervisor(sys.argv[1], command, tty)
sys.exit(99 if code is None else code)
"""


@pytest.fixture
def control(link, tmp_path):
    server = ControlSocket(tmp_path / "control.sock", link)
    server.start()
    yield server
    server.stop()


def _client(control: ControlSocket, *words: str, tty: bool = False, input: str | None = None):
    env = dict(os.environ, PYTHONPATH=str(REPO), CLIENT_ONLY_VARIABLE="leaks")
    return subprocess.run([sys.executable, "-c", CLIENT, str(control.path), "tty" if tty else "notty", *words],
                          input=input, capture_output=True, text=True, env=env, timeout=60)


def test_exit_status_stdout_and_stderr_are_kept_apart(control):
    out = _client(control, "echo to-out; echo to-err >&2; exit 7")
    assert (out.returncode, out.stdout, out.stderr) == (7, "to-out\n", "to-err\n")


def test_argv_words_keep_their_boundaries(control):
    out = _client(control, "printf", "%s|", "a b", "c")
    assert out.returncode == 0 and out.stdout == "a b|c|"


def test_stdin_reaches_the_command_and_its_eof_ends_it(control):
    out = _client(control, "cat; echo end", input="one\ntwo\n")
    assert out.returncode == 0 and out.stdout == "one\ntwo\nend\n"


def test_the_environment_is_clean_and_home_is_the_guest_one(control):
    out = _client(control, "env")
    names = {line.split("=", 1)[0] for line in out.stdout.splitlines()}
    assert out.returncode == 0, out.stderr
    assert f"HOME={control.path}.home" in out.stdout.splitlines()
    # Nothing from sshd's session (SSH_CLIENT, MAIL...) nor from the client process.
    assert "SSH_CLIENT" not in names and "CLIENT_ONLY_VARIABLE" not in names and "MAIL" not in names


def test_a_tty_session_gets_a_pty_of_the_terminal_size(control):
    pid, fd = pty.fork()
    if pid == 0:   # the child: the CLI on a terminal of 33 rows, 101 columns
        import fcntl
        import struct
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(sys.executable, [sys.executable, "-c", CLIENT, str(control.path), "tty",
                                  "tty; stty size; exit 5"])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:   # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 5, text
    assert "/dev/pts/" in text and "33 101" in text


def test_no_supervisor_means_the_fallback(tmp_path):
    assert exec_over_supervisor(tmp_path / "absent.sock", guest_command(["true"], None), False) is None
