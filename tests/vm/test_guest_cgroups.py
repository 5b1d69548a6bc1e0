"""Resource limits on the guest's real path: pure cgroup v2, through the docker CLI on the host.

Marked `vm` (slow: the session's bare guest boots under TCG). The docker CLI
talks to the guest's agent over the SSH link (HostSocket); the guest pulls the
test images from the host's registry through an SSH reverse forward. Every
limit is read back from inside the container, where it is the container's own
cgroup v2 (its cgroup namespace makes it /sys/fs/cgroup), and the memory and
pids limits are then hit for real.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from desktop.host_socket import ChannelPipe, HostSocket
from desktop.ssh_link import SshLink
from tests.support.agent import DOCKER_CLI

pytestmark = pytest.mark.vm

Docker = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class LimitCase:
    """A docker run option and what the container reads back from its cgroup v2 files."""

    options: tuple[str, ...]
    file: str
    expected: str


# Every limit checked from inside, one run each.
LIMITS = (
    LimitCase(("-m", "64m"), "memory.max", "67108864"),
    LimitCase(("-m", "64m", "--memory-swap", "96m"), "memory.swap.max", str(32 << 20)),
    LimitCase(("--pids-limit", "50"), "pids.max", "50"),
    LimitCase(("--cpus", "0.5"), "cpu.max", "50000 100000"),
    LimitCase(("--cpuset-cpus", "0"), "cpuset.cpus", "0"),
    LimitCase(("--cpuset-cpus", "0"), "cpuset.cpus.effective", "0"),
)


def _reverse_forward(link: SshLink, port: int) -> None:
    """Guest 127.0.0.1:port -> host 127.0.0.1:port over the link (tcpip-forward)."""
    def handler(chan, _origin, _server) -> None:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=30)
        upstream.settimeout(None)   # the pipe blocks on reads for as long as the stream lives
        ChannelPipe(upstream, chan).start()

    link.transport().request_port_forward("127.0.0.1", port, handler)


@pytest.fixture(scope="module")
def docker(vm, test_images, tmp_path_factory) -> Iterator[Docker]:
    """The docker CLI against the guest's engine, with the busybox test image pulled there."""
    base: Path = tmp_path_factory.mktemp("guest-cgroups")
    host_key = "ssh-ed25519 " + vm.ready["host_keys"]["ssh-ed25519"]
    link = SshLink("127.0.0.1", vm.guest.ssh_port, "root", vm.key_path, host_key)
    link.connect(timeout=60)
    hs = HostSocket(base / "run" / "docker.sock", link)
    hs.start()
    env = dict(os.environ, DOCKER_HOST=f"unix://{hs.socket_path}", DOCKER_CONFIG=str(base),
               DOCKER_CLI_HINTS="false")

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER_CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)

    _reverse_forward(link, int(test_images["busybox"].split("/")[0].rsplit(":", 1)[1]))
    try:
        pulled = run("pull", "-q", test_images["busybox"])
        assert pulled.returncode == 0, pulled.stderr
        yield run
    finally:
        hs.stop()
        link.close()


@pytest.fixture(scope="module")
def busybox(test_images) -> str:
    return test_images["busybox"]


def test_the_guest_is_pure_cgroup_v2(docker, busybox):
    # What the rest relies on, read the way Docker users see it.
    out = docker("run", "--rm", busybox, "sh", "-c",
                 "cat /proc/self/cgroup; awk '$5 == \"/sys/fs/cgroup\" {print $6, $(NF-2)}' /proc/self/mountinfo")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "0::/"                     # its own cgroup namespace: its cgroup is the root
    assert lines[1].startswith("ro,") and lines[1].endswith(" cgroup2")


@pytest.mark.parametrize("case", LIMITS, ids=lambda case: " ".join(case.options))
def test_each_limit_alone(docker, busybox, case):
    out = docker("run", "--rm", *case.options, busybox, "cat", f"/sys/fs/cgroup/{case.file}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == case.expected


def test_memory_hog_is_oom_killed(docker, busybox):
    # tail buffers a line that never ends: its memory grows until the cgroup's limit kills it.
    name = "guest-oom"
    try:
        out = docker("run", "--name", name, "-m", "32m", "--memory-swap", "32m", busybox,
                     "tail", "/dev/zero")
        assert out.returncode == 137, out.stderr
        state = docker("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name)
        assert state.stdout.split() == ["137", "true"]
    finally:
        docker("rm", "-f", name)


def test_fork_bomb_stops_at_the_pids_limit(docker, busybox):
    # A subshell forks 40 background sleeps under a limit of 20 pids: a fork fails once the
    # cgroup is full and ends the subshell. The rest uses shell builtins only (no fork).
    script = ("( i=0; while [ $i -lt 40 ]; do sleep 300 & i=$((i+1)); done ) 2>/dev/null; "
              "read current < /sys/fs/cgroup/pids.current; echo $current; "
              "while read key value; do echo $key $value; done < /sys/fs/cgroup/pids.events")
    out = docker("run", "--rm", "--pids-limit", "20", busybox, "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    current, *events = out.stdout.splitlines()
    assert 1 < int(current) <= 20           # the shell and the sleeps that did start
    assert int(dict(line.split() for line in events)["max"]) > 0, events


def test_host_cgroup_namespace_binds_the_containers_own_cgroup(docker, busybox):
    out = docker("run", "--rm", "--cgroupns", "host", "-m", "64m", busybox, "sh", "-c",
                 "cat /proc/self/cgroup /sys/fs/cgroup/memory.max; "
                 "awk '$5 == \"/sys/fs/cgroup\" {print $4, $6}' /proc/self/mountinfo")
    assert out.returncode == 0, out.stderr
    own, limit, mount = out.stdout.splitlines()
    assert own.startswith("0::/dockyard/") and limit == "67108864"
    root, options = mount.split()
    assert root == own[len("0::"):] and options.startswith("ro,")


# /dev/kmsg (1:11) is not among Docker's default devices; writing to it needs only the
# cgroup's "w", so it shows the v2 device filter (eBPF) with the extra rules at work.
WRITE_KMSG = "(echo dockyard-device-test > {0}) 2>/dev/null && echo written || echo denied"


@pytest.mark.parametrize("options, path, expected", [
    (("--device", "/dev/kmsg:/dev/kmsg:w"), "/dev/kmsg", "written"),
    (("--device", "/dev/kmsg:/dev/kmsg:r"), "/dev/kmsg", "denied"),
    ((), "/tmp/kmsg", "denied"),
    (("--device-cgroup-rule", "c 1:11 w"), "/tmp/kmsg", "written"),
], ids=["device-w", "device-r", "default", "rule"])
def test_device_rules_through_the_v2_filter(docker, busybox, options, path, expected):
    make = "mknod /tmp/kmsg c 1 11; " if path == "/tmp/kmsg" else ""
    out = docker("run", "--rm", *options, busybox, "sh", "-c", make + WRITE_KMSG.format(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
