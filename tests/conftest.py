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
    from tests.support.agent import agent_in

    with agent_in(tmp_path_factory.mktemp("agent")) as running:
        yield running


@pytest.fixture(scope="module")
def busybox_container(agent, test_images):
    """A busybox `sleep 3600` on `agent` (docker-py's Container), one per test module, removed after it."""
    running = agent.client().containers.run(test_images["busybox"], ["sleep", "3600"], detach=True)
    yield running
    running.remove(force=True)


@pytest.fixture(scope="session")
def guest_image():
    """The current guest image (built on first use: ~40 s, then cached)."""
    from tests.support.guest_vm import IMAGE_CACHE
    from vmimage.guest_image import ensure_image

    return ensure_image(IMAGE_CACHE)


@pytest.fixture(scope="session")
def vm_files(tmp_path_factory):
    """A client key pair, a blank data disk and a host folder to share."""
    import subprocess

    from tests.support import qemu_boot

    base = tmp_path_factory.mktemp("vm")
    key_path = base / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_path)], check=True)
    share = base / "share"
    share.mkdir()
    disk = qemu_boot.create_data_disk(base / "data.qcow2")
    return base, key_path, share, disk


@pytest.fixture(scope="session")
def vm(guest_image, vm_files):
    """The bare guest, booted once for the whole session on a blank data disk.

    The guest-image tests (tests/vm_image) and the SSH link tests (tests/link)
    share it; the test that powers it off is moved to the end of the session.
    """
    from tests.support.guest_vm import boot_guest

    base, key_path, share, disk = vm_files
    booted = boot_guest(guest_image, base / "boot1", disk, key_path, share)
    yield booted
    booted.guest.kill()


def pytest_collection_modifyitems(items):
    """Tests marked `powers_off_vm` stop the session's bare guest: run them after everything else."""
    last = [item for item in items if item.get_closest_marker("powers_off_vm")]
    if last:
        items[:] = [item for item in items if item not in last] + last


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory):
    """Debian's dockerd, the reference for differential tests (no bridge, no iptables rules:
    scenarios run with `--network none`, so it never shares a bridge or NAT with ours)."""
    from tests.support.dockerd import Dockerd

    daemon = Dockerd(tmp_path_factory.mktemp("dockerd"), ["--bridge", "none", "--iptables=false"])
    yield daemon
    daemon.stop()
