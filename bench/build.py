"""`docker build` with the classic builder (DOCKER_BUILDKIT=0): Dockyard's native engine vs
Debian's dockerd, in the same run.

Both engines are started here and fed the same busybox image from a local registry; the
same docker CLI builds the same small multi-stage context on both, with `--network none`.
Three scenarios, each in interleaved rounds (ours, then dockerd's) so background noise
hits both alike:

* cold: `--no-cache`, every step runs (two RUN containers, COPYs, config steps);
* cached: the context unchanged, every step taken from the layer cache (target: ours
  <= 0.5 x dockerd);
* one file changed: one source file rewritten before each build, so the COPY of the
  sources and every step after it run again, the steps before come from the cache.

Prints p50 and p90 per engine and the ratio ours/dockerd of the p50s.

Usage: .venv/bin/python bench/build.py [--rounds N]
Needs Debian's docker.io for the reference (installed with apt if missing).
"""

from __future__ import annotations

import argparse
import os
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
DOCKERFILE = """\
FROM {base} AS build
ENV APP=/src
WORKDIR /src
COPY deps.txt ./
RUN cat deps.txt > /deps.out
COPY src/ ./src/
RUN mkdir -p /out && cat src/*.txt > /out/app && wc -c /out/app > /out/size
FROM {base}
LABEL app=bench
COPY --from=build /out /app
USER nobody
CMD ["cat", "/app/app"]
"""


def make_context(root: Path, base: str) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (root / "deps.txt").write_text("dependency list\n")
    for i in range(20):
        (root / "src" / f"part{i:02d}.txt").write_text(f"part {i}\n" * 100)
    return root


def timed_build(host: str, context: Path, *args: str) -> float:
    env = {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "0"}
    cmd = ["docker", "build", "-q", "--network", "none", "-t", "bench-build:latest", *args, str(context)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"build via {host} failed: {r.stderr.strip()}")
    return elapsed



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    scenarios = ("cold (--no-cache)", "cached rebuild", "one source file changed")
    results: dict[str, dict[str, list[float]]] = {s: {"dockyard": [], "dockerd": []} for s in scenarios}

    with tempfile.TemporaryDirectory(prefix="dockyard-bench-build-") as tmp:
        base = Path(tmp)
        registry = start_registry(base / "registry")
        agent = dockerd = None
        try:
            image = push_test_images(registry, CACHE_DIR, names=["busybox"])["busybox"]
            agent = start_agent(socket=base / "agent" / "docker.sock", root=base / "agent" / "root")
            dockerd = Dockerd(base / "dockerd", ["--bridge", "none", "--iptables=false"])
            engines = {"dockyard": agent.docker_host, "dockerd": dockerd.host}
            contexts = {}
            for name, host in engines.items():
                subprocess.run(["docker", "-H", host, "pull", "-q", image], check=True, capture_output=True)
                contexts[name] = make_context(base / f"context-{name}", image)
                timed_build(host, contexts[name])   # warm-up: fills the cache
            for round_no in range(args.rounds):
                for name, host in engines.items():
                    ctx = contexts[name]
                    results[scenarios[0]][name].append(timed_build(host, ctx, "--no-cache"))
                    timed_build(host, ctx)   # the cache now holds this context's steps
                    results[scenarios[1]][name].append(timed_build(host, ctx))
                    (ctx / "src" / "part07.txt").write_text(f"changed in round {round_no}\n")
                    results[scenarios[2]][name].append(timed_build(host, ctx))
        finally:
            if dockerd:
                dockerd.stop()
            if agent:
                agent.stop()
            registry.stop()

    print(f"docker build (classic builder, small multi-stage context), {args.rounds} interleaved rounds")
    for scenario in scenarios:
        values = results[scenario]
        print(f"  {scenario}")
        for name in ("dockyard", "dockerd"):
            print(f"    {name:9s} p50 {pct(values[name], 0.5) * 1000:7.0f} ms   "
                  f"p90 {pct(values[name], 0.9) * 1000:7.0f} ms")
        ratio = pct(values["dockyard"], 0.5) / pct(values["dockerd"], 0.5)
        target = "  (target <= 0.5)" if scenario == "cached rebuild" else ""
        print(f"    ratio dockyard/dockerd p50: {ratio:.2f}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
