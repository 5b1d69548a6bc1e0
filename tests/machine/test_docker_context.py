"""The `dockyard` docker context: written as the docker CLI writes it, and usable by the CLI.

No VM here: the context points at a native `dockyard-agent serve` (the `agent`
fixture), which is what `make run-native` prints; `dockyard machine start` and
`dockyard-desktop` go through the same `desktop.docker_context.publish`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from desktop import docker_context
from tests.support.agent import DOCKER_CLI

REPO = Path(__file__).resolve().parents[2]


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    env.update(DOCKER_CONFIG=str(config), DOCKER_CLI_HINTS="false")
    return subprocess.run([DOCKER_CLI, *args], capture_output=True, text=True, env=env, timeout=60)


def _files(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_meta_file_is_what_docker_context_create_writes(tmp_path):
    theirs, ours = tmp_path / "cli", tmp_path / "ours"
    made = _cli(theirs, "context", "create", "dockyard", "--description", docker_context.DESCRIPTION,
                "--docker", "host=unix:///run/dockyard/docker.sock")
    assert made.returncode == 0, made.stderr
    docker_context.write_context("unix:///run/dockyard/docker.sock", base=ours)
    assert _files(ours) == _files(theirs)


def test_docker_uses_the_context_without_docker_host(agent, tmp_path):
    config = tmp_path / "docker-config"
    docker_context.write_context(agent.docker_host, base=config)
    version = _cli(config, "--context", "dockyard", "version", "--format", "{{.Server.Os}}")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "linux"
    listed = _cli(config, "context", "ls", "--format", "{{.Name}} {{.Current}} {{.DockerEndpoint}}")
    assert listed.returncode == 0, listed.stderr
    # Listed, pointing at the agent, and not made current: that stays the user's choice.
    assert f"dockyard false {agent.docker_host}" in listed.stdout.splitlines()
    assert not (config / "config.json").exists()
    used = _cli(config, "context", "use", "dockyard")
    assert used.returncode == 0, used.stderr
    ps = _cli(config, "ps", "--format", "{{.ID}}")
    assert ps.returncode == 0, ps.stderr


def test_an_existing_context_is_updated_in_place(tmp_path):
    first = docker_context.write_context("unix:///old.sock", base=tmp_path)
    second = docker_context.write_context("unix:///new.sock", base=tmp_path)
    assert first == second
    assert json.loads(second.read_text())["Endpoints"]["docker"]["Host"] == "unix:///new.sock"
    assert [p.name for p in second.parent.iterdir()] == ["meta.json"]   # no temporary file left
    inspected = _cli(tmp_path, "context", "inspect", "dockyard", "--format", "{{.Endpoints.docker.Host}}")
    assert inspected.stdout.strip() == "unix:///new.sock", inspected.stderr


def test_run_native_entry_point_writes_it_under_docker_config(tmp_path):
    """What the Makefile's run-native line runs; DOCKER_CONFIG decides where, as for the CLI."""
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "desktop.docker_context", "--host", "unix:///x/docker.sock"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "docker context use dockyard" in proc.stderr
    inspected = _cli(tmp_path, "context", "inspect", "dockyard", "--format", "{{.Endpoints.docker.Host}}")
    assert inspected.stdout.strip() == "unix:///x/docker.sock", inspected.stderr


def test_machine_names_other_than_default_get_their_own_context():
    assert docker_context.context_name("default") == "dockyard"
    assert docker_context.context_name("work") == "dockyard-work"
