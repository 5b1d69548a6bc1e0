"""--pid, --ipc and --cgroupns, and /sys/fs/cgroup in containers, through the real docker CLI,
each compared with Debian's dockerd on the same host (whatever its cgroup layout)."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.agent import http_request
from tests.support.side_by_side import Engines

# Mount point, options and file system type of /sys/fs/cgroup and everything below it.
CGROUP_MOUNTS = ("awk '$5 ~ \"^/sys/fs/cgroup\" {for (i = 7; $i != \"-\"; i++); print $4, $5, $6, $(i+1)}' "
                 "/proc/self/mountinfo | sort -k2")


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images) -> Engines:
    return Engines(agent, dockerd, test_images["busybox"])


def run(engines: Engines, *args: str) -> tuple[str, ...]:
    return ("run", "--rm", "--network", "none", *args[:-1], engines.image, "sh", "-c", args[-1])


def test_pid_host_shares_the_engines_pid_namespace(engines):
    outcome = engines.compare(*run(engines, "--pid", "host", "readlink /proc/self/ns/pid"))
    assert outcome.out.strip() == os.readlink("/proc/self/ns/pid")


def test_pid_container_joins_a_running_container(engines):
    try:
        for engine in (engines.ours, engines.reference):
            started = engine.docker("run", "-d", "--name", "pid-donor", "--network", "none", engines.image,
                                    "sleep", "1000")
            assert started.returncode == 0, started.stderr
        outcome = engines.compare(*run(engines, "--pid", "container:pid-donor", "tr '\\0' ' ' < /proc/1/cmdline"))
        assert outcome.out == "sleep 1000 "
        donor_ns = engines.ours.docker("exec", "pid-donor", "readlink", "/proc/self/ns/pid").stdout.strip()
        assert engines.ours.docker(*run(engines, "--pid", "container:pid-donor",
                                        "readlink /proc/self/ns/pid")).stdout.strip() == donor_ns
    finally:
        engines.cleanup("pid-donor")


def test_joining_a_stopped_or_missing_container_is_refused_as_dockerd_does(engines):
    try:
        for engine in (engines.ours, engines.reference):
            engine.docker("create", "--name", "ns-stopped", "--network", "none", engines.image, "true")
        for mode in ("--pid", "--ipc"):
            not_running = engines.compare(*run(engines, mode, "container:ns-stopped", "true"))
            assert not_running.code == 125 and "is not running" in not_running.error
            missing = engines.compare(*run(engines, mode, "container:ns-missing", "true"))
            assert missing.code == 125 and missing.error == "No such container: ns-missing"
    finally:
        engines.cleanup("ns-stopped")


def test_ipc_shareable_and_container_share_namespace_and_dev_shm(engines):
    try:
        for engine in (engines.ours, engines.reference):
            started = engine.docker("run", "-d", "--name", "ipc-donor", "--ipc", "shareable", "--network", "none",
                                    engines.image, "sleep", "1000")
            assert started.returncode == 0, started.stderr
        joiner = engines.compare(*run(engines, "--ipc", "container:ipc-donor",
                                      "echo shared > /dev/shm/note && grep ' /dev/shm ' /proc/self/mountinfo"
                                      " | cut -d' ' -f5,6,9-"))
        assert joiner.code == 0 and joiner.out.startswith("/dev/shm rw,nosuid,nodev,noexec")
        for engine in (engines.ours, engines.reference):
            donor = engine.docker("exec", "ipc-donor", "sh", "-c", "cat /dev/shm/note; readlink /proc/self/ns/ipc")
            note, donor_ns = donor.stdout.splitlines()
            assert note == "shared"
            joined = engine.docker(*run(engines, "--ipc", "container:ipc-donor", "readlink /proc/self/ns/ipc"))
            assert joined.stdout.strip() == donor_ns
    finally:
        engines.cleanup("ipc-donor")


def test_ipc_private_container_cannot_be_joined(engines):
    try:
        for engine in (engines.ours, engines.reference):
            engine.docker("run", "-d", "--name", "ipc-private", "--network", "none", engines.image, "sleep", "1000")
        outcome = engines.compare(*run(engines, "--ipc", "container:ipc-private", "true"))
        assert outcome.code == 125 and "non-shareable IPC" in outcome.error
    finally:
        engines.cleanup("ipc-private")


def test_ipc_host_and_none(engines):
    host = engines.compare(*run(engines, "--ipc", "host", "readlink /proc/self/ns/ipc; stat -c %d /dev/shm"))
    assert host.out.split() == [os.readlink("/proc/self/ns/ipc"), str(os.stat("/dev/shm").st_dev)]
    none = engines.compare(*run(engines, "--ipc", "none", "ls /dev; grep -c ' /dev/shm ' /proc/self/mountinfo"))
    assert "shm" not in none.out.split() and none.out.split()[-1] == "0"


def test_modes_are_stored_as_dockerd_stores_them(engines):
    try:
        for engine in (engines.ours, engines.reference):
            engine.docker("create", "--name", "ns-modes", "--network", "none", engines.image, "true")
            engine.docker("create", "--name", "ns-joiner", "--network", "none", "--pid", "container:ns-modes",
                          "--ipc", "container:ns-modes", engines.image, "true")
        fmt = "{{.HostConfig.PidMode}} {{.HostConfig.IpcMode}} {{.HostConfig.CgroupnsMode}}"
        assert engines.compare("inspect", "-f", fmt, "ns-modes").out == " private " + _default_cgroupns() + "\n"
        joiner = engines.compare("inspect", "-f", fmt, "ns-joiner").out.split()
        assert joiner[:2] == ["container:<ID>", "container:<ID>"]
    finally:
        engines.cleanup("ns-joiner", "ns-modes")


def test_bad_mode_values_get_a_400(engines):
    for field, value, message in (("PidMode", "bogus", "invalid PID mode: bogus"),
                                  ("IpcMode", "bogus", "invalid IPC mode: bogus"),
                                  ("CgroupnsMode", "bogus", "invalid cgroup namespace mode: bogus")):
        body = json.dumps({"Image": engines.image, "Cmd": ["true"],
                           "HostConfig": {field: value, "NetworkMode": "none"}}).encode()
        status, _, reply = engines.ours.request("POST", "/v1.41/containers/create", body,
                                                {"Content-Type": "application/json"})
        assert (status, json.loads(reply)["message"]) == (400, message)
    # dockerd 20.10 checks the cgroupns mode at create; the others only at start ("Invalid IPC mode").
    body = json.dumps({"Image": engines.image, "HostConfig": {"CgroupnsMode": "bogus"}}).encode()
    status, _, reply = http_request(engines.reference.socket, "POST", "/v1.41/containers/create", body,
                                    {"Content-Type": "application/json"})
    assert (status, json.loads(reply)["message"]) == (400, "invalid cgroup namespace mode: bogus")


def _pure_cgroup_v2() -> bool:
    with open("/proc/self/mountinfo") as f:
        types = {line.split(" - ")[1].split()[0] for line in f if " - " in line}
    return "cgroup2" in types and "cgroup" not in types


def _default_cgroupns() -> str:
    return "private" if _pure_cgroup_v2() else "host"


@pytest.mark.parametrize("mode", ["", "private", "host"])
def test_sys_fs_cgroup_is_mounted_as_dockerd_mounts_it(engines, mode):
    options = ("--cgroupns", mode) if mode else ()
    outcome = engines.each(*run(engines, *options, CGROUP_MOUNTS))
    ours, theirs = ([line.split(" ", 1)[1] if not _own_root(mode) else line for line in r.stdout.splitlines()]
                    for r in outcome)
    assert ours and ours == theirs, (outcome[0].stderr, outcome[1].stderr)
    assert all(" ro," in line for line in ours if " cgroup" in line)


def _own_root(mode: str) -> bool:
    # With its own cgroup namespace a container sees its cgroup as "/" (the same on both
    # engines); with the host's the root names the engine's own parent cgroup.
    return (mode or _default_cgroupns()) == "private"


def test_memory_limit_is_visible_inside_as_with_dockerd(engines):
    path = "/sys/fs/cgroup/memory.max" if _pure_cgroup_v2() else "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    outcome = engines.compare(*run(engines, "-m", "64m", f"cat {path}"))
    assert outcome.out == "67108864\n"


def test_private_cgroupns_shows_the_container_cgroup_as_root(engines):
    outcome = engines.compare(*run(engines, "--cgroupns", "private", "cut -d: -f3 /proc/self/cgroup | sort -u"))
    assert outcome.out == "/\n"
