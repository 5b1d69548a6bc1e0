"""The Compose scenarios, shared by the v2 and v1 test modules.

Each function takes a fresh `ComposeProject` (one generation, one engine) and checks
what a user sees: compose's output, `docker` CLI views, and the web service's answer
on its published port. The project (tests/compose/project/compose.yaml): web answers
with what it fetches from backend by service name and starts only once slow is
healthy; backend reads an env_file and keeps a note on the named volume `notes`;
tools sits in the `debug` profile.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from tests.compose.host_network import HostNetwork, leftovers
from tests.compose.project_copy import ComposeProject
from tests.support.waiting import poll

SERVICES = {"web", "backend", "slow"}
FOLLOW_TIMEOUT = 30.0


def _docker_time(text: str) -> datetime:
    """An RFC 3339 time from inspect, nanoseconds cut to what datetime holds."""
    text = text.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text)


def up_serves_backend_answer(project: ComposeProject) -> None:
    """up -d: network, named volume, healthy dependency first, port reached from the host."""
    result = project.up()
    shown = result.stdout + result.stderr
    assert "Error" not in shown, shown
    running = project.containers(all_=False)
    assert {project.inspect(c)["Config"]["Labels"]["com.docker.compose.service"]
            for c in running.values()} == SERVICES, running   # tools is in a profile: not started

    answer = project.answer("backend says")
    assert answer.splitlines()[:3] == ["web compose-test", "backend says hello-from-env-file",
                                       "note: none"], answer

    networks = project.docker_ok("network", "ls", "--format", "{{.Name}}").split()
    assert f"{project.name}_default" in networks
    volumes = project.docker_ok("volume", "ls", "--format", "{{.Name}}").split()
    assert f"{project.name}_notes" in volumes

    ps = project.ok("ps").stdout
    for service in SERVICES:
        assert service in ps, ps
    assert "healthy" in ps, ps

    # depends_on service_healthy: web started after slow made its ready file (what the
    # healthcheck tests), not merely after slow started.
    slow = project.service_container("slow")
    assert slow["State"]["Health"]["Status"] == "healthy", slow["State"]
    ready_at = int(project.ok("exec", "-T", "slow", "stat", "-c", "%Y", "/tmp/ready").stdout.strip())
    web_started = _docker_time(project.service_container("web")["State"]["StartedAt"])
    assert web_started.timestamp() >= ready_at, (web_started, ready_at)


def _follow_until(proc: subprocess.Popen, needle: str, timeout: float,
                  trigger: Callable[[], None]) -> list[str]:
    """Lines of `proc` up to the first containing `needle` (AssertionError after `timeout`).

    `trigger` makes the line be written; it is called again each second without output,
    as the follower attaches at a moment the test cannot see (with --tail 0, a line
    written before that is never shown, so any line seen was streamed live)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line with {needle!r} within {timeout}s; got {seen!r}")
        try:
            line = lines.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            trigger()
            continue
        if line is None:
            raise AssertionError(f"logs -f ended before a line with {needle!r}; got {seen!r}")
        seen.append(line)
        if needle in line:
            return seen


def logs_follow(project: ComposeProject) -> None:
    """logs shows each service's output; logs -f streams a line written after it started."""
    project.up()
    project.answer("backend says")
    logs = project.ok("logs", "backend").stdout
    assert "backend up, GREETING=hello-from-env-file" in logs, logs

    follower = project.compose.popen("logs", "-f", "--tail", "0", "web")
    try:
        token = f"/probe-{uuid.uuid4().hex}"

        def probe() -> None:
            # A path httpd does not have: it still logs the request (-vv) and answers 404.
            try:
                project.get(token)
            except OSError:
                pass

        probe()
        _follow_until(follower, f"url:{token}", FOLLOW_TIMEOUT, probe)
        assert follower.poll() is None, "logs -f exited by itself"
    finally:
        follower.kill()
        follower.wait()


def exec_and_run(project: ComposeProject) -> None:
    """exec runs in the service's container; run --rm starts a one-off on the project's
    network (service names resolve) and leaves no container behind."""
    project.up()
    done = project.ok("exec", "-T", "backend", "sh", "-c", "echo written-by-exec > /data/note; cat /data/note")
    assert done.stdout.strip() == "written-by-exec"
    assert "note: written-by-exec" in project.answer("note: written-by-exec")

    failed = project.run("exec", "-T", "backend", "sh", "-c", "exit 7")
    assert failed.returncode == 7, (failed.returncode, failed.stderr)

    backend_ip = project.service_container("backend")["NetworkSettings"]["Networks"][
        f"{project.name}_default"]["IPAddress"]
    before = set(project.containers())
    one_off = project.ok("run", "--rm", "tools", "getent", "hosts", "backend")
    # v1 prints the image pull before the command's output: the answer is the last line.
    assert one_off.stdout.splitlines()[-1].split() == [backend_ip, "backend"], one_off.stdout
    assert set(project.containers()) == before, "run --rm left a container"


def stop_start_restart(project: ComposeProject) -> None:
    """stop takes the answer away, start brings it back, restart restarts every container,
    and a backend that exits with an error is restarted by its on-failure policy."""
    project.up()
    project.answer("backend says")
    project.ok("stop", "-t", "2")
    assert project.containers(all_=False) == {}
    ps = project.ok("ps", "-a").stdout
    assert "Exit" in ps or "exited" in ps.lower(), ps

    project.ok("start")
    project.answer("backend says")
    started = {s: project.inspect(c)["State"]["StartedAt"] for s, c in project.service_ids().items()}
    project.ok("restart", "-t", "2")
    project.answer("backend says")
    restarted = {s: project.inspect(c)["State"]["StartedAt"] for s, c in project.service_ids().items()}
    assert all(restarted[s] != started[s] for s in SERVICES), (started, restarted)

    # restart: on-failure: backend's shell exits 3 on TERM from inside (not a docker stop).
    count = project.service_container("backend")["RestartCount"]
    project.run("exec", "-T", "backend", "kill", "1")
    poll(lambda: project.service_container("backend")["RestartCount"] > count,
         timeout=30, what="backend restarted by its policy")
    assert project.service_container("backend")["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    project.answer("backend says")


def named_volume_survives_down(project: ComposeProject) -> None:
    """The named volume keeps its data across down/up; down -v removes it."""
    project.up()
    project.ok("exec", "-T", "backend", "sh", "-c", "echo kept-across-down > /data/note")
    project.ok("down", "-t", "1")
    assert project.containers() == {}
    volumes = project.docker_ok("volume", "ls", "--format", "{{.Name}}").split()
    assert f"{project.name}_notes" in volumes
    project.up()
    project.answer("note: kept-across-down")

    project.ok("down", "-v", "-t", "1")
    volumes = project.docker_ok("volume", "ls", "--format", "{{.Name}}").split()
    assert f"{project.name}_notes" not in volumes
    project.up()
    project.answer("note: none")


def second_up_recreates_only_changed(project: ComposeProject) -> None:
    """A second up after editing one service's environment recreates that container only."""
    project.up()
    project.answer("web compose-test")
    before = project.service_ids()
    project.set_environment("WEB_TITLE", "edited-title")
    project.up()
    after = project.service_ids()
    assert after["web"] != before["web"], "web's environment changed but it was not recreated"
    assert {s: after[s] for s in ("backend", "slow")} == {s: before[s] for s in ("backend", "slow")}
    project.answer("web edited-title")


def _sandbox_keys(project: ComposeProject) -> list[str]:
    return [project.inspect(c)["NetworkSettings"]["SandboxKey"] for c in project.containers().values()]


def down_leaves_nothing(project: ComposeProject) -> None:
    """down -v --remove-orphans removes containers (orphans too), the network, the volume,
    and on the host every bridge, iptables rule and pinned namespace the project made."""
    before = HostNetwork.snapshot()
    project.add_service("orphan", "image: ${BUSYBOX_IMAGE}\ncommand: [\"sleep\", \"3600\"]\n"
                                  "stop_signal: KILL")
    project.up()
    project.answer("backend says")
    network = json.loads(project.docker_ok("network", "inspect", f"{project.name}_default"))[0]
    subnets = [c["Subnet"] for c in network["IPAM"]["Config"]]
    assert subnets, network
    sandboxes = [k for k in _sandbox_keys(project) if k]
    assert sandboxes, "no container reports its network namespace (SandboxKey)"
    while_up = HostNetwork.snapshot()
    bridge_names = while_up.bridges_on(subnets)
    assert bridge_names, f"no bridge on {subnets} while the project is up: {while_up.bridges}"
    assert set(sandboxes) <= while_up.namespaces, (sandboxes, sorted(while_up.namespaces))

    project.remove_service("orphan")
    down = project.ok("down", "-v", "--remove-orphans", "-t", "1")
    shown = down.stdout + down.stderr
    assert "orphan" in shown, shown
    assert project.containers() == {}
    assert f"{project.name}_default" not in project.docker_ok("network", "ls", "--format", "{{.Name}}").split()
    assert f"{project.name}_notes" not in project.docker_ok("volume", "ls", "--format", "{{.Name}}").split()

    after = HostNetwork.snapshot()
    left = leftovers(before, after, subnets, bridge_names, sandboxes)
    assert left.counts() == {"bridges": 0, "iptables rules": 0, "network namespaces": 0}, left

