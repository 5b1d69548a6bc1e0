"""Stage the desktop app under Xvfb with a real tray and engine, and render its pictures.

    .venv/bin/python -m tests.support.ui_screenshots [--out build/screenshots]

Starts an Xvfb display of its own (a free one, `-displayfd`), Debian's `trayer`
as its system tray, the test registry with the test images, and a native
`dockyard-agent serve` holding something to show: a compose-style project
(two containers labelled `com.docker.compose.project=shop`, one publishing a
port, one with a named volume), a standalone container writing a log, a
stopped one, and an unused image. Then it runs `python -m desktop.ui.screenshots`
on that display against that engine (see there for the files), and tears
everything down. The desktop app's own home is a temporary DOCKYARD_HOME: its
machine was never created.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.agent import RunningAgent, start_agent
from tests.support.processes import free_port, stop_process
from tests.support.registry import start_registry
from tests.support.test_images import push_test_images

log = logging.getLogger("tests.support.ui_screenshots")
REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("DOCKYARD_TEST_CACHE", Path.home() / ".cache" / "dockyard-tests"))
SCREEN = (1600, 1000)
TRAY_HEIGHT = 32
RENDER_TIMEOUT = 240


@contextmanager
def xvfb_with_tray(size: tuple[int, int] = SCREEN) -> Iterator[str]:
    """An Xvfb display with trayer docked at its top right; yields DISPLAY."""
    for tool in ("Xvfb", "trayer", "xdotool"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: `make deps` installs it (Debian: xvfb, trayer, xdotool)")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size[0]}x{size[1]}x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    tray = None
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()   # written once the server accepts clients; EOF if it died
        if not number:
            raise RuntimeError("Xvfb did not start")
        display = f":{number}"
        env = dict(os.environ, DISPLAY=display)
        tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
                                 "--height", str(TRAY_HEIGHT), "--SetDockType", "true", "--transparent", "false",
                                 "--tint", "0x2b2b2b", "--expand", "true", "--padding", "4"],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_window(env, "trayer", tray)
        yield display
    finally:
        if tray is not None:
            stop_process(tray)
        stop_process(xvfb)


def wait_for_window(env: dict[str, str], class_name: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Poll until a window of `class_name` is mapped on the display (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{class_name} exited with {proc.returncode}")
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--class", class_name],
                               env=env, capture_output=True, text=True)
        if found.stdout.strip():
            return
        time.sleep(0.1)  # polling interval of a condition with a deadline
    raise RuntimeError(f"no {class_name} window within {timeout} s")


def stage_content(agent: RunningAgent, refs: dict[str, str]) -> None:
    """What the pictures show: a compose-style project, a log, a stopped container, images, volumes."""
    busybox = refs["busybox"]

    def docker(*args: str) -> None:
        proc = agent.docker(*args, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")

    docker("pull", busybox)
    docker("pull", refs["layered"])
    docker("volume", "create", "shop-data")
    docker("volume", "create", "scratch")
    # A database's worth of data, so that the Volumes page has a size to show.
    docker("run", "--rm", "-v", "shop-data:/data", busybox, "sh", "-c",
           "head -c 3000000 /dev/urandom > /data/table.db && head -c 450000 /dev/urandom > /data/wal.log")
    project = ["--label", "com.docker.compose.project=shop"]
    docker("run", "-d", "--name", "shop-web-1", *project, "--label", "com.docker.compose.service=web",
           "-p", f"{free_port()}:80", busybox, "sh", "-c", "while true; do echo serving; sleep 5; done")
    docker("run", "-d", "--name", "shop-db-1", *project, "--label", "com.docker.compose.service=db",
           "-v", "shop-data:/data", busybox, "sleep", "3600")
    docker("run", "-d", "--name", "notes", busybox, "sh", "-c",
           "echo 'notes: listening on :8000'; echo 'GET / 200'; echo 'GET /favicon.ico 404'; sleep 3600")
    docker("run", "--name", "one-shot", busybox, "sh", "-c", "echo done")


def render(out: Path, workdir: Path) -> None:
    registry = start_registry(workdir / "registry")
    agent = None
    try:
        refs = push_test_images(registry, CACHE_DIR, names=["busybox", "layered"])
        agent = start_agent(workdir / "agent" / "docker.sock", workdir / "agent" / "root", log_level="info")
        stage_content(agent, refs)
        with xvfb_with_tray() as display:
            env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", DOCKYARD_HOME=str(workdir / "home"),
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
            env.pop("WAYLAND_DISPLAY", None)
            env.pop("DBUS_SESSION_BUS_ADDRESS", None)   # the icon goes to trayer (XEmbed), not a D-Bus host
            proc = subprocess.run([sys.executable, "-m", "desktop.ui.screenshots", "--engine-socket",
                                   str(agent.socket), "--out", str(out)], env=env, cwd=REPO,
                                  timeout=RENDER_TIMEOUT)
            if proc.returncode != 0:
                raise RuntimeError(f"desktop.ui.screenshots exited with {proc.returncode}")
    finally:
        if agent is not None:
            agent.docker("rm", "-f", "shop-web-1", "shop-db-1", "notes", "one-shot")
            agent.stop()
        registry.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.ui_screenshots",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "screenshots", help="folder for the PNG files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="ui_screenshots: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-shots-"))
    try:
        render(args.out.resolve(), workdir)
    except RuntimeError as err:
        log.error("%s", err)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
