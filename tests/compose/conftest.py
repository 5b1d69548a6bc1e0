"""Fixtures of the Compose tests: the engines to drive and a fresh copy of the test project.

`compose_engine` is parametrised over our agent ("dockyard") and a reference Debian
dockerd ("dockerd"). The session's `dockerd` fixture runs without a bridge or
iptables, which leaves Compose's networks without published ports or isolation, so
these tests start their own: no default bridge (`--bridge none`, so there is no
docker0 to share with another dockerd on the host), iptables on, and address pools
that cannot meet ours (tests/support/compose.py: DOCKERD_COMPOSE_ARGS). The
iptables rules it leaves when it stops are removed: those naming its pool always,
Docker's shared chains only when no other dockerd runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compose.host_network import iptables_rules, remove_dockerd_leftovers
from tests.compose.project_copy import ComposeProject
from tests.support.compose import DOCKERD_CHAIN_RULE, DOCKERD_COMPOSE_ARGS, DOCKERD_POOL_RULE


@dataclass
class ComposeEngine:
    """An engine Compose is pointed at: its name, DOCKER_HOST and a docker CLI runner."""

    name: str
    docker_host: str
    docker: Callable
    config_dir: Path


@pytest.fixture(scope="session")
def compose_dockerd(tmp_path_factory):
    """Debian's dockerd with iptables and its own address pool, for Compose's networks."""
    from tests.support.dockerd import Dockerd

    before = frozenset(iptables_rules())
    daemon = Dockerd(tmp_path_factory.mktemp("compose-dockerd"),
                     DOCKERD_COMPOSE_ARGS)
    yield daemon
    daemon.stop()
    # Only dockerd's own leftovers: other sessions may have added rules meanwhile.
    remove_dockerd_leftovers(before, DOCKERD_POOL_RULE, DOCKERD_CHAIN_RULE)


@pytest.fixture(params=["dockyard", "dockerd"])
def compose_engine(request, tmp_path_factory) -> ComposeEngine:
    if request.param == "dockyard":
        agent = request.getfixturevalue("agent")
        return ComposeEngine("dockyard", agent.docker_host, agent.docker,
                             tmp_path_factory.mktemp("compose-config-dockyard"))
    daemon = request.getfixturevalue("compose_dockerd")
    return ComposeEngine("dockerd", daemon.host, daemon.docker,
                         tmp_path_factory.mktemp("compose-config-dockerd"))


def make_project(generation: str, engine: ComposeEngine, test_images: dict[str, str],
                 tmp_path: Path) -> ComposeProject:
    name = f"dy{generation}{uuid.uuid4().hex[:8]}"
    return ComposeProject.copy(generation, engine.name, engine.docker_host, engine.docker,
                               engine.config_dir, tmp_path / "project", name,
                               {"BUSYBOX_IMAGE": test_images["busybox"],
                                "DEBIAN_IMAGE": test_images["debian"]})


@pytest.fixture
def project_v2(compose_engine, test_images, tmp_path):
    project = make_project("v2", compose_engine, test_images, tmp_path)
    yield project
    project.cleanup()


@pytest.fixture
def project_v1(compose_engine, test_images, tmp_path):
    project = make_project("v1", compose_engine, test_images, tmp_path)
    yield project
    project.cleanup()
