"""/sys/fs/cgroup inside a container, as Docker (runc) mounts it, chosen by the host's layout.

- Pure cgroup v2 with a private cgroup namespace (Docker's default there): after
  joining its cgroup the process unshares a cgroup namespace and mounts a fresh
  cgroup2 read-only, so its own cgroup is the root it sees.
- Pure cgroup v2 with the host's cgroup namespace: the container's cgroup
  directory is bound read-only at /sys/fs/cgroup.
- cgroup v1 or hybrid (Docker's default there is the host's namespace): a tmpfs
  at /sys/fs/cgroup holds one read-only bind per v1 hierarchy, named as on the
  host, of the container's own cgroup in it; the host's symlinks between them
  (cpu -> cpu,cpuacct) are repeated. With a private namespace the process
  unshares it after joining its cgroups, and the binds then show as "/".

`plan` runs in the engine (it reads the layout); `mount_before_pivot` and
`enter_namespace` run in the forked child and only make syscalls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..linux import syscalls as sc
from ..linux.cgroups import CgroupLayout, ContainerCgroup

TARGET = "sys/fs/cgroup"
_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME


@dataclass(frozen=True)
class CgroupView:
    """How the child builds /sys/fs/cgroup and whether it gets its own cgroup namespace."""

    namespace: bool = False                       # unshare CLONE_NEWCGROUP once in its cgroups
    fresh_v2: bool = False                        # then mount a new cgroup2 (pure v2, private)
    v1_tmpfs: bool = False                        # a tmpfs holding one bind per hierarchy
    binds: tuple[tuple[str, str], ...] = ()       # (name under /sys/fs/cgroup, "" = itself; host dir)
    links: tuple[tuple[str, str], ...] = ()       # (name, symlink target) in the tmpfs
    readonly: bool = True


def _own_cgroups(proc_cgroup: str) -> dict[frozenset[str], str]:
    """The engine's cgroup per v1 hierarchy, keyed by the hierarchy's controllers."""
    own: dict[frozenset[str], str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1]:
            own[frozenset(parts[1].split(","))] = parts[2]
    return own


def _host_links(directory: Path, names: set[str]) -> list[tuple[str, str]]:
    links = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if entry.is_symlink():
            target = os.readlink(entry.path)
            if target in names and "/" not in target:
                links.append((entry.name, target))
    return links


def plan(layout: CgroupLayout, cg: ContainerCgroup, private_namespace: bool, privileged: bool) -> CgroupView:
    """What the child mounts for this host layout and --cgroupns mode."""
    readonly = not privileged
    if layout.pure_v2:
        if private_namespace:
            return CgroupView(namespace=True, fresh_v2=True, readonly=readonly)
        if cg.unified is None:
            return CgroupView()
        return CgroupView(binds=(("", os.fspath(cg.unified)),), readonly=readonly)
    if not layout.v1_mounts:
        return CgroupView(namespace=private_namespace)
    with open("/proc/self/cgroup") as f:
        own = _own_cgroups(f.read())
    mine = {d.parent.parent: d for d in cg.dirs}
    binds = []
    for mount, options in layout.v1_mounts:
        source = mine.get(mount)
        if source is None:
            # A hierarchy the engine keeps no container cgroup in: the child stays in the engine's one.
            path = next((p for ctl, p in own.items() if ctl <= options), "/")
            source = mount / path.lstrip("/")
        binds.append((mount.name, os.fspath(source)))
    links = _host_links(layout.v1_mounts[0][0].parent, {name for name, _ in binds})
    return CgroupView(namespace=private_namespace, v1_tmpfs=True, binds=tuple(binds),
                      links=tuple(links), readonly=readonly)


def _bind_readonly(source: str, target: str, readonly: bool) -> None:
    sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
    if readonly:
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _FLAGS)


def mount_before_pivot(view: CgroupView, root: str, resolve: Callable[[str, str], str]) -> None:
    """Child side, before pivot_root: the binds from host paths (`resolve` maps into the root)."""
    if not view.binds:
        return
    target = resolve(root, "/" + TARGET)
    os.makedirs(target, mode=0o755, exist_ok=True)
    if not view.v1_tmpfs:
        _bind_readonly(view.binds[0][1], target, view.readonly)
        return
    sc.mount("tmpfs", target, "tmpfs", _FLAGS, "mode=755")
    for name, source in view.binds:
        os.mkdir(f"{target}/{name}", 0o755)
        _bind_readonly(source, f"{target}/{name}", view.readonly)
    for name, link_target in view.links:
        os.symlink(link_target, f"{target}/{name}")
    os.chmod(target, 0o555)   # as runc leaves it


def enter_namespace(view: CgroupView) -> None:
    """Child side, after pivot_root and once in its cgroups: own cgroup namespace and cgroup2."""
    if not view.namespace:
        return
    sc.unshare(sc.CLONE_NEWCGROUP)
    if view.fresh_v2:
        sc.mount("cgroup", "/" + TARGET, "cgroup2", _FLAGS | (sc.MS_RDONLY if view.readonly else 0))
