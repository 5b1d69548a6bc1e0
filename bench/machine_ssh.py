"""`dockyard machine ssh true` latency: over the supervisor's live link vs a new SSH connection.

Both are measured in the same run on the same machine: the reference is the
fallback path (the CLI's own OpenSSH connection), forced by moving the
supervisor's control socket aside for those runs. The interpreter's own start
(`python -c pass`) is printed as the floor the CLI cannot go below.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return elapsed


def measure_ssh(b: Any, name: str, runs: int, repo: Path) -> dict[str, list[float]]:
    """Seconds per `dockyard machine ssh true` (live link, new connection) and per `python -c pass`."""
    argv = [sys.executable, "-m", "desktop.cli", "machine", "ssh", "--name", name, "true"]
    results: dict[str, list[float]] = {"floor": [], "live link": [], "new connection": []}
    for _ in range(runs):
        results["floor"].append(_timed([sys.executable, "-c", "pass"], b.env, repo))
        results["live link"].append(_timed(argv, b.env, repo))
    control = b.home / "run" / name / "control.sock"
    aside = control.with_name("control.sock.aside")
    control.rename(aside)
    try:
        for _ in range(max(3, runs // 3)):
            results["new connection"].append(_timed(argv, b.env, repo))
    finally:
        aside.rename(control)
    return results


def report_ssh(results: dict[str, list[float]], p50: Any) -> None:
    live, new, floor = (p50(results[k]) for k in ("live link", "new connection", "floor"))
    print(f"`dockyard machine ssh true` ({len(results['live link'])} runs; target <= 0.5 s):")
    print(f"  over the supervisor's link: p50 {live:.2f} s")
    print(f"  new SSH connection (old path, the fallback): p50 {new:.2f} s  (ratio {new / live:.1f}x)")
    print(f"  interpreter floor `python -c pass`: p50 {floor:.3f} s")
