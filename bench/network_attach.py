"""Measure NetworkManager.attach()+detach() for bridge and none modes (what `docker run` pays).

Usage: sudo .venv/bin/python -m bench.network_attach [--runs N] [--pause MS]

Uses its own bridge/subnet/chain and removes them at the end. `--pause` waits between
runs so the warm pool can refill, as it would between real container starts; with
`--pause 0` the pool runs dry and attach() pays for creating the namespace itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from runtime.models import PortMapping
from runtime.network.manager import NetworkManager


def _measure(nm: NetworkManager, mode: str, runs: int, pause: float,
             ports: list[PortMapping]) -> tuple[list[float], list[float]]:
    attach_ms, detach_ms = [], []
    for i in range(runs):
        cid = f"bench{i:06d}"
        t0 = time.perf_counter()
        nm.attach(cid, mode, ports)
        t1 = time.perf_counter()
        nm.detach(cid)
        t2 = time.perf_counter()
        attach_ms.append((t1 - t0) * 1000)
        detach_ms.append((t2 - t1) * 1000)
        if pause:
            time.sleep(pause)  # lets the background pool refill, as between real `docker run`s
    return attach_ms, detach_ms


def _summary(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"p50 {statistics.median(values):6.2f} ms  p90 {p90:6.2f} ms  max {values[-1]:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pause", type=float, default=50, help="milliseconds between runs")
    args = parser.parse_args()
    tag = os.getpid() % 100000
    with tempfile.TemporaryDirectory(prefix="dockyard-netbench-") as tmp:
        nm = NetworkManager(Path(tmp), bridge=f"dyb{tag}", subnet=f"10.232.{tag % 250}.0/24",
                            chain=f"DYB-{tag}")
        t = time.perf_counter()
        nm.setup()
        print(f"setup: {(time.perf_counter() - t) * 1000:.1f} ms")
        time.sleep(0.5)  # first fill of the warm pool
        try:
            for label, mode, pause, ports in (
                ("bridge, warm pool", "bridge", args.pause / 1000, []),
                ("bridge + 1 published port", "bridge", args.pause / 1000, [PortMapping(80, host_ip="127.0.0.1")]),
                ("bridge, pool exhausted", "bridge", 0.0, []),
                ("none", "none", 0.0, []),
            ):
                attach_ms, detach_ms = _measure(nm, mode, args.runs, pause, ports)
                total = [a + d for a, d in zip(attach_ms, detach_ms, strict=True)]
                print(f"{label:28s} attach {_summary(attach_ms)} | detach {_summary(detach_ms)}"
                      f" | total {_summary(total)}")
        finally:
            nm.teardown_host()


if __name__ == "__main__":
    main()
