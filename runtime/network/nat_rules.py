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
from pathlib import Path
from typing import Iterator

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


def _ensure_jump(table: str, builtin: str, chain: str) -> None:
    for attempt in range(5):
        rc = _iptables("-t", table, "-C", builtin, "-j", chain, check=False).returncode
        if rc == 0:
            return
        if rc == 1:  # "does a matching rule exist?": no
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
