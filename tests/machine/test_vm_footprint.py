"""The machine gives back what the guest frees (TCG): memory to the host, and disk blocks to its image.

Memory: virtio-balloon free page reporting (the guest loads virtio_balloon after
`ready`); QEMU drops the reported pages, so its resident memory falls back.
Disk: the data disk is qcow2 with discard=unmap and the guest init runs fstrim
once enough space was freed (vmimage/guest_init/trim.py, checked every minute).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.machine.conftest import make_machine
from tests.support.qemu_process import allocated_mib, qemu_pid, rss_mib
from tests.support.waiting import poll

pytestmark = pytest.mark.vm

# Issue 11's target: back within 10 % of the idle level a minute after the container exits.
RSS_MARGIN = 0.10
BIG_CONTAINER_MB = 500
FILLER_MB = 300


@pytest.fixture(scope="module")
def machine(guest_image_env, tmp_path_factory):
    m = make_machine("foot", tmp_path_factory, guest_image_env)
    m.dockyard("init", "--cpus", "2", "--memory", "2G", "--disk", "4G", "--backend", "qemu")
    try:
        m.dockyard("start")
        yield m
    finally:
        m.dockyard("rm", "-f", check=False)


def test_memory_is_given_back_after_a_big_container_exits(machine, test_images):
    image = test_images["busybox"]
    pid = qemu_pid(machine.domain_name)
    assert pid, "the machine's QEMU process was not found"
    # A small container first: the idle level then holds what any container run
    # costs QEMU (the agent's code paths translated, the image's pages cached).
    machine.docker("run", "--rm", image, "true")
    idle = rss_mib(pid)
    # dd reads 500 MB from /dev/zero into one buffer, so every page is touched;
    # the pipe to a sleeper that never reads keeps dd (and its buffer) alive.
    machine.docker("run", "-d", "--name", "big", image, "sh", "-c",
                   f"dd if=/dev/zero bs={BIG_CONTAINER_MB}M count=1 | sleep 3600")
    # The test must be able to fail: the guest's allocation has to reach the host first.
    poll(lambda: rss_mib(pid) >= idle + 0.8 * BIG_CONTAINER_MB, timeout=180,
         what=f"QEMU's RSS to grow by {BIG_CONTAINER_MB} MB while the container holds its memory")
    machine.docker("rm", "-f", "big")
    poll(lambda: rss_mib(pid) <= idle * (1 + RSS_MARGIN), timeout=120,
         what=f"QEMU's RSS to fall back within {RSS_MARGIN:.0%} of {idle:.0f} MiB")


def test_freed_disk_blocks_go_back_to_the_host(machine, test_images):
    image = test_images["busybox"]
    disk = data_disk(machine.home)
    before = allocated_mib(disk)
    # The file lives in the container's writable layer on the data disk; `sync`
    # pushes it through the guest's page cache into the qcow2 file.
    machine.docker("run", "--name", "filler", image, "sh", "-c",
                   f"dd if=/dev/zero of=/filler bs=1M count={FILLER_MB} && sync")
    poll(lambda: allocated_mib(disk) >= before + 0.8 * FILLER_MB, timeout=60,
         what=f"the data disk image to grow by {FILLER_MB} MB")
    machine.docker("rm", "filler")
    # The guest init checks the free space once a minute and trims then.
    poll(lambda: allocated_mib(disk) <= before + 0.2 * FILLER_MB, timeout=200, interval=1.0,
         what=f"the data disk image to shrink back towards {before:.0f} MiB")


def data_disk(home: Path) -> Path:
    found = list(home.rglob("data.qcow2"))
    assert len(found) == 1, found
    return found[0]
