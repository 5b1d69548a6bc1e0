"""Session-wide fixtures: a real local registry filled with test images, and a running engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CACHE_DIR = Path(os.environ.get("DOCKYARD_TEST_CACHE", Path.home() / ".cache" / "dockyard-tests"))


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real Debian `docker-registry` on 127.0.0.1 (anonymous access)."""
    from tests.support.registry import start_registry

    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def test_images(registry):
    """Images built here and pushed to `registry`: {"busybox": ref, "debian": ref}."""
    from tests.support.test_images import push_test_images

    return push_test_images(registry, CACHE_DIR)


@pytest.fixture(scope="session")
def agent(tmp_path_factory):
    """`dockyard-agent serve` running natively on a temporary socket and root."""
    from tests.support.agent import start_agent

    base = tmp_path_factory.mktemp("agent")
    running = start_agent(socket=base / "docker.sock", root=base / "root")
    yield running
    running.stop()
