"""A real OpenSSH sshd on 127.0.0.1 for tests: temp host key, key-only auth.

It is the same OpenSSH the guest image runs, configured like the guest
(root by key only, AuthorizedKeysFile in a fixed file, stream-local
forwarding on), so the SSH link is tested against the real protocol peer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import free_port, stop_process

SSHD = "/usr/sbin/sshd"


@dataclass
class RunningSshd:
    """A started sshd: where it listens, its pinned host key, the client key."""

    host: str
    port: int
    host_key_line: str
    client_key_path: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def session_pids(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of the listener)."""
        pids: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # Field 4 (after the parenthesised command) is the parent pid.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid:
                pids.append(int(entry))
        return pids

    def kill_sessions(self) -> int:
        """SIGKILL every live SSH connection's server process; returns how many."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def log(self) -> str:
        """The sshd log so far (useful in assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Terminate the listener and all its sessions."""
        self.kill_sessions()
        stop_process(self.process)



def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dockyard-test", "-f", str(path)],
        check=True,
    )
    # The pinned form is "type base64" without the comment.
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def start_sshd(base: Path, extra_config: str = "", timeout: float = 15.0) -> RunningSshd:
    """Start `sshd -D` on a free port with keys and config under `base`."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    host_key = base / "ssh_host_ed25519_key"
    client_key = base / "client_ed25519"
    host_line = _keygen(host_key)
    client_line = _keygen(client_key)
    authorized = base / "authorized_keys"
    authorized.write_text(client_line + "\n")
    os.chmod(authorized, 0o600)
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"""
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
# The temp dir lives under world-writable /tmp, which StrictModes rejects.
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
Subsystem sftp internal-sftp
LogLevel VERBOSE
{extra_config}
"""
    )
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
    log = base / "sshd.log"
    with open(log, "wb") as log_file:   # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    running = RunningSshd("127.0.0.1", port, host_line, client_key, config, log, proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {running.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return running
        except OSError:
            pass
        if time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(f"sshd did not answer on port {port}: {running.log()}")
        time.sleep(0.05)  # polling for readiness with a deadline, not synchronising
