"""A throwaway Debian dockerd: the reference engine for differential tests and benchmarks.

Only tests and benchmarks use it, side by side with ours; the product never
depends on dockerd. The set-up installs Debian's `docker.io`; `ensure_dockerd`
installs it when a benchmark runs on a machine that skipped the set-up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.agent import DOCKER_CLI

START_TIMEOUT = 60.0


def ensure_dockerd() -> str:
    path = shutil.which("dockerd") or (os.path.exists("/usr/sbin/dockerd") and "/usr/sbin/dockerd")
    if path:
        return path
    subprocess.run(["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
                    "--no-install-recommends", "docker.io"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("dockerd") or "/usr/sbin/dockerd"


class Dockerd:
    """A dockerd with its own data root, exec root and socket.

    `extra_args` go to dockerd as they are. Tests pass `--bridge none
    --iptables=false` so several reference daemons (and ours) never share a
    bridge or NAT rules; benchmarks keep Docker's default bridge.
    """

    def __init__(self, base: Path, extra_args: Sequence[str] = ()) -> None:
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket = self.base / "dockerd.sock"
        self.host = f"unix://{self.socket}"
        self.log_path = self.base / "dockerd.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - open while dockerd runs; stop() closes it
        self.proc = subprocess.Popen(
            [ensure_dockerd(), "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
             "--host", self.host, "--pidfile", str(self.base / "dockerd.pid"), *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.docker("version").returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)  # polling interval of an external daemon's start, with a deadline

    def docker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY")}
        env.update(DOCKER_HOST=self.host, DOCKER_CLI_HINTS="false")
        return env

    def docker(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the docker CLI against this dockerd; output captured as text."""
        return subprocess.run([DOCKER_CLI, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, env=self.docker_env())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
