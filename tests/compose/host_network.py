"""What an engine leaves on the host's network: bridges, iptables rules, pinned namespaces.

`HostNetwork.snapshot()` records the bridges (with their IPv4 addresses), every
iptables rule and chain (without counters) and every mount of a namespace file
(nsfs: how dockerd and Dockyard pin a container's network namespace). Comparing a
snapshot taken before `up` with one after `down -v` shows what the project left.

Other test sessions may create and delete their own bridges and rules on this host
at the same time, so leftovers are counted only among what appeared in between.

`remove_new_rules(before, only)` deletes the iptables rules and chains that appeared since
`before`; `remove_dockerd_leftovers` uses it for what a stopped reference dockerd leaves.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def bridges() -> dict[str, list[str]]:
    """{bridge name: [its IPv4 addresses with prefix]} from `ip -o link/addr`."""
    found: dict[str, list[str]] = {}
    for line in _run("ip", "-o", "link", "show", "type", "bridge").splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        found[name] = []
    for line in _run("ip", "-o", "-4", "addr", "show").splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[1] in found:
            found[fields[1]].append(fields[3])
    return found


def iptables_rules() -> set[str]:
    """Every rule and chain of iptables-save as 'table|line', counters dropped."""
    rules: set[str] = set()
    table = ""
    for line in _run("iptables-save").splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            rules.add(f"{table}|:{line[1:].split()[0]}")
        elif line.startswith("-A"):
            rules.add(f"{table}|{line}")
    return rules


def nsfs_mounts() -> set[str]:
    """Mount points of namespace files (a pinned netns is a bind mount of /proc/PID/ns/net)."""
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split(" ", 1)[0] == "nsfs":
                points.add(pre.split()[4])
    return points


@dataclass(frozen=True)
class HostNetwork:
    """One snapshot of the host's bridges, iptables rules and pinned namespaces."""

    bridges: dict[str, list[str]]
    rules: frozenset[str]
    namespaces: frozenset[str]

    @classmethod
    def snapshot(cls) -> HostNetwork:
        return cls(bridges(), frozenset(iptables_rules()), frozenset(nsfs_mounts()))

    def bridges_on(self, subnets: list[str]) -> list[str]:
        """Bridges holding an address inside one of `subnets` (a network's gateway)."""
        nets = [ipaddress.ip_network(s) for s in subnets]
        return sorted(name for name, addrs in self.bridges.items()
                      if any(ipaddress.ip_interface(a).ip in n for a in addrs for n in nets))


@dataclass(frozen=True)
class Leftovers:
    """What appeared between two snapshots and is still there, by kind."""

    bridges: list[str]
    rules: list[str]
    namespaces: list[str]

    def counts(self) -> dict[str, int]:
        return {"bridges": len(self.bridges), "iptables rules": len(self.rules),
                "network namespaces": len(self.namespaces)}


def leftovers(before: HostNetwork, after: HostNetwork, subnets: list[str],
              bridge_names: list[str], namespace_paths: list[str]) -> Leftovers:
    """What a project left: new bridges, new rules naming its bridges or subnets, pinned
    namespaces at its containers' sandbox paths or new ones under the same directories.

    `subnets`, `bridge_names` and `namespace_paths` were read while the project was up;
    they scope the comparison to this project, as other sessions share the host.
    """
    new_bridges = sorted(set(after.bridges) - set(before.bridges))
    left_bridges = sorted(set(new_bridges) & set(bridge_names) | set(after.bridges_on(subnets)))
    # A rule names an interface exactly (-i br-123 / -o br-123) or a subnet as text.
    patterns = [re.compile(rf"(^|\s)-[io] {re.escape(b)}(\s|$)") for b in bridge_names]
    patterns += [re.compile(re.escape(str(ipaddress.ip_network(s)))) for s in subnets]
    left_rules = sorted(r for r in after.rules - before.rules
                        if any(p.search(r) for p in patterns))
    dirs = {p.rsplit("/", 1)[0] for p in namespace_paths if "/" in p}
    left_ns = sorted(p for p in after.namespaces
                     if p in namespace_paths or (p not in before.namespaces
                                                 and p.rsplit("/", 1)[0] in dirs))
    return Leftovers(left_bridges, left_rules, left_ns)


def remove_new_rules(before: frozenset[str], only: re.Pattern[str] | None = None) -> None:
    """Delete the iptables rules, then the chains, that were not there in `before`
    (and match `only`, when given: other sessions' new rules are not ours to remove)."""
    now = {r for r in iptables_rules() if only is None or only.search(r)}
    for entry in sorted(now - before):
        table, line = entry.split("|", 1)
        if line.startswith("-A "):
            spec = shlex.split(line)[1:]
            subprocess.run(["iptables", "-w", "-t", table, "-D", *spec], capture_output=True)
    for entry in sorted(now - before):
        table, line = entry.split("|", 1)
        if line.startswith(":"):
            chain = line[1:]
            subprocess.run(["iptables", "-w", "-t", table, "-F", chain], capture_output=True)
            result = subprocess.run(["iptables", "-w", "-t", table, "-X", chain],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                log.warning("could not remove chain %s/%s: %s", table, chain, result.stderr.strip())


def other_dockerd_running() -> bool:
    """Whether any dockerd process runs (called once ours has exited: someone else's)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdecimal():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    return True
            except OSError:
                continue
    return False


def remove_dockerd_leftovers(before: frozenset[str], own: re.Pattern[str],
                             shared: re.Pattern[str]) -> None:
    """After our reference dockerd stopped: remove the new rules matching `own` (its pool),
    and the new ones matching `shared` (Docker's chains and jumps, which every dockerd
    installs alike) only when no other dockerd runs that may rely on them."""
    remove_new_rules(before, only=own)
    if other_dockerd_running():
        log.info("another dockerd runs: Docker's shared iptables chains are left to it")
        return
    remove_new_rules(before, only=shared)
