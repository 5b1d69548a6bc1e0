"""Namespace modes, the /sys/fs/cgroup plan per host layout, device values and --volumes-from
merging: the parts that decide, without starting a container (the API tests run them for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.containers import cgroup_mounts, device_rules, namespace_modes, volumes_from
from runtime.containers.mounts import MountRequest
from runtime.errors import Conflict, InvalidArgument, NotFound
from runtime.linux.cgroups import CgroupLayout, container_cgroup

DONOR_ID = "d" * 64


def lookup_for(pid: int, shm_dir: Path | None = None):
    def lookup(ref: str) -> namespace_modes.Donor:
        if ref not in ("donor", DONOR_ID):
            raise NotFound(f"No such container: {ref}")
        return namespace_modes.Donor(DONOR_ID, pid, shm_dir)
    return lookup


@pytest.mark.parametrize("pure_v2, cgroupns", [(True, "private"), (False, "host")])
def test_defaults_are_dockerds(pure_v2, cgroupns):
    hc: dict = {}
    namespace_modes.validate(hc, lookup_for(0), pure_v2)
    assert hc == {"IpcMode": "private", "CgroupnsMode": cgroupns}


def test_container_references_are_stored_by_id():
    hc = {"PidMode": "container:donor", "IpcMode": "container:donor"}
    namespace_modes.validate(hc, lookup_for(0), True)
    assert (hc["PidMode"], hc["IpcMode"]) == (f"container:{DONOR_ID}", f"container:{DONOR_ID}")


@pytest.mark.parametrize("hc, message", [
    ({"PidMode": "bogus"}, "invalid PID mode: bogus"),
    ({"PidMode": "container:"}, "invalid PID mode: container:"),
    ({"IpcMode": "bogus"}, "invalid IPC mode: bogus"),
    ({"CgroupnsMode": "bogus"}, "invalid cgroup namespace mode: bogus"),
    ({"IpcMode": "container:ghost"}, "No such container: ghost"),
])
def test_bad_values_are_refused(hc, message):
    with pytest.raises(InvalidArgument, match=f"^{message}$"):
        namespace_modes.validate(hc, lookup_for(0), True)


def test_resolve_shares_what_the_modes_ask_for(tmp_path):
    own = tmp_path / "shm"
    ns = namespace_modes.resolve({"PidMode": "host", "IpcMode": "shareable", "CgroupnsMode": "host"},
                                 lookup_for(0), own, True)
    assert (ns.pid_host, ns.pid_path, ns.ipc_host, ns.shm_own_dir, ns.shm_source, ns.private_cgroupns) == \
        (True, None, False, str(own), str(own), False)
    ns = namespace_modes.resolve({"IpcMode": "host"}, lookup_for(0), own, False)
    assert (ns.ipc_host, ns.shm_source, ns.no_shm) == (True, "/dev/shm", False)
    assert namespace_modes.resolve({"IpcMode": "none"}, lookup_for(0), own, False).no_shm
    ns = namespace_modes.resolve({"PidMode": f"container:{DONOR_ID}"}, lookup_for(4242), own, True)
    assert ns.pid_path == "/proc/4242/ns/pid" and ns.private_cgroupns


def test_joining_needs_a_running_shareable_donor(tmp_path):
    mode = {"IpcMode": f"container:{DONOR_ID}"}
    with pytest.raises(Conflict, match=f"can't join IPC of container {DONOR_ID}: container {DONOR_ID} is not running"):
        namespace_modes.resolve(mode, lookup_for(0), tmp_path, True)
    # A directory that is not a mount point: the donor is not shareable.
    with pytest.raises(InvalidArgument, match="non-shareable IPC"):
        namespace_modes.resolve(mode, lookup_for(4242, tmp_path), tmp_path, True)
    with pytest.raises(Conflict, match=f"^container {DONOR_ID} is not running$"):
        namespace_modes.resolve({"PidMode": f"container:{DONOR_ID}"}, lookup_for(0), tmp_path, True)


CID = "c" * 64


def test_cgroup_view_on_pure_v2(tmp_path):
    layout = CgroupLayout(v1={}, unified=tmp_path, unified_controllers=frozenset({"memory", "pids", "cpu"}))
    cg = container_cgroup(CID, layout)
    assert cgroup_mounts.plan(layout, cg, True, False) == cgroup_mounts.CgroupView(namespace=True, fresh_v2=True)
    host = cgroup_mounts.plan(layout, cg, False, False)
    assert (host.namespace, host.binds, host.readonly) == (False, (("", str(tmp_path / "dockyard" / CID)),), True)
    assert not cgroup_mounts.plan(layout, cg, True, True).readonly     # privileged: read-write


def test_cgroup_view_on_v1_binds_each_hierarchy(tmp_path):
    # Hierarchies as on a cgroup v1 host: "cpu,cpuacct" co-mounted, with the usual symlinks.
    root = tmp_path / "cgroup"
    mounts = ((root / "memory", frozenset({"rw", "memory"})),
              (root / "cpu,cpuacct", frozenset({"rw", "cpu", "cpuacct"})),
              (root / "net_cls", frozenset({"rw", "net_cls"})))
    for mount, _ in mounts:
        mount.mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    layout = CgroupLayout(v1={"memory": root / "memory", "cpu": root / "cpu,cpuacct",
                              "cpuacct": root / "cpu,cpuacct"}, unified=None, v1_mounts=mounts)
    cg = container_cgroup(CID, layout)
    view = cgroup_mounts.plan(layout, cg, False, False)
    assert view.v1_tmpfs and not view.namespace and view.readonly
    binds = dict(view.binds)
    assert binds["memory"] == str(root / "memory" / "dockyard" / CID)
    assert binds["cpu,cpuacct"] == str(root / "cpu,cpuacct" / "dockyard" / CID)
    # No container cgroup in net_cls: the one the engine (and so the child) is in.
    assert binds["net_cls"].startswith(str(root / "net_cls"))
    assert view.links == (("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct"))
    assert cgroup_mounts.plan(layout, cg, True, False).namespace


def test_device_values():
    assert device_rules.validate_devices([{"PathOnHost": "/dev/fuse"}]) == [
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"}]
    assert device_rules.validate_rules(["c 10:229 rwm", "a *:* m", "b 8:* r"]) == ["c 10:229 rwm", "a *:* m", "b 8:* r"]
    for bad in (["c 1:3"], ["c 1:3 rwx"], ["x 1:3 r"], [""]):
        with pytest.raises(InvalidArgument, match="invalid device cgroup rule format"):
            device_rules.validate_rules(bad)
    node = device_rules.gather([{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull",
                                 "CgroupPermissions": "rw"}])
    assert [(n.path, n.kind, n.major, n.minor, n.access) for n in node] == [("/dev/mynull", "c", 1, 3, "rw")]
    assert device_rules.allow_rules(node, ["b 8:0 r"]) == ["c 1:3 rw", "b 8:0 r"]


def test_volumes_from_merging():
    own = [MountRequest("bind", "/mine", "/src"), MountRequest("volume", "/img", ""),
           MountRequest("volume", "/other", "")]
    lent = [MountRequest("volume", "/img", "lent"), MountRequest("volume", "/mine", "ignored")]
    merged = volumes_from.merge(own, lent, {"Binds": ["/src:/mine"]})
    assert [(m.target, m.source) for m in merged] == [("/mine", "/src"), ("/img", "lent"), ("/other", "")]
    with pytest.raises(InvalidArgument, match="^invalid mode: xx$"):
        volumes_from.parse("name:xx")
    records = [{"Type": "volume", "Name": "v", "Destination": "/a/b", "RW": False},
               {"Type": "bind", "Source": "/src", "Destination": "/mine", "RW": True},
               {"Type": "volume", "Name": "w", "Destination": "/a", "RW": True}]
    at_start = volumes_from.at_start([MountRequest("bind", "/mine", "/src", create_source=True)], records,
                                     {"Binds": ["/src:/mine"]})
    assert [(m.target, m.source, m.readonly) for m in at_start] == [
        ("/mine", "/src", False), ("/a", "w", False), ("/a/b", "v", True)]
    assert at_start[0].create_source    # the user's own mount keeps what parse_mounts says
