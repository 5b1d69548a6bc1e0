"""The cgroup lock warmer: which file it writes, that it runs while kicked and stops,
and that a failing write turns it off. Its effect on `docker run` is measured by
bench/run_latency.py (timed assertions do not belong in tests)."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.linux import cgroup_lock_warmer as clw
from runtime.linux.cgroups import CgroupLayout
from tests.support.waiting import poll

PURE_V2 = CgroupLayout(v1={}, unified=Path("/sys/fs/cgroup"))
HYBRID = CgroupLayout(v1={"pids": Path("/sys/fs/cgroup/pids"), "memory": Path("/sys/fs/cgroup/memory")},
                      unified=Path("/sys/fs/cgroup/unified"))


def test_own_cgroup_on_pure_v2():
    assert (clw.own_procs_file(PURE_V2, "0::/system.slice/dockyard.service\n")
            == Path("/sys/fs/cgroup/system.slice/dockyard.service/cgroup.procs"))


def test_own_cgroup_on_a_hybrid_host_uses_a_mounted_hierarchy():
    text = "12:cpuset:/\n8:pids:/user.slice\n0::/user.slice/session-1.scope\n"
    assert clw.own_procs_file(HYBRID, text) == Path("/sys/fs/cgroup/pids/user.slice/cgroup.procs")


def test_no_mounted_hierarchy_means_no_warmer():
    assert clw.own_procs_file(CgroupLayout(v1={}, unified=None), "0::/\n") is None
    idle = clw.CgroupLockWarmer(None)
    idle.kick()
    assert not idle.active


def test_kicked_warmer_moves_this_process_into_its_own_cgroup_then_stops():
    warmer = clw.warmer()
    assert warmer.procs_file is not None and warmer.procs_file.exists()
    before = warmer.writes
    warmer.kick()
    assert poll(lambda: warmer.writes > before, timeout=5, what="a warming write")
    assert poll(lambda: not warmer.active, timeout=5, what="the warmer to stop after its hold")
    assert str(os.getpid()) in warmer.procs_file.read_text().split()


def test_a_failing_write_turns_the_warmer_off(tmp_path):
    warmer = clw.CgroupLockWarmer(tmp_path / "missing" / "cgroup.procs")
    warmer.kick()
    assert poll(lambda: not warmer.active, timeout=5, what="the warmer to give up")
    assert warmer.writes == 0
    warmer.kick()
    assert not warmer.active
