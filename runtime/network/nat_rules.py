"""iptables rules for a bridge network: MASQUERADE out of the subnet, FORWARD accepts.

All rules live in a chain of our own (in both the nat and filter tables) reached by
one jump from POSTROUTING / FORWARD, so installing is "flush our chain, refill it,
make sure the jump exists": idempotent, and a crash never leaves duplicates.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ..errors import RuntimeFailure

log = logging.getLogger(__name__)

IPTABLES = "iptables"
# Serialises our own check-then-insert sequences between engines (iptables -w only
# serialises single commands), so two engines starting together cannot both insert a jump.
LOCK_FILE = Path("/run/dockyard/iptables.lock")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run([IPTABLES, "-w", *args], capture_output=True, text=True)
    except FileNotFoundError as err:
        raise RuntimeFailure("iptables is not installed; it is needed for container NAT") from err
    if check and proc.returncode != 0:
        raise RuntimeFailure(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _apply(chains: dict[str, dict[str, list[str]]], jumps: list[tuple[str, str, str, bool]]) -> None:
    """Create-or-flush each chain and fill it, and add each jump (table, builtin chain,
    target, append) not there yet: one iptables-save to see the jumps and one
    iptables-restore for everything (each table is its own transaction), as processes
    are what set-up costs (~2 ms each here, more in a slow guest). Call under `_locked`."""
    present: set[tuple[str, str, str]] = set()
    if jumps:
        present = _present_jumps({table for table, _, _, _ in jumps})
    by_table: dict[str, list[str]] = {}
    for chain, tables in chains.items():
        for table in tables:
            by_table.setdefault(table, []).append(f":{chain} - [0:0]\n")
    for chain, tables in chains.items():
        for table, rules in tables.items():
            by_table[table] += [f"-A {chain} {rule}\n" for rule in rules]
    for table, builtin, target, append in jumps:
        if (table, builtin, target) not in present:
            by_table.setdefault(table, []).append(
                f"-A {builtin} -j {target}\n" if append else f"-I {builtin} 1 -j {target}\n")
    script = "".join(f"*{table}\n" + "".join(lines) + "COMMIT\n" for table, lines in by_table.items())
    if not script:
        return
    try:
        proc = subprocess.run([f"{IPTABLES}-restore", "-w", "--noflush"], input=script,
                              capture_output=True, text=True)
    except FileNotFoundError as err:
        raise RuntimeFailure("iptables is not installed; it is needed for container NAT") from err
    if proc.returncode != 0:
        raise RuntimeFailure(f"iptables-restore for {', '.join(chains) or 'jumps'} failed: "
                             f"{proc.stderr.strip()}")


def _present_jumps(tables: set[str]) -> set[tuple[str, str, str]]:
    """(table, builtin, target) of every plain `-A BUILTIN -j TARGET` rule in `tables`."""
    found: set[tuple[str, str, str]] = set()
    for table in sorted(tables):
        saved = _iptables_save(table)
        for line in saved.splitlines():
            words = line.split()
            if len(words) == 4 and words[0] == "-A" and words[2] == "-j":
                found.add((table, words[1], words[3]))
    return found


def _iptables_save(table: str) -> str:
    try:
        proc = subprocess.run([f"{IPTABLES}-save", "-t", table], capture_output=True, text=True)
    except FileNotFoundError as err:
        raise RuntimeFailure("iptables is not installed; it is needed for container NAT") from err
    if proc.returncode != 0:
        raise RuntimeFailure(f"iptables-save -t {table} failed: {proc.stderr.strip()}")
    return proc.stdout


def install(chain: str, bridge: str, subnet: str) -> None:
    """(Re)build our chains for `bridge`/`subnet` and hook them in."""
    with _locked():
        _apply({chain: {
            "nat": [f"-s {subnet} ! -o {bridge} -j MASQUERADE"],
            "filter": [
                f"-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                f"-i {bridge} -j ACCEPT",
            ],
        }}, [("nat", "POSTROUTING", chain, False), ("filter", "FORWARD", chain, False)])
    log.debug("iptables chain %s installed for %s (%s)", chain, bridge, subnet)


def uninstall(chain: str) -> None:
    """Remove our jumps and chains; missing pieces are ignored."""
    with _locked():
        for table, builtin in (("nat", "POSTROUTING"), ("filter", "FORWARD")):
            while _iptables("-t", table, "-D", builtin, "-j", chain, check=False).returncode == 0:
                pass
            _iptables("-t", table, "-F", chain, check=False)
            _iptables("-t", table, "-X", chain, check=False)


def rules(table: str) -> list[str]:
    """`iptables -t TABLE -S` lines, for inspection and tests."""
    return _iptables("-t", table, "-S").stdout.splitlines()


def install_network(chain: str, bridge: str, subnet: str, *, internal: bool = False,
                    icc: bool = True, masquerade: bool = True, other_bridges: tuple[str, ...] = ()) -> None:
    """(Re)build the chains of one user network and hook them in.

    Isolation as Docker's: `chain`, jumped to from the top of FORWARD, accepts replies
    into `bridge` and drops every other packet entering it from elsewhere, so a container
    on another network cannot reach it (published ports reach containers through the
    userspace proxy, not FORWARD). Accepting what leaves the bridge happens in
    `chain`-OUT, jumped to from the end of FORWARD: only after every network's chain had
    its say, or an accept here would let the packet past the target network's drop. An
    internal network drops everything leaving the bridge and is never masqueraded.
    """
    filter_rules = [f"-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                    f"-i {bridge} -o {bridge} -j {'ACCEPT' if icc else 'DROP'}",
                    f"-o {bridge} -j DROP"]
    filter_rules += [f"-i {bridge} -o {other} -j DROP" for other in other_bridges]
    if internal:
        filter_rules.append(f"-i {bridge} -j DROP")
    out_rules = [] if internal else [f"-i {bridge} -j ACCEPT"]
    nat_rules = [] if internal or not masquerade else [f"-s {subnet} ! -o {bridge} -j MASQUERADE"]
    with _locked():
        _apply({chain: {"nat": nat_rules, "filter": filter_rules}, f"{chain}-OUT": {"filter": out_rules}},
               [("nat", "POSTROUTING", chain, False), ("filter", "FORWARD", chain, False),
                ("filter", "FORWARD", f"{chain}-OUT", True)])
    log.debug("iptables chain %s installed for network bridge %s (%s)", chain, bridge, subnet)


def uninstall_network(chain: str) -> None:
    """Remove a user network's chains and jumps; missing pieces are ignored."""
    uninstall(chain)
    with _locked():
        while _iptables("-t", "filter", "-D", "FORWARD", "-j", f"{chain}-OUT", check=False).returncode == 0:
            pass
        _iptables("-t", "filter", "-F", f"{chain}-OUT", check=False)
        _iptables("-t", "filter", "-X", f"{chain}-OUT", check=False)
