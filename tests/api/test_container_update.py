"""`docker update` through the docker CLI, ours and dockerd's side by side.

Limits are read from inside the container (its own cgroup files, whichever
cgroup version the machine has), so what is compared is what the container is
held to, not only what inspect says.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.support.agent import http_request
from tests.support.side_by_side import Engines, normalised
from tests.support.waiting import poll

MIB = 1024 * 1024
# Each limit from v2's file, else v1's: the same script on both engines and any host.
READ_LIMITS = " ; ".join(
    f"echo {name}=$(cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/{v1} 2>/dev/null)"
    for name, v2, v1 in [
        ("memory", "memory.max", "memory/memory.limit_in_bytes"),
        ("cpu", "cpu.max", "cpu/cpu.cfs_quota_us"),
        ("pids", "pids.max", "pids/pids.max"),
        ("shares", "cpu.weight", "cpu/cpu.shares"),
        ("reservation", "memory.low", "memory/memory.soft_limit_in_bytes"),
    ])


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images):
    return Engines(agent, dockerd, test_images["busybox"])


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _run(engines: Engines, name: str, *options: str, cmd: tuple[str, ...] = ("sleep", "300")) -> None:
    for engine in (engines.ours, engines.reference):
        out = engine.docker("run", "-d", "--network", "none", "--name", name, *options, engines.image, *cmd)
        assert out.returncode == 0, out.stderr


def _limits(engine, name: str) -> str:
    out = engine.docker("exec", name, "sh", "-c", READ_LIMITS)
    assert out.returncode == 0, out.stderr
    return out.stdout


RESOURCES = "{{json .HostConfig.Memory}} {{json .HostConfig.MemorySwap}} {{json .HostConfig.NanoCpus}} " \
            "{{json .HostConfig.CpuShares}} {{json .HostConfig.PidsLimit}} {{json .HostConfig.MemoryReservation}} " \
            "{{json .HostConfig.RestartPolicy}}"


def test_limits_change_live_as_dockerd(engines):
    name = _name("upd-live")
    try:
        _run(engines, name, "-m", "64m", "--memory-swap", "128m")
        before = [_limits(e, name) for e in (engines.ours, engines.reference)]
        engines.compare("update", "-m", "100m", "--memory-swap", "300m", "--cpus", "0.5", "--cpu-shares", "512",
                        "--pids-limit", "50", "--memory-reservation", "20m", "--restart", "on-failure:3", name)
        after = [_limits(e, name) for e in (engines.ours, engines.reference)]
        assert after[0] == after[1]
        assert after[0] != before[0]
        assert f"memory={100 * MIB}" in after[0] or f"memory={100 * MIB}\n" in after[0], after[0]
        assert "pids=50" in after[0]
        engines.compare("inspect", "--format", RESOURCES, name)
        # Lifting limits again: -1 pids is "no limit" on both.
        engines.compare("update", "--pids-limit", "-1", name)
        assert [_limits(e, name) for e in (engines.ours, engines.reference)][0].count("pids=max") == 1
        engines.compare("inspect", "--format", RESOURCES, name)
    finally:
        engines.cleanup(name)


def test_update_of_a_stopped_container_applies_at_next_start(engines):
    name = _name("upd-stopped")
    try:
        _run(engines, name)
        for engine in (engines.ours, engines.reference):
            assert engine.docker("stop", "-t", "0", name).returncode == 0
        engines.compare("update", "-m", "80m", "--memory-swap", "160m", "--pids-limit", "40", name)
        engines.compare("inspect", "--format", RESOURCES, name)
        for engine in (engines.ours, engines.reference):
            assert engine.docker("start", name).returncode == 0
        limits = [_limits(e, name) for e in (engines.ours, engines.reference)]
        assert limits[0] == limits[1] and "pids=40" in limits[0]
    finally:
        engines.cleanup(name)


@pytest.mark.parametrize("create, update", [
    (["-m", "64m"], ["-m", "5m"]),                              # below the 6MB minimum
    (["-m", "64m"], ["-m", "200m"]),                            # above the stored memory+swap
    ([], ["-m", "100m"]),                                       # no swap limit to compare with
    (["--cpus", "1"], ["--cpu-period", "50000"]),
    (["--cpus", "1"], ["--cpu-quota", "20000"]),
    (["--cpu-quota", "20000"], ["--cpus", "0.5"]),
    ([], ["--cpus", "64"]),
    (["--rm"], ["--restart", "always"]),
    ([], ["--cpuset-cpus", "63"]),
])
def test_refused_updates_as_dockerd(engines, create, update):
    name = _name("upd-bad")
    try:
        _run(engines, name, *create)
        outcome = engines.compare("update", *update, name)
        assert outcome.code != 0 and outcome.error
        engines.compare("inspect", "--format", RESOURCES, name)   # nothing changed
    finally:
        engines.cleanup(name)


def test_missing_container(engines):
    outcome = engines.compare("update", "--cpus", "1", "no-such-container-here")
    assert outcome.code != 0


def test_memory_below_usage_is_refused_on_both(engines):
    name = _name("upd-usage")
    fill = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; touch /tmp/filled; sleep 300"
    try:
        _run(engines, name, "-m", "64m", "--memory-swap", "64m", cmd=("sh", "-c", fill))
        for engine in (engines.ours, engines.reference):
            poll(lambda engine=engine: engine.docker("exec", name, "test", "-e", "/tmp/filled").returncode == 0,
                 timeout=30, what="the container's memory filled")
        ours, theirs = engines.each("update", "-m", "10m", "--memory-swap", "10m", name)
        assert (ours.returncode, theirs.returncode) == (theirs.returncode, theirs.returncode)
        if theirs.returncode:
            assert "unable to set memory limit to 10485760" in normalised(ours).error
            assert "unable to set memory limit to 10485760" in normalised(theirs).error
            engines.compare("inspect", "--format", RESOURCES, name)   # the old limits are kept
    finally:
        engines.cleanup(name)


def test_fields_we_cannot_update_are_refused_by_name(engines):
    name = _name("upd-unsupported")
    try:
        _run(engines, name)
        out = engines.ours.docker("update", "--blkio-weight", "300", name)
        assert out.returncode != 0
        assert "BlkioWeight cannot be updated by Dockyard" in out.stderr
        out = engines.ours.docker("update", "--kernel-memory", "10m", name)
        assert "KernelMemory cannot be updated by Dockyard" in out.stderr
    finally:
        engines.cleanup(name)


def test_raw_answer_and_event_as_dockerd(engines):
    name = _name("upd-raw")
    try:
        _run(engines, name)
        answers = []
        for socket in (engines.ours.socket, engines.reference.socket):
            status, _, body = http_request(socket, "POST", f"/v1.41/containers/{name}/update",
                                           json.dumps({"CpuShares": 600}).encode(),
                                           {"Content-Type": "application/json"})
            answers.append((status, json.loads(body)))
        assert answers[0] == answers[1] == (200, {"Warnings": None})
        for engine in (engines.ours, engines.reference):
            out = poll(lambda engine=engine: (r := engine.docker("events", "--since", "5m", "--until", "0s", "--filter",
                                                   f"container={name}", "--filter", "event=update",
                                                   "--format", "{{.Action}}")).stdout.strip() and r,
                       timeout=10, what="update event")
            assert out.stdout.split() == ["update"]
    finally:
        engines.cleanup(name)
