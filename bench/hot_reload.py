"""Benchmark of hot reload through a shared folder (issue 12).

Usage: .venv/bin/python -m bench.hot_reload [--edits 100] [--files 100000] [--idle 10] [--host-only]

Prints:
* the host watcher alone on a tree of `--files` files (100 per directory): the time
  to set it up (watchdog walks the tree once), the inotify watches it holds, and its
  CPU while the tree is idle for `--idle` seconds (target ~0);
* a machine (direct QEMU) sharing that tree, with a container running the static
  inotify watcher of tests/support: the delay from a host write to the watcher's
  IN_MODIFY line as read on the host through `docker logs -f` (so it includes the
  log path), p50 and p99 over `--edits` edits (targets p50 <= 100 ms, p99 <= 500 ms
  under TCG), and the supervisor's CPU while idle with the whole tree watched.

Everything but the guest image cache lives in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.percentiles import pct

REPO = Path(__file__).resolve().parents[1]
NAME = "hrbench"
log = logging.getLogger("bench.hot_reload")


def make_tree(root: Path, files: int, per_dir: int = 100) -> None:
    for index in range(files):
        if index % per_dir == 0:
            directory = root / f"d{index // per_dir:05d}"
            directory.mkdir(parents=True)
        (directory / f"f{index % per_dir:03d}.txt").write_bytes(b"x")


def inotify_watches() -> int:
    """Inotify watches this process holds (Linux: 'inotify wd:' lines in /proc/self/fdinfo)."""
    count = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            count += Path(f"/proc/self/fdinfo/{fd}").read_text().count("inotify wd:")
        except OSError:
            pass
    return count


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_watcher_idle(tree: Path, idle_s: float) -> dict[str, float]:
    from desktop.share_watch import ChangeSet, ShareWatch, Watchers

    changes = ChangeSet()
    watchers = Watchers([ShareWatch(str(tree), str(tree), state="on")], changes)
    t0 = time.monotonic()
    watchers.start()
    setup = time.monotonic() - t0
    try:
        watches = inotify_watches()
        c0, w0 = time.process_time(), time.monotonic()
        time.sleep(idle_s)  # the measured idle period
        cpu = time.process_time() - c0
        wall = time.monotonic() - w0
        (tree / "d00000" / "f000.txt").write_bytes(b"y")   # still watching: the change is seen
        seen = changes.wait(10)
    finally:
        watchers.stop()
    return {"setup_s": setup, "watches": watches, "idle_cpu_pct": 100 * cpu / wall, "seen": float(seen)}


def machine_latency(base: Path, tree: Path, edits: int, idle_s: float) -> dict[str, float]:
    from desktop.paths import image_cache_dir
    from tests.support.registry import start_registry
    from tests.support.watcher_image import WatcherLog, push_watcher_image

    home = base / "home"
    env = dict(os.environ, DOCKYARD_HOME=str(home), DOCKYARD_IMAGE_CACHE=str(image_cache_dir()))
    env.pop("DOCKER_HOST", None)
    docker_env = dict(env, DOCKER_HOST=f"unix://{home / 'run' / NAME / 'docker.sock'}")

    def dockyard(*args: str) -> str:
        import subprocess

        proc = subprocess.run([sys.executable, "-m", "desktop.cli", "machine", *args, "--name", NAME],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"dockyard machine {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def docker(*args: str) -> None:
        import subprocess

        subprocess.run(["docker", *args], check=True, capture_output=True, env=docker_env, timeout=300)

    registry = start_registry(base / "registry")
    watcher = None
    try:
        image = push_watcher_image(registry, base)
        dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--mount", str(tree), "--backend", "qemu")
        dockyard("start")
        docker("run", "-d", "--name", "watch", "-v", f"{tree}:/w", image, "/w")
        watcher = WatcherLog(["docker", "logs", "-f", "watch"], docker_env)
        watcher.wait_for(lambda line: line == "ready", timeout=120)
        import json

        supervisor = json.loads(dockyard("status", "--json"))["supervisor_pid"]
        c0, w0 = cpu_seconds(supervisor), time.monotonic()
        time.sleep(idle_s)  # the measured idle period
        idle = 100 * (cpu_seconds(supervisor) - c0) / (time.monotonic() - w0)
        target = tree / "lat.txt"
        delays = []
        for i in range(edits):
            start = watcher.count()
            t0 = time.monotonic()
            target.write_text(f"edit {i}\n")
            _, arrived = watcher.wait_for(lambda line: line == "IN_MODIFY /w/lat.txt", start)
            delays.append(arrived - t0)
        stats = json.loads(dockyard("status", "--json")).get("hot_reload", {})
        return {"p50_ms": 1000 * pct(delays, 0.5), "p99_ms": 1000 * pct(delays, 0.99),
                "max_ms": 1000 * max(delays), "supervisor_idle_cpu_pct": idle,
                "forwarded": stats.get("forwarded", 0), "applied": stats.get("applied", 0)}
    finally:
        if watcher is not None:
            watcher.close()
        try:
            dockyard("rm", "-f")
        except RuntimeError as err:
            log.warning("%s", err)
        registry.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--host-only", action="store_true", help="only the host watcher on the tree")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dy-hot-reload-") as tmp:
        base = Path(tmp)
        tree = base / "tree"
        t0 = time.monotonic()
        make_tree(tree, args.files)
        print(f"tree: {args.files} files in {args.files // 100} directories ({time.monotonic() - t0:.1f} s to make)")
        host = host_watcher_idle(tree, args.idle)
        print(f"host watcher: set up in {host['setup_s']:.2f} s, {host['watches']} inotify watches, "
              f"idle CPU {host['idle_cpu_pct']:.3f} % of a core over {args.idle:.0f} s "
              f"(a change after that seen: {bool(host['seen'])})")
        if args.host_only:
            return 0
        vm = machine_latency(base, tree, args.edits, args.idle)
        print(f"host write -> container IN_MODIFY over {args.edits} edits: p50 {vm['p50_ms']:.0f} ms, "
              f"p99 {vm['p99_ms']:.0f} ms, max {vm['max_ms']:.0f} ms (targets 100 / 500 ms under TCG)")
        print(f"supervisor idle CPU with the tree watched: {vm['supervisor_idle_cpu_pct']:.3f} % of a core; "
              f"forwarded {vm['forwarded']}, applied {vm['applied']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
