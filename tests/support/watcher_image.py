"""A test image holding a small static inotify watcher (tests/support/inotify_watch.c).

`push_watcher_image(registry, work)` compiles the watcher with `gcc -static`
and pushes busybox plus /bin/inotify-watch to the test registry, returning the
pullable reference. `WatcherLog` follows a container's output from the host
through `docker logs -f` and waits for event lines.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.crafted_images import CraftedRegistry, Member, layer_tar

SOURCE = Path(__file__).with_name("inotify_watch.c")


def build_watcher(work: Path) -> bytes:
    binary = work / "inotify-watch"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(binary), str(SOURCE)], check=True,
                   capture_output=True)
    return binary.read_bytes()


def push_watcher_image(registry: Any, work: Path) -> str:
    layer = layer_tar([Member("bin/inotify-watch", data=build_watcher(work), mode=0o755)])
    return CraftedRegistry(registry).push("inotify-watch", [layer],
                                          {"Entrypoint": ["/bin/inotify-watch"], "Cmd": []}).ref


class WatcherLog:
    """The event lines a watcher container prints, followed live with `docker logs -f`."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
                self._cond.notify_all()

    def wait_for(self, match: Callable[[str], bool], start: int = 0, timeout: float = 60.0) -> tuple[int, float]:
        """(index, arrival time) of the first line at or after `start` that `match`es."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(start, len(self.lines)):
                    if match(self.lines[index][1]):
                        return index, self.lines[index][0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching watcher line within {timeout}s; got {self.lines[start:]}")
                self._cond.wait(remaining)

    def count(self) -> int:
        with self._cond:
            return len(self.lines)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
