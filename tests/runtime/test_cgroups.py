"""Cgroup layout detection and limit placement, on the host's real (hybrid) cgroups.

Pure cgroup v2 with memory/pids/cpu controllers cannot be mounted on this host
(its v2 tree is taken by the hybrid layout without those controllers), so the
v2 limit files are checked in a stand-in directory tree: the only fake here.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runtime.errors import RuntimeFailure
from runtime.linux import cgroups, device_filter
from runtime.linux.cgroup_limits import Limits

HYBRID_MOUNTINFO = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/freezer rw,nosuid shared:17 - cgroup cgroup rw,freezer
38 30 0:34 / /sys/fs/cgroup/with\\040space rw,nosuid shared:18 - cgroup cgroup rw,devices
"""
PURE_V2_MOUNTINFO = """\
25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
"""


def test_parse_hybrid_layout():
    layout = cgroups.parse_layout(HYBRID_MOUNTINFO)
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert layout.v1["devices"] == Path("/sys/fs/cgroup/with space")
    assert layout.unified == Path("/sys/fs/cgroup/unified")
    cg = cgroups.container_cgroup("abc", layout)
    assert cg.memory == Path("/sys/fs/cgroup/memory/dockyard/abc") and not cg.memory_v2
    assert cg.cpu == Path("/sys/fs/cgroup/cpu,cpuacct/dockyard/abc")
    # cpu and cpuacct share one hierarchy: joined once.
    assert len(cg.dirs) == len(set(cg.dirs)) == 6


def test_pure_v2_layout_puts_limits_on_the_unified_tree():
    layout = cgroups.CgroupLayout(v1={}, unified=Path("/sys/fs/cgroup"),
                                  unified_controllers=frozenset({"memory", "pids", "cpu", "io"}))
    assert cgroups.parse_layout(PURE_V2_MOUNTINFO).unified == Path("/sys/fs/cgroup")
    cg = cgroups.container_cgroup("abc", layout)
    assert cg.dirs == [Path("/sys/fs/cgroup/dockyard/abc")]
    assert cg.memory == cg.pids == cg.cpu == cg.unified
    assert cg.memory_v2 and cg.cpu_v2


def test_v2_limit_files(tmp_path):
    root = tmp_path / "cgroup"
    controllers = frozenset({"memory", "pids", "cpu"})
    layout = cgroups.CgroupLayout(v1={}, unified=root, unified_controllers=controllers)
    cg = cgroups.container_cgroup("c1", layout)
    # Stand-in for the kernel: the files a real cgroup2 directory would have.
    for directory in (root, root / "dockyard", cg.unified):
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("cgroup.subtree_control", "cgroup.procs", "memory.max", "memory.swap.max",
                     "pids.max", "cpu.max", "cpu.weight"):
            (directory / name).touch()
    # privileged: a stand-in directory cannot take the eBPF device filter (tested below).
    cgroups.create(cg, Limits(memory_bytes=64 << 20, pids_limit=20, nano_cpus=1_500_000_000,
                              cpu_shares=1024), privileged=True, layout=layout)
    assert (cg.unified / "memory.max").read_text() == str(64 << 20)
    assert (cg.unified / "memory.swap.max").read_text() == str(64 << 20)
    assert (cg.unified / "pids.max").read_text() == "20"
    assert (cg.unified / "cpu.max").read_text() == "150000 100000"
    assert (cg.unified / "cpu.weight").read_text() == "39"
    # Controllers were delegated down to the parent of the container's cgroup.
    assert (root / "dockyard" / "cgroup.subtree_control").read_text() != ""


@pytest.fixture
def host_cgroup():
    cg = cgroups.container_cgroup("test-" + uuid.uuid4().hex[:12])
    yield cg
    cgroups.remove(cg)


def test_host_layout_is_detected():
    layout = cgroups.host_layout()
    assert layout.v1 or layout.unified, "no cgroup hierarchy mounted"


def test_v1_limits_on_the_host(host_cgroup):
    cg = host_cgroup
    if cg.memory is None or cg.memory_v2:
        pytest.fail("this host is expected to have the v1 memory controller (REFERENCE.md)")
    cgroups.create(cg, Limits(memory_bytes=48 << 20, memory_swap_bytes=-1, pids_limit=7,
                              nano_cpus=250_000_000, cpu_shares=256))
    assert int((cg.memory / "memory.limit_in_bytes").read_text()) == 48 << 20
    if (cg.memory / "memory.memsw.limit_in_bytes").exists():
        assert int((cg.memory / "memory.memsw.limit_in_bytes").read_text()) > 1 << 60
    assert (cg.pids / "pids.max").read_text().strip() == "7"
    assert (cg.cpu / "cpu.cfs_quota_us").read_text().strip() == "25000"
    assert (cg.cpu / "cpu.shares").read_text().strip() == "256"
    if cg.devices is not None:
        rules = (cg.devices / "devices.list").read_text()
        assert "c 1:3 rwm" in rules and "a *:* rwm" not in rules
    assert all(d.is_dir() for d in cg.dirs)


def test_default_swap_is_twice_the_memory(host_cgroup):
    cg = host_cgroup
    cgroups.create(cg, Limits(memory_bytes=16 << 20))
    if (cg.memory / "memory.memsw.limit_in_bytes").exists():
        assert int((cg.memory / "memory.memsw.limit_in_bytes").read_text()) == 32 << 20


def test_remove_kills_members_and_is_idempotent(host_cgroup):
    cg = host_cgroup
    cgroups.create(cg, Limits())
    member = subprocess.Popen(["sleep", "100"])
    try:
        for procs in cg.procs_files():
            procs.write_text(str(member.pid))
        assert cgroups.pids(cg) == [member.pid]
        cgroups.remove(cg)
        assert member.wait() == -9
        assert not any(d.exists() for d in cg.dirs)
        cgroups.remove(cg)
    finally:
        member.kill()
        member.wait()


def test_freeze_and_thaw(host_cgroup):
    cg = host_cgroup
    cgroups.create(cg, Limits())
    member = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        for procs in cg.procs_files():
            procs.write_text(str(member.pid))
        cgroups.set_frozen(cg, True)
        assert cgroups.is_frozen(cg)
        cgroups.set_frozen(cg, False)
        assert not cgroups.is_frozen(cg)
        assert member.poll() is None
    finally:
        member.kill()
        member.wait()


def test_write_error_is_clear(tmp_path):
    layout = cgroups.CgroupLayout(v1={"pids": tmp_path}, unified=None)
    cg = cgroups.container_cgroup("x", layout)
    with pytest.raises(RuntimeFailure, match="cgroup: cannot write '5' to .*pids.max"):
        cgroups.create(cg, Limits(pids_limit=5), layout=layout)


def _openable_unlisted_device() -> Path:
    """A host character device root can open that Docker's allow-list does not allow."""
    allowed = {(int(r.split()[1].split(":")[0]), r.split()[1].split(":")[1]) for r in
               cgroups.DEFAULT_DEVICE_RULES if r.startswith("c ") and not r.startswith("c *")}
    for entry in sorted(os.scandir("/dev"), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISCHR(st.st_mode):
            continue
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if (major, str(minor)) in allowed or (major, "*") in allowed:
            continue
        try:
            os.close(os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            continue
        return Path(entry.path)
    raise AssertionError("no unlisted character device on this host to test with")


def _open_in_cgroup(cg: cgroups.ContainerCgroup, device: Path) -> subprocess.CompletedProcess:
    probe = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; sys.stdin.readline(); "
         f"os.close(os.open({str(device)!r}, os.O_RDONLY | os.O_NONBLOCK)); "
         "os.close(os.open('/dev/null', os.O_WRONLY)); print('opened')"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for procs in cg.procs_files():
        procs.write_text(str(probe.pid))
    out, err = probe.communicate("go\n")
    return subprocess.CompletedProcess(probe.args, probe.returncode, out, err)


def test_v2_device_filter(tmp_path):
    # The eBPF filter is what pure cgroup v2 hosts (our VM) use; here it runs on the
    # host's real unified hierarchy, with the v1 devices controller left out.
    host = cgroups.host_layout()
    assert host.unified is not None
    layout = cgroups.CgroupLayout(v1={k: v for k, v in host.v1.items() if k != "devices"},
                                  unified=host.unified, unified_controllers=host.unified_controllers)
    device = _openable_unlisted_device()
    open_cg = cgroups.container_cgroup("test-" + uuid.uuid4().hex[:12], layout)
    closed_cg = cgroups.container_cgroup("test-" + uuid.uuid4().hex[:12], layout)
    try:
        cgroups.create(open_cg, Limits(), privileged=True, layout=layout)
        cgroups.create(closed_cg, Limits(), layout=layout)
        assert _open_in_cgroup(open_cg, device).stdout == "opened\n"
        denied = _open_in_cgroup(closed_cg, device)
        assert denied.returncode != 0 and "Operation not permitted" in denied.stderr
    finally:
        cgroups.remove(open_cg)
        cgroups.remove(closed_cg)


def test_device_rules_compile_to_straight_line_code():
    rules = [device_filter.DeviceRule.parse(r) for r in ("c 1:3 rwm", "b *:* m", "a")]
    assert rules[1] == device_filter.DeviceRule("b", None, None, "m")
    code = device_filter.compile_rules(rules)
    assert len(code) % 8 == 0
    # head (6) + rule 1 (3 tests + ja) + rule 2 (type test + 3 access insns + ja) + rule 3 (ja) + 4 exits
    assert len(code) // 8 == 6 + 4 + 5 + 1 + 4


def test_v2_cpuset_and_memory_reservation_files(tmp_path):
    """The guest's pure v2: --cpuset-cpus/--cpuset-mems land in the leaf, the controller delegated."""
    root = tmp_path / "cgroup"
    layout = cgroups.CgroupLayout(v1={}, unified=root,
                                  unified_controllers=frozenset({"cpuset"}))
    cg = cgroups.container_cgroup("c1", layout)
    assert cg.cpuset == cg.unified and cg.cpuset_v2
    for directory in (root, root / "dockyard", cg.unified):
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("cgroup.subtree_control", "cpuset.cpus", "cpuset.mems"):
            (directory / name).touch()
    cgroups.create(cg, Limits(cpuset_cpus="1", cpuset_mems="0"), privileged=True, layout=layout)
    assert (cg.unified / "cpuset.cpus").read_text() == "1"
    assert (cg.unified / "cpuset.mems").read_text() == "0"
    assert "+cpuset" in (root / "dockyard" / "cgroup.subtree_control").read_text()


def test_cpuset_and_soft_memory_limit_on_the_host(host_cgroup):
    """On this machine's real hierarchies (v1 here, v2 on a pure-v2 host)."""
    cg = host_cgroup
    assert cg.cpuset is not None, "no cpuset controller on this machine"
    cgroups.create(cg, Limits(cpuset_cpus="0", memory_bytes=64 << 20, memory_reservation_bytes=32 << 20))
    assert (cg.cpuset / "cpuset.cpus").read_text().strip() == "0"
    soft = "memory.low" if cg.memory_v2 else "memory.soft_limit_in_bytes"
    assert int((cg.memory / soft).read_text()) == 32 << 20
    if not cg.cpuset_v2:
        # A new v1 cpuset is empty and takes no process: without --cpuset-* the
        # container gets all of the engine's CPUs and memory nodes.
        assert (cg.cpuset / "cpuset.mems").read_text().strip() != ""
        other = cgroups.container_cgroup("test-" + uuid.uuid4().hex[:12])
        try:
            cgroups.create(other, Limits())
            assert other.cpuset is not None
            root = other.cpuset.parent.parent
            assert (other.cpuset / "cpuset.cpus").read_text() == (root / "cpuset.cpus").read_text()
        finally:
            cgroups.remove(other)
