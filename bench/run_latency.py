"""`docker run --rm busybox true` latency: Dockyard's native engine vs Debian's dockerd.

Both engines are started by this script in the same run, fed the same busybox image
from a local registry, and driven by the same docker CLI. Prints p50/p90 for each
and the ratio ours/dockerd (target: <= 0.15).

Usage: .venv/bin/python bench/run_latency.py [--runs N] [--network bridge|none]
Needs Debian's docker.io for the reference (installed with apt if missing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.dockerd import Dockerd  # noqa: E402
from tests.support.agent import start_agent  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402
from tests.support.test_images import push_test_images  # noqa: E402

CACHE_DIR = Path(os.environ.get("DOCKYARD_TEST_CACHE", Path.home() / ".cache" / "dockyard-tests"))


def time_runs(docker_host: str, image: str, runs: int, network: str) -> list[float]:
    env = {**os.environ, "DOCKER_HOST": docker_host}
    cmd = ["docker", "run", "--rm"]
    if network != "bridge":
        cmd += ["--network", network]
    cmd += [image, "true"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} via {docker_host} failed: {r.stderr.decode().strip()}")
    return times


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--network", default="bridge", choices=["bridge", "none"])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        base = Path(tmp)
        registry = start_registry(base / "registry")
        agent = dockerd = None
        try:
            image = push_test_images(registry, CACHE_DIR)["busybox"]
            agent = start_agent(socket=base / "agent" / "docker.sock", root=base / "agent" / "root")
            dockerd = Dockerd(base)
            engines = {"dockyard": agent.docker_host, "dockerd": dockerd.host}
            for host in engines.values():
                subprocess.run(["docker", "-H", host, "pull", "-q", image], check=True, capture_output=True)
                time_runs(host, image, 3, args.network)  # warm caches on both sides
            results: dict[str, list[float]] = {name: [] for name in engines}
            # Interleave in rounds so background noise hits both engines alike.
            for _ in range(max(1, args.runs // 5)):
                for name, host in engines.items():
                    results[name] += time_runs(host, image, 5, args.network)
        finally:
            if dockerd:
                dockerd.stop()
            if agent:
                agent.stop()
            registry.stop()

    print(f"docker run --rm busybox true (network={args.network}, {len(results['dockyard'])} runs each)")
    for name, values in results.items():
        print(f"  {name:9s} p50 {pct(values, 0.5) * 1000:7.1f} ms   p90 {pct(values, 0.9) * 1000:7.1f} ms"
              f"   mean {statistics.mean(values) * 1000:7.1f} ms")
    ratio = pct(results["dockyard"], 0.5) / pct(results["dockerd"], 0.5)
    ratio90 = pct(results["dockyard"], 0.9) / pct(results["dockerd"], 0.9)
    print(f"  ratio dockyard/dockerd: p50 {ratio:.3f}  p90 {ratio90:.3f}  (target <= 0.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
