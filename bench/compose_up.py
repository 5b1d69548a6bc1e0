"""`docker compose up -d` / `down -v` of the Compose test project, and service-name lookups:
Dockyard's native engine vs Debian's dockerd, in the same run.

Both engines are started here and fed the same images from a local registry; the
same Compose v2 plugin drives both. Rounds are interleaved (ours, then dockerd's) so
background noise hits both alike. Prints p50 of up and down for each and the ratio
ours/dockerd (target for up: <= 0.5). The project's slow service becomes ready at
once here (SLOW_DELAY=0, healthcheck every 200 ms), so up measures the engine, not
the project's own delay.

Then, with the project up, a one-off debian container (the `tools` service) resolves
the service name `backend` LOOKUPS times with getaddrinfo in a perl loop (the image
has no python) and prints each lookup's time: p50/p99 for ours and for dockerd's
embedded DNS (127.0.0.11).

If Dockyard's side fails at `up`, the script still measures dockerd, prints ours'
error, and exits 1.

Usage: .venv/bin/python bench/compose_up.py [--rounds N] [--lookups N]
Needs `make compose` (Compose v2 plugin) and Debian's docker.io.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.percentiles import pct  # noqa: E402 - imported after the sys.path insert above
from tests.compose.host_network import iptables_rules, remove_dockerd_leftovers  # noqa: E402 - imported after the sys.path insert above
from tests.support.agent import start_agent  # noqa: E402 - imported after the sys.path insert above
from tests.support.compose import DOCKERD_CHAIN_RULE, DOCKERD_COMPOSE_ARGS, DOCKERD_POOL_RULE, PROJECT_DIR, Compose  # noqa: E402 - imported after the sys.path insert above
from tests.support.dockerd import Dockerd  # noqa: E402 - imported after the sys.path insert above
from tests.support.registry import start_registry  # noqa: E402 - imported after the sys.path insert above
from tests.support.test_images import push_test_images  # noqa: E402 - imported after the sys.path insert above

CACHE_DIR = Path(os.environ.get("DOCKYARD_TEST_CACHE", Path.home() / ".cache" / "dockyard-tests"))
# Each lookup's time in microseconds, one per line (AF_UNSPEC, as most programs ask).
LOOKUP_LOOP = r"""
use Socket qw(getaddrinfo);
use Time::HiRes qw(time);
my ($name, $n) = @ARGV;
for (1 .. $n) {
    my $t0 = time;
    my ($err, @res) = getaddrinfo($name, "", {socktype => Socket::SOCK_STREAM});
    my $dt = time - $t0;
    die "lookup of $name failed: $err\n" if $err;
    printf "%d\n", $dt * 1e6;
}
"""


@dataclass
class Side:
    """One engine's Compose and its measurements."""

    name: str
    compose: Compose
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    lookups_us: list[int] = field(default_factory=list)
    error: str = ""

    def timed(self, *args: str) -> float:
        t0 = time.perf_counter()
        result = self.compose.run(*args, timeout=300)
        elapsed = time.perf_counter() - t0
        if result.returncode != 0:
            lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
            raise RuntimeError(f"compose {' '.join(args)} failed on {self.name}: "
                               f"{lines[-1] if lines else result.returncode}")
        return elapsed



def measure_lookups(side: Side, count: int) -> None:
    side.timed("up", "-d")
    try:
        result = side.compose.run("run", "--rm", "-T", "tools", "perl", "-e", LOOKUP_LOOP,
                                  "backend", str(count), timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"lookup loop failed on {side.name}: {result.stderr.strip()[-500:]}")
        side.lookups_us = [int(line) for line in result.stdout.split() if line.isdigit()]
        if len(side.lookups_us) != count:
            raise RuntimeError(f"lookup loop printed {len(side.lookups_us)} times, not {count}")
    finally:
        side.compose.run("down", "-v", "-t", "1", timeout=300)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lookups", type=int, default=1000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dockyard-bench-compose-") as tmp:
        base = Path(tmp)
        registry = start_registry(base / "registry")
        agent = dockerd = None
        rules_before = frozenset(iptables_rules())
        try:
            images = push_test_images(registry, CACHE_DIR, names=["busybox", "debian"])
            variables = {"BUSYBOX_IMAGE": images["busybox"], "DEBIAN_IMAGE": images["debian"],
                         "SLOW_DELAY": "0", "HEALTH_INTERVAL": "200ms"}
            shutil.copytree(PROJECT_DIR, base / "project")
            agent = start_agent(socket=base / "agent" / "docker.sock", root=base / "agent" / "root",
                                log_level="info")
            dockerd = Dockerd(base / "dockerd", DOCKERD_COMPOSE_ARGS)
            sides = [Side(name, Compose("v2", host, base / f"config-{name}", base / "project",
                                        f"bench{name}", variables))
                     for name, host in (("dockyard", agent.docker_host), ("dockerd", dockerd.host))]
            for side in sides:
                # Warm-up: pulls the images and brings up the project once.
                try:
                    side.compose.run("--profile", "debug", "pull", "-q", timeout=300)
                    side.timed("up", "-d")
                    side.timed("down", "-v", "-t", "1")
                except RuntimeError as err:
                    side.error = str(err)
                    side.compose.run("down", "-v", "-t", "1", timeout=300)
            for _ in range(args.rounds):
                for side in sides:
                    if side.error:
                        continue
                    try:
                        side.up.append(side.timed("up", "-d"))
                        side.down.append(side.timed("down", "-v", "-t", "1"))
                    except RuntimeError as err:
                        side.error = str(err)
            for side in sides:
                if not side.error:
                    try:
                        measure_lookups(side, args.lookups)
                    except RuntimeError as err:
                        side.error = str(err)
        finally:
            if dockerd:
                dockerd.stop()
                remove_dockerd_leftovers(rules_before, DOCKERD_POOL_RULE, DOCKERD_CHAIN_RULE)
            if agent:
                agent.stop()
            registry.stop()

    print(f"docker compose (v2) of tests/compose/project, {args.rounds} interleaved rounds")
    by_name = {side.name: side for side in sides}
    for side in sides:
        if side.error:
            print(f"  {side.name:9s} FAILED: {side.error}")
            continue
        print(f"  {side.name:9s} up -d p50 {pct(side.up, 0.5) * 1000:7.0f} ms   "
              f"down -v p50 {pct(side.down, 0.5) * 1000:7.0f} ms")
    ours, ref = by_name["dockyard"], by_name["dockerd"]
    if not ours.error and not ref.error:
        print(f"  ratio dockyard/dockerd: up {pct(ours.up, 0.5) / pct(ref.up, 0.5):.2f} (target <= 0.5)"
              f"   down {pct(ours.down, 0.5) / pct(ref.down, 0.5):.2f}")
    print(f"name lookups of a service name in a container ({args.lookups} getaddrinfo calls)")
    for side in sides:
        if side.lookups_us:
            print(f"  {side.name:9s} p50 {pct(side.lookups_us, 0.5):6.0f} us   "
                  f"p99 {pct(side.lookups_us, 0.99):6.0f} us")
        else:
            print(f"  {side.name:9s} not measured ({side.error or 'no result'})")
    return 1 if any(side.error for side in sides) else 0


if __name__ == "__main__":
    sys.exit(main())
