"""Health checks through the docker CLI, ours and dockerd's side by side.

Probes run with 1 s intervals; every wait polls inspect with a deadline. What is
compared is what a user (and Compose's `service_healthy`) sees: State.Health in
inspect, the `docker ps` status, `--filter health=`, `health_status` events and
dockerd's messages for bad values.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest

from runtime.containers.health import go_duration
from tests.support.agent import http_request
from tests.support.crafted_images import CraftedRegistry
from tests.support.side_by_side import Engines, normalised
from tests.support.waiting import poll

SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images):
    return Engines(agent, dockerd, test_images["busybox"])


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _health(engine, name: str) -> dict | None:
    out = engine.docker("inspect", "--format", "{{json .State.Health}}", name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_status(engine, name: str, status: str) -> dict:
    return poll(lambda: (h := _health(engine, name)) and h["Status"] == status and h,
                timeout=30, what=f"{name} {status}")


def _ps_status(engine, name: str) -> str:
    out = engine.docker("ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Status}}")
    assert out.returncode == 0, out.stderr
    # "Up 3 seconds (healthy)": the duration differs between engines, the suffix must not.
    return re.sub(r"^Up .*? \(", "Up … (", out.stdout.strip())


def _run(engines: Engines, name: str, *options: str, image: str | None = None) -> None:
    for engine in (engines.ours, engines.reference):
        out = engine.docker("run", "-d", "--network", "none", "--name", name, *options,
                            image or engines.image, "sleep", "300")
        assert out.returncode == 0, out.stderr


def _shape(health: dict) -> dict:
    """What must agree between engines: status, streak, and each log entry's keys, code and output."""
    return {"Status": health["Status"], "FailingStreak": health["FailingStreak"],
            "Log": [(sorted(e), e["ExitCode"], e["Output"]) for e in health["Log"]]}


def test_healthy_and_unhealthy_as_dockerd(engines):
    ok, bad, slow = _name("hc-ok"), _name("hc-bad"), _name("hc-slow")
    try:
        # Before its first probe a container is "starting"; an hour's interval keeps it there
        # however long a loaded machine takes between the run and the look.
        _run(engines, slow, "--health-cmd", "true", "--health-interval", "1h")
        _run(engines, ok, "--health-cmd", "echo hi; exit 0", "--health-interval", "1s")
        _run(engines, bad, "--health-cmd", "echo no >&2; exit 3", "--health-interval", "1s",
             "--health-retries", "2")
        for engine in (engines.ours, engines.reference):
            assert _health(engine, slow)["Status"] == "starting"
            assert _ps_status(engine, slow) == "Up … (health: starting)"
        healthy = [_wait_status(e, ok, "healthy") for e in (engines.ours, engines.reference)]
        unhealthy = [_wait_status(e, bad, "unhealthy") for e in (engines.ours, engines.reference)]
        # The first successful probe already makes it healthy: compare that first entry.
        assert [_shape({**h, "Log": h["Log"][:1]}) for h in healthy] == [
            {"Status": "healthy", "FailingStreak": 0,
             "Log": [(["End", "ExitCode", "Output", "Start"], 0, "hi\n")]}] * 2
        assert [(h["FailingStreak"] >= 2, h["Log"][0]["ExitCode"], h["Log"][0]["Output"])
                for h in unhealthy] == [(True, 3, "no\n")] * 2
        for name, suffix in ((ok, "Up … (healthy)"), (bad, "Up … (unhealthy)")):
            assert [_ps_status(e, name) for e in (engines.ours, engines.reference)] == [suffix] * 2
        # Config as stored, and no probe in ExecIDs (on `slow`, where none can be in flight).
        engines.compare("inspect", "--format", "{{json .Config.Healthcheck}} {{json .ExecIDs}}", slow)
        for value in ("healthy", "unhealthy", "starting", "none"):
            ours, theirs = engines.each("ps", "--filter", f"health={value}", "--filter", "name=hc-",
                                        "--format", "{{.Names}}")
            assert sorted(ours.stdout.split()) == sorted(theirs.stdout.split()), value
        engines.compare("ps", "--filter", "health=bogus")
    finally:
        engines.cleanup(ok, bad, slow)


def test_health_events_as_dockerd(engines):
    name = _name("hc-events")
    try:
        _run(engines, name, "--health-cmd", "true", "--health-interval", "1s")
        actions = []
        for engine in (engines.ours, engines.reference):
            _wait_status(engine, name, "healthy")

            def seen(engine: Any = engine) -> list[str]:
                # `--until 0s` is the CLI's clock in whole seconds: poll until the event is in range.
                out = engine.docker("events", "--since", "5m", "--until", "0s", "--filter",
                                    f"container={name}", "--format", "{{.Action}}")
                assert out.returncode == 0, out.stderr
                found = sorted(set(out.stdout.splitlines()))
                return found if "health_status: healthy" in found else []

            actions.append(poll(seen, timeout=10, what="health_status event"))
        assert actions[0] == actions[1]
    finally:
        engines.cleanup(name)


def test_stop_and_restart_as_dockerd(engines):
    name = _name("hc-restart")
    try:
        _run(engines, name, "--health-cmd", "true", "--health-interval", "1s")
        both = (engines.ours, engines.reference)
        before = []
        for engine in both:
            _wait_status(engine, name, "healthy")
            assert engine.docker("stop", "-t", "0", name).returncode == 0
            before.append(_health(engine, name))
        # A stopped container's probe is over; dockerd reports it unhealthy, its log kept.
        assert [h["Status"] for h in before] == ["unhealthy"] * 2
        for engine, earlier in zip(both, before, strict=True):
            assert engine.docker("start", name).returncode == 0
            after = _health(engine, name)
            assert (after["Status"], after["FailingStreak"]) == ("starting", 0)
            assert after["Log"][: len(earlier["Log"])] == earlier["Log"]
            _wait_status(engine, name, "healthy")
    finally:
        engines.cleanup(name)


def test_failures_inside_the_start_period_do_not_count(engines):
    name = _name("hc-grace")
    try:
        _run(engines, name, "--health-cmd", "exit 1", "--health-interval", "1s", "--health-retries", "1",
             "--health-start-period", "5m")
        for engine in (engines.ours, engines.reference):
            health = poll(lambda engine=engine: (h := _health(engine, name)) and len(h["Log"]) >= 2 and h,
                          timeout=30, what="two failed probes")
            assert (health["Status"], health["FailingStreak"]) == ("starting", 0)
    finally:
        engines.cleanup(name)


def test_start_interval_probes_the_start_period(agent, engines):
    """StartInterval (API 1.44; the reference dockerd 20.10 predates it): while "starting" inside
    its start period the container is probed every StartInterval, not every (here 1 h) Interval."""
    name = _name("hc-start-interval")
    try:
        out = agent.docker("run", "-d", "--network", "none", "--name", name, "--health-cmd", "exit 1",
                           "--health-interval", "1h", "--health-start-period", "5m",
                           "--health-start-interval", "1s", engines.image, "sleep", "300")
        assert out.returncode == 0, out.stderr
        health = poll(lambda: (h := _health(agent, name)) and len(h["Log"]) >= 2 and h,
                      timeout=30, what="two probes in the start period")
        assert (health["Status"], health["FailingStreak"]) == ("starting", 0)
    finally:
        agent.docker("rm", "-f", name)


@pytest.mark.parametrize("seconds, text", [(30.0, "30s"), (0.2, "200ms"), (1.5, "1.5s"), (90.0, "1m30s"),
                                           (3600.0, "1h0m0s"), (0.0015, "1.5ms")])
def test_timeout_in_go_duration_words(seconds, text):
    """The timeout message quotes the timeout as Go prints a time.Duration."""
    assert go_duration(seconds) == text


def test_no_healthcheck_has_no_health(engines):
    name = _name("hc-none")
    try:
        _run(engines, name, "--no-healthcheck")
        engines.compare("inspect", "--format", "{{json .State.Health}} {{json .Config.Healthcheck}}", name)
        assert _ps_status(engines.ours, name).startswith("Up ") and "(" not in _ps_status(engines.ours, name)
    finally:
        engines.cleanup(name)


def test_probe_timeout_as_dockerd(engines):
    name = _name("hc-timeout")
    try:
        _run(engines, name, "--health-cmd", "sleep 5", "--health-interval", "1s", "--health-timeout", "200ms",
             "--health-retries", "1")
        results = [_wait_status(e, name, "unhealthy") for e in (engines.ours, engines.reference)]
        assert [(h["Log"][0]["ExitCode"], h["Log"][0]["Output"]) for h in results] == [
            (-1, "Health check exceeded timeout (200ms)")] * 2
    finally:
        engines.cleanup(name)


def test_probe_that_cannot_start_as_dockerd(engines):
    """A CMD probe whose program is missing: the runtime's error, exit code -1 (raw API: the CLI
    only sends CMD-SHELL)."""
    body = json.dumps({"Image": engines.image, "Cmd": ["sleep", "300"], "HostConfig": {"NetworkMode": "none"},
                       "Healthcheck": {"Test": ["CMD", "/nonexistent"], "Interval": SECOND, "Retries": 1}})
    name = _name("hc-nostart")
    try:
        results = []
        for engine in (engines.ours, engines.reference):
            status, _, _ = http_request(engine.socket, "POST", f"/v1.41/containers/create?name={name}",
                                        body.encode(), {"Content-Type": "application/json"})
            assert status == 201
            assert engine.docker("start", name).returncode == 0
            entry = _wait_status(engine, name, "unhealthy")["Log"][0]
            results.append((entry["ExitCode"], entry["Output"]))
        assert results[0] == results[1]
        assert results[0][0] == -1 and "/nonexistent" in results[0][1]
    finally:
        engines.cleanup(name)


@pytest.mark.parametrize("options", [
    ["--health-cmd", "true", "--health-interval", "1us"],
    ["--health-cmd", "true", "--health-timeout", "999us"],
    ["--health-cmd", "true", "--health-start-period", "1ns"],
    ["--health-cmd", "true", "--health-retries", "-1"],
    ["--health-cmd", "true", "--health-interval", "-1s"],
])
def test_bad_values_refused_as_dockerd(engines, options):
    name = _name("hc-badvalue")
    try:
        outcome = engines.compare("create", "--network", "none", "--name", name, *options,
                                  engines.image, "true")
        assert outcome.code != 0
    finally:
        engines.cleanup(name)


def test_image_healthcheck_and_overrides(engines, registry):
    image = CraftedRegistry(registry).push(_name("hc-image"), config={"Healthcheck": {
        "Test": ["CMD-SHELL", "echo from-image"], "Interval": SECOND, "Retries": 2}}).ref
    plain, overridden = _name("hc-img"), _name("hc-img-over")
    try:
        for engine in (engines.ours, engines.reference):
            assert engine.docker("pull", "-q", image).returncode == 0
        _run(engines, plain, image=image)
        _run(engines, overridden, "--health-cmd", "echo mine", image=image)
        engines.compare("inspect", "--format", "{{json .Config.Healthcheck}}", plain)
        engines.compare("inspect", "--format", "{{json .Config.Healthcheck}}", overridden)
        outputs = [_wait_status(e, overridden, "healthy")["Log"][0]["Output"]
                   for e in (engines.ours, engines.reference)]
        assert outputs == ["mine\n"] * 2
        outputs = [_wait_status(e, plain, "healthy")["Log"][0]["Output"]
                   for e in (engines.ours, engines.reference)]
        assert outputs == ["from-image\n"] * 2
    finally:
        engines.cleanup(plain, overridden)


def test_health_is_persisted_with_the_state(engines):
    """State.Health is part of the persisted state: the record on disk carries it."""
    name = _name("hc-disk")
    try:
        _run(engines, name, "--health-cmd", "true", "--health-interval", "1s")
        _wait_status(engines.ours, name, "healthy")
        cid = engines.ours.docker("inspect", "--format", "{{.Id}}", name).stdout.strip()
        state_file = engines.ours.root / "containers" / cid / "state.json"
        poll(lambda: (json.loads(state_file.read_text())["state"].get("health") or {}).get("Status")
             == "healthy", timeout=10, what="health on disk")
        assert normalised(engines.ours.docker("stop", "-t", "0", name)).code == 0
    finally:
        engines.cleanup(name)


def test_health_after_the_agent_comes_back(tmp_path, test_images):
    """Stopped by a shutdown or found exited after a crash, a container's health reads "unhealthy"
    (its probe is over), kept on disk with its log; a start makes it "starting" again."""
    from tests.support.agent import start_agent

    socket, root = tmp_path / "docker.sock", tmp_path / "root"
    agent = start_agent(socket=socket, root=root)
    try:
        assert agent.docker("pull", "-q", test_images["busybox"]).returncode == 0
        for name in ("graceful", "crashed"):
            out = agent.docker("run", "-d", "--network", "none", "--name", name, "--health-cmd", "true",
                               "--health-interval", "1s", test_images["busybox"], "sleep", "300")
            assert out.returncode == 0, out.stderr
            _wait_status(agent, name, "healthy")
        assert agent.docker("stop", "-t", "0", "graceful").returncode == 0
        agent.process.kill()      # the crash: no shutdown, "crashed" is recorded as running
        agent.process.wait()
        agent = start_agent(socket=socket, root=root)
        for name in ("graceful", "crashed"):
            health = _health(agent, name)
            assert health["Status"] == "unhealthy" and health["Log"], (name, health)
        assert agent.docker("start", "crashed").returncode == 0
        assert _health(agent, "crashed")["Status"] == "starting"
        _wait_status(agent, "crashed", "healthy")
        agent.docker("rm", "-f", "graceful", "crashed")
    finally:
        agent.stop()
