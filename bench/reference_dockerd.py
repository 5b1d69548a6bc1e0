"""A throwaway Debian dockerd, started by benchmarks as the reference they measure against.

Only benchmarks use this: the product never depends on dockerd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


def ensure_dockerd() -> str:
    path = shutil.which("dockerd")
    if path:
        return path
    subprocess.run(["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
                    "--no-install-recommends", "docker.io"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("dockerd") or "/usr/sbin/dockerd"


class Dockerd:
    """A throwaway dockerd with its own data root, exec root and socket."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "dockerd.sock"
        self.host = f"unix://{self.socket}"
        self.log = open(base / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            [ensure_dockerd(), "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
             "--host", self.host, "--pidfile", str(base / "dockerd.pid")],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            ok = subprocess.run(["docker", "-H", self.host, "version"], capture_output=True).returncode == 0
            if ok:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start; see {base / 'dockerd.log'}")
            time.sleep(0.2)  # polling an external daemon we do not control; not a test

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
