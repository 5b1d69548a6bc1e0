"""The desktop app's footprint: launch to a shown window, resident memory with 20 containers, idle CPU.

    .venv/bin/python bench/desktop_app.py [--idle 60]

Starts a registry, a native engine (`dockyard-agent serve`) with 20 running
containers, then `dockyard-desktop --engine-socket … --no-start` on Qt's
offscreen platform, and measures:

* launch → "dashboard shown" (the app logs it once its event loop has run);
* resident memory (VmRSS) once the 20 rows are listed;
* CPU time used over `--idle` seconds with the window hidden (tray only), and
  again with the dashboard's Containers page on screen (it samples CPU and
  memory of running containers every few seconds while visible).

The reference, measured in the same run the same way, is a bare PySide6
process showing one empty QMainWindow: the ratios say what the app adds to
what Qt itself costs. Targets (issue 10): ≤ 120 MB, ≤ 1.5 s, idle ≈ 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.agent import start_agent  # noqa: E402 - needs REPO on sys.path first
from tests.support.registry import start_registry  # noqa: E402 - needs REPO on sys.path first
from tests.support.test_images import push_test_images  # noqa: E402 - needs REPO on sys.path first

CONTAINERS = 20
BARE_QT = """
import sys, logging
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv)
window = QMainWindow()
window.resize(1100, 680)
window.show()
QTimer.singleShot(0, lambda: print("dockyard-desktop: dashboard shown", file=sys.stderr, flush=True))
app.exec()
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_line(proc: subprocess.Popen, marker: str, timeout: float) -> float:
    """Seconds from now until a stderr line containing `marker` (reads line by line)."""
    assert proc.stderr is not None
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"the process ended before {marker!r}")
        if marker in line:
            return time.monotonic() - t0
    raise SystemExit(f"no {marker!r} within {timeout} s")


def launch(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    wait_line(proc, "dashboard shown", 60)
    return proc, time.monotonic() - t0


def idle_cpu(pid: int, seconds: float) -> float:
    start = cpu_seconds(pid)
    time.sleep(seconds)  # the measurement window itself, not synchronisation
    return cpu_seconds(pid) - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle CPU measurement")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-desktop-"))
    registry = start_registry(base / "registry")
    agent = start_agent(base / "docker.sock", base / "root", log_level="info")
    procs: list[subprocess.Popen] = []
    try:
        image = push_test_images(registry, Path.home() / ".cache" / "dockyard-tests")["busybox"]
        for i in range(CONTAINERS):
            out = agent.docker("run", "-d", "--name", f"bench-{i:02d}", image, "sleep", "3600")
            if out.returncode != 0:
                raise SystemExit(out.stderr)
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DOCKYARD_HOME=str(base / "home"),
                   PYTHONPATH=str(REPO))
        bare, bare_launch = launch([sys.executable, "-c", BARE_QT], env)
        procs.append(bare)
        time.sleep(2)  # let the bare window settle before reading its memory
        bare_rss = rss_mb(bare.pid)
        bare_cpu = idle_cpu(bare.pid, min(args.idle, 10))
        bare.terminate()

        app_argv = [sys.executable, "-m", "desktop.app", "--engine-socket", str(agent.socket), "--no-start", "-v"]
        app, app_launch = launch(app_argv, env)
        procs.append(app)
        wait_line(app, f"listing {CONTAINERS} containers", 60)
        time.sleep(5)  # let the first stats sample land before reading memory
        app_rss = rss_mb(app.pid)
        shown_cpu = idle_cpu(app.pid, args.idle)
        app.terminate()
        app.wait(10)

        tray_app = subprocess.Popen(app_argv + ["--tray-only"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    text=True, env=env, cwd=REPO)
        procs.append(tray_app)
        wait_line(tray_app, f"listing {CONTAINERS} containers", 60)
        time.sleep(2)
        hidden_cpu = idle_cpu(tray_app.pid, args.idle)
        tray_app.terminate()

        print(f"launch to shown window: app {app_launch:.2f} s, bare Qt window {bare_launch:.2f} s "
              f"(ratio {app_launch / bare_launch:.2f}; target <= 1.5 s)")
        print(f"resident memory with {CONTAINERS} containers listed: app {app_rss:.0f} MB, bare Qt window "
              f"{bare_rss:.0f} MB (ratio {app_rss / bare_rss:.2f}; target <= 120 MB)")
        print(f"CPU over {args.idle:.0f} s idle, window hidden (tray only): {hidden_cpu:.2f} s "
              f"({100 * hidden_cpu / args.idle:.2f} % of a core)")
        print(f"CPU over {args.idle:.0f} s with the Containers page shown (stats every 5 s): {shown_cpu:.2f} s "
              f"({100 * shown_cpu / args.idle:.2f} % of a core); bare Qt window: "
              f"{100 * bare_cpu / min(args.idle, 10):.2f} %")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for i in range(CONTAINERS):
            agent.docker("rm", "-f", f"bench-{i:02d}")
        agent.stop()
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
