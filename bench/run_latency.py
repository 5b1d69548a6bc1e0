"""`docker run --rm busybox true` latency: Dockyard's native engine vs Debian's dockerd.

Both engines are started by this script in the same run, fed the same busybox image
from a local registry, and driven by the same docker CLI. Prints p50/p90 for each
and the ratio ours/dockerd (target: <= 0.15).

`--security-opt` is passed to every `docker run` of both engines, so the cost of
the seccomp filter shows as the difference between a default run and one with
`--security-opt seccomp=unconfined`; `--compare-seccomp` measures both in one go.

Usage: .venv/bin/python bench/run_latency.py [--runs N] [--network bridge|none]
                                             [--security-opt OPT]... [--compare-seccomp]
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

from bench.percentiles import pct  # noqa: E402 - needs REPO on sys.path first
from tests.support.agent import start_agent  # noqa: E402 - needs REPO on sys.path first
from tests.support.dockerd import Dockerd  # noqa: E402 - needs REPO on sys.path first
from tests.support.registry import start_registry  # noqa: E402 - needs REPO on sys.path first
from tests.support.test_images import push_test_images  # noqa: E402 - needs REPO on sys.path first

CACHE_DIR = Path(os.environ.get("DOCKYARD_TEST_CACHE", Path.home() / ".cache" / "dockyard-tests"))


def time_runs(docker_host: str, image: str, runs: int, network: str,
              security_opts: tuple[str, ...] = ()) -> list[float]:
    env = {**os.environ, "DOCKER_HOST": docker_host}
    cmd = ["docker", "run", "--rm"]
    if network != "bridge":
        cmd += ["--network", network]
    for opt in security_opts:
        cmd += ["--security-opt", opt]
    cmd += [image, "true"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} via {docker_host} failed: {r.stderr.decode().strip()}")
    return times



def report(label: str, results: dict[str, list[float]]) -> None:
    print(f"docker run --rm busybox true ({label}, {len(results['dockyard'])} runs each)")
    for name, values in results.items():
        print(f"  {name:9s} p50 {pct(values, 0.5) * 1000:7.1f} ms   p90 {pct(values, 0.9) * 1000:7.1f} ms"
              f"   mean {statistics.mean(values) * 1000:7.1f} ms")
    ratio = pct(results["dockyard"], 0.5) / pct(results["dockerd"], 0.5)
    ratio90 = pct(results["dockyard"], 0.9) / pct(results["dockerd"], 0.9)
    print(f"  ratio dockyard/dockerd: p50 {ratio:.3f}  p90 {ratio90:.3f}  (target <= 0.15)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--network", default="bridge", choices=["bridge", "none"])
    ap.add_argument("--security-opt", action="append", default=[], dest="security_opts",
                    help="passed to every docker run (e.g. seccomp=unconfined); repeatable")
    ap.add_argument("--compare-seccomp", action="store_true",
                    help="measure the default profile and seccomp=unconfined, interleaved")
    args = ap.parse_args()
    variants: dict[str, tuple[str, ...]] = {"default": tuple(args.security_opts)}
    if args.compare_seccomp:
        variants = {"seccomp default": tuple(args.security_opts),
                    "seccomp=unconfined": (*args.security_opts, "seccomp=unconfined")}

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
                for opts in variants.values():
                    time_runs(host, image, 3, args.network, opts)  # warm caches on both sides
            results: dict[str, dict[str, list[float]]] = {
                variant: {name: [] for name in engines} for variant in variants}
            # Interleave in rounds so background noise hits both engines (and variants) alike.
            for _ in range(max(1, args.runs // 5)):
                for variant, opts in variants.items():
                    for name, host in engines.items():
                        results[variant][name] += time_runs(host, image, 5, args.network, opts)
        finally:
            if dockerd:
                dockerd.stop()
            if agent:
                agent.stop()
            registry.stop()

    for variant, opts in variants.items():
        report(f"network={args.network}" + "".join(f" --security-opt {o}" for o in opts), results[variant])
    if args.compare_seccomp:
        for name in ("dockyard", "dockerd"):
            cost = (pct(results["seccomp default"][name], 0.5)
                    - pct(results["seccomp=unconfined"][name], 0.5))
            print(f"  seccomp cost on {name}: {cost * 1000:+.1f} ms at p50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
