"""Hot reload through a 9p shared folder (issue 12): host changes wake a watcher in a container.

One machine (direct QEMU, TCG) shares a host folder; a container runs a small
static inotify watcher (tests/support/inotify_watch.c) on the folder as mounted
in it. 9p carries no notifications: each event the watcher sees for a host
change was raised in the guest by the forwarder (desktop/hot_reload.py →
guest_agent/hot_reload.py), which re-applies the file's own mtime. The exact
events a watcher gets (what the README documents):

* host modify or create of F: IN_MODIFY on F;
* host delete of D/F: IN_MODIFY|IN_ISDIR on D (the directory changed; the guest
  kernel cannot be made to say IN_DELETE for a name it never saw go);
* host rename of A to B: IN_MODIFY on B and IN_MODIFY|IN_ISDIR on A's directory.

Without forwarding, none of these lines appears (the issue's first finding).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.machine.conftest import make_machine
from tests.support.waiting import poll
from tests.support.watcher_image import WatcherLog, push_watcher_image

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def share(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hot reload")
    (root / "sub").mkdir()
    for name in ("m.txt", "a.txt", "sub/gone.txt"):
        (root / name).write_text("before\n")
    return root


@pytest.fixture(scope="module")
def machine(guest_image_env, tmp_path_factory, share):
    m = make_machine("hrt", tmp_path_factory, guest_image_env)
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--mount", str(share),
               "--backend", "qemu")
    m.dockyard("start")
    yield m
    m.dockyard("rm", "-f", check=False)


@pytest.fixture(scope="module")
def watcher(machine, share, registry, test_images, tmp_path_factory):
    image = push_watcher_image(registry, tmp_path_factory.mktemp("watcher"))
    machine.docker("run", "-d", "--name", "watch", "-v", f"{share}:/w", image, "/w", "/w/sub")
    log = WatcherLog(["docker", "logs", "-f", "watch"], dict(os.environ, DOCKER_HOST=machine.docker_host))
    log.wait_for(lambda line: line == "ready", timeout=120)
    yield log
    log.close()
    machine.docker("rm", "-f", "watch", check=False)


def _mark(share: Path, watcher: WatcherLog, name: str) -> int:
    """Write a marker on the host and wait for its event: every earlier change has been delivered."""
    (share / name).write_text("marker\n")
    return watcher.wait_for(lambda line: line == f"IN_MODIFY /w/{name}")[0]


def test_a_host_modification_reaches_the_watcher(share, watcher):
    start = watcher.count()
    (share / "m.txt").write_text("after\n")
    watcher.wait_for(lambda line: line == "IN_MODIFY /w/m.txt", start)


def test_a_host_creation_reaches_the_watcher(share, watcher):
    start = watcher.count()
    (share / "new.txt").write_text("new\n")
    watcher.wait_for(lambda line: line == "IN_MODIFY /w/new.txt", start)


def test_a_host_deletion_reaches_the_watcher_as_its_directory_changing(share, watcher):
    start = watcher.count()
    (share / "sub" / "gone.txt").unlink()
    watcher.wait_for(lambda line: line == "IN_MODIFY|IN_ISDIR /w/sub", start)


def test_a_host_rename_reaches_the_watcher(share, watcher):
    start = watcher.count()
    (share / "a.txt").rename(share / "b.txt")
    watcher.wait_for(lambda line: line == "IN_MODIFY /w/b.txt", start)
    watcher.wait_for(lambda line: line == "IN_MODIFY|IN_ISDIR /w", start)


def test_a_burst_of_a_thousand_edits_arrives_without_flooding(share, watcher):
    start = watcher.count()
    target = share / "burst.txt"
    for i in range(1000):
        target.write_text(f"edit {i}\n")
    end = _mark(share, watcher, "after-burst.txt")
    burst = [line for _, line in watcher.lines[start:end] if line.endswith("/w/burst.txt")]
    assert 1 <= len(burst) <= 50, burst


def test_a_container_write_is_not_echoed_back(machine, share, watcher, test_images):
    start = watcher.count()
    machine.docker("run", "--rm", "-v", f"{share}:/w", test_images["busybox"],
                   "sh", "-c", "echo from-container > /w/echo.txt")
    end = _mark(share, watcher, "after-echo.txt")
    lines = [line for _, line in watcher.lines[start:end] if line.endswith("/w/echo.txt")]
    # The container's own write, as the kernel reported it; no second IN_MODIFY from the host.
    assert lines.count("IN_MODIFY /w/echo.txt") == 1, lines
    assert "IN_CREATE /w/echo.txt" in lines


def test_status_shows_forwarding_and_counts(machine, share, watcher):
    start = watcher.count()
    (share / "m.txt").write_text("status\n")
    watcher.wait_for(lambda line: line == "IN_MODIFY /w/m.txt", start)
    stats = poll(lambda: (machine.status().get("hot_reload") or {}).get("applied", 0) > 0
                 and machine.status()["hot_reload"], timeout=30, what="hot-reload counters")
    assert stats["shares"][str(share)]["forwarding"] == "on"
    assert stats["forwarded"] >= stats["applied"] > 0
    assert stats["echo"] >= 1   # test_a_container_write_is_not_echoed_back's write, told apart in the guest
