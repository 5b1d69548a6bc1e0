"""Paths and command lines shared by the shell stages and the Python init.

initramfs.py renders early.sh from these, so the agent and sshd are started
the same way whether early.sh or the Python init (re)starts them.
"""

RUN_DIR = "/run/dockyard"
AGENT_SOCKET = "/run/dockyard/docker.sock"
DATA_MOUNT = "/var/lib/dockyard"
ENGINE_ROOT = "/var/lib/dockyard/engine"
CODE_DIR = "/opt/dockyard/lib"
HOST_KEY = "/var/lib/dockyard/ssh/ssh_host_ed25519_key"
AUTHORIZED_KEYS = "/etc/dockyard/authorized_keys"

AGENT_ARGV = ["python3", "-S", "-m", "guest_agent.cli", "serve",
              "--socket", AGENT_SOCKET, "--root", ENGINE_ROOT]
AGENT_LOG = f"{RUN_DIR}/agent.log"
# -r: no re-exec of sshd for each connection. Under TCG the re-exec (loading
# sshd and its libraries, reading config and keys again) made a connect cost
# 0.7-1.3 s; without it 0.3-0.5 s (measured back to back in one guest). That
# connect is on the path of every start, and of a restore above all. The price,
# no fresh address-space layout per connection, is small for a daemon that only
# the host's loopback reaches (hostfwd on 127.0.0.1).
SSHD_ARGV = ["/usr/sbin/sshd", "-D", "-e", "-r", "-f", "/etc/dockyard/sshd_config"]
SSHD_LOG = f"{RUN_DIR}/sshd.log"
# Niceness of the init until ready (dockyard.initnice=N overrides it; measured).
INIT_NICE = 0


def agent_env(hostloop: str) -> dict[str, str]:
    """Environment of the agent besides PATH/HOME/LANG."""
    return {"PYTHONPATH": CODE_DIR, "PYTHONDONTWRITEBYTECODE": "1",
            "DOCKYARD_HOST_LOOPBACK": hostloop}
