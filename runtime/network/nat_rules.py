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
import time
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


def _restore(chain: str, tables: dict[str, list[str]]) -> None:
    """Create-or-flush `chain` in each table and fill it: one iptables-restore process
    (each table is its own transaction), as processes are what set-up costs in a slow guest."""
    script = "".join(f"*{table}\n:{chain} - [0:0]\n" + "".join(f"-A {chain} {rule}\n" for rule in rules)
                     + "COMMIT\n" for table, rules in tables.items())
    proc = subprocess.run([f"{IPTABLES}-restore", "-w", "--noflush"], input=script,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeFailure(f"iptables-restore for {'/'.join(tables)} {chain} failed: "
                             f"{proc.stderr.strip()}")


def _ensure_jump(table: str, builtin: str, chain: str, append: bool = False) -> None:
    for attempt in range(5):
        rc = _iptables("-t", table, "-C", builtin, "-j", chain, check=False).returncode
        if rc == 0:
            return
        if rc == 1:  # "does a matching rule exist?": no
            if append:
                _iptables("-t", table, "-A", builtin, "-j", chain)
            else:
                _iptables("-t", table, "-I", builtin, "1", "-j", chain)
            return
        # Other codes are transient failures (e.g. a concurrent nft transaction): ask again.
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeFailure(f"iptables cannot check the {builtin} jump to {chain} (exit code {rc})")


def install(chain: str, bridge: str, subnet: str) -> None:
    """(Re)build our chains for `bridge`/`subnet` and hook them in."""
    with _locked():
        _restore(chain, {
            "nat": [f"-s {subnet} ! -o {bridge} -j MASQUERADE"],
            "filter": [
                f"-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                f"-i {bridge} -j ACCEPT",
            ],
        })
        _ensure_jump("nat", "POSTROUTING", chain)
        _ensure_jump("filter", "FORWARD", chain)
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
        _restore(chain, {"nat": nat_rules, "filter": filter_rules})
        _restore(f"{chain}-OUT", {"filter": out_rules})
        _ensure_jump("nat", "POSTROUTING", chain)
        _ensure_jump("filter", "FORWARD", chain)
        _ensure_jump("filter", "FORWARD", f"{chain}-OUT", append=True)
    log.debug("iptables chain %s installed for network bridge %s (%s)", chain, bridge, subnet)


def uninstall_network(chain: str) -> None:
    """Remove a user network's chains and jumps; missing pieces are ignored."""
    uninstall(chain)
    with _locked():
        while _iptables("-t", "filter", "-D", "FORWARD", "-j", f"{chain}-OUT", check=False).returncode == 0:
            pass
        _iptables("-t", "filter", "-F", f"{chain}-OUT", check=False)
        _iptables("-t", "filter", "-X", f"{chain}-OUT", check=False)
