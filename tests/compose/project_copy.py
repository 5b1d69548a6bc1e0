"""A test's own copy of the Compose test project, and what a user sees of it.

Each test copies `tests/compose/project` to its temporary directory (bind-mount
sources are relative to the project, so edits to the copy change nothing else),
gives it a unique project name and drives it with one Compose generation against
one engine. The helpers read what a user would: compose and docker CLI output,
`docker inspect`, and the web service's answer on its published port.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.compose import PROJECT_DIR, Compose
from tests.support.waiting import poll

WEB_PORT = "8080"
HTTP_TIMEOUT = 60.0


@dataclass
class ComposeProject:
    """One copy of the test project bound to a Compose generation and an engine."""

    compose: Compose
    engine: str
    docker: Callable[..., subprocess.CompletedProcess]

    @classmethod
    def copy(cls, generation: str, engine: str, docker_host: str, docker: Callable,
             config_dir: Path, dest: Path, name: str, variables: Mapping[str, str]) -> ComposeProject:
        shutil.copytree(PROJECT_DIR, dest, symlinks=True)
        return cls(Compose(generation, docker_host, config_dir, dest, name, dict(variables)),
                   engine, docker)

    @property
    def name(self) -> str:
        return self.compose.project_name

    @property
    def directory(self) -> Path:
        return self.compose.project_dir

    @property
    def file(self) -> Path:
        return self.directory / "compose.yaml"

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.compose.run(*args, timeout=timeout)

    def ok(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run a compose command that must succeed; its output in the failure message."""
        return self.compose.run(*args, timeout=timeout, check=True)

    def up(self) -> subprocess.CompletedProcess[str]:
        return self.ok("up", "-d")

    def cleanup(self) -> None:
        self.run("down", "-v", "--remove-orphans", "-t", "1", timeout=120)

    # --- editing the copy --------------------------------------------------------

    def set_environment(self, key: str, value: str) -> None:
        """Change `KEY: "value"` in compose.yaml (one service's `environment:`)."""
        text = self.file.read_text()
        new, count = re.subn(rf'(\n\s+{re.escape(key)}: )"[^"\n]*"', rf'\1"{value}"', text)
        assert count == 1, f"{key} is not set exactly once in {self.file}"
        self.file.write_text(new)

    def add_service(self, name: str, block: str) -> None:
        """Insert a service (YAML lines indented under it) before the top-level volumes."""
        text = self.file.read_text()
        body = "".join(f"    {line}\n" for line in block.strip().splitlines())
        self.file.write_text(text.replace("\nvolumes:\n", f"\n  {name}:\n{body}\nvolumes:\n", 1))

    def remove_service(self, name: str) -> None:
        text = self.file.read_text()
        new = re.sub(rf"\n  {re.escape(name)}:\n(    .*\n)+", "\n", text, count=1)
        assert new != text, f"no service {name} in {self.file}"
        self.file.write_text(new)

    # --- what the user sees --------------------------------------------------------

    def docker_ok(self, *args: str) -> str:
        result = self.docker(*args)
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
        return result.stdout

    def containers(self, all_: bool = True) -> dict[str, str]:
        """{container name: full id} of this project's containers, from `docker ps`."""
        out = self.docker_ok("ps", *(["-a"] if all_ else []), "--no-trunc",
                             "--filter", f"label=com.docker.compose.project={self.name}",
                             "--format", "{{.Names}} {{.ID}}")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def service_ids(self) -> dict[str, str]:
        """{service: container id} of the running services (one container each)."""
        ids = {}
        for cid in self.containers().values():
            service = self.inspect(cid)["Config"]["Labels"]["com.docker.compose.service"]
            ids[service] = cid
        return ids

    def inspect(self, ref: str) -> dict:
        return json.loads(self.docker_ok("inspect", ref))[0]

    def service_container(self, service: str) -> dict:
        return self.inspect(self.service_ids()[service])

    def web_address(self) -> str:
        """HOST:PORT that `compose port web 8080` prints."""
        out = self.ok("port", "web", WEB_PORT).stdout.strip().splitlines()
        assert out and re.fullmatch(r"127\.0\.0\.1:\d+", out[-1]), f"compose port printed {out!r}"
        return out[-1]

    def get(self, path: str = "/cgi-bin/index", timeout: float = 10) -> str:
        """GET from the web service's published port (raises on a refused connection)."""
        with urllib.request.urlopen(f"http://{self.web_address()}{path}", timeout=timeout) as resp:
            return resp.read().decode()

    def answer(self, expect: str, path: str = "/cgi-bin/index") -> str:
        """Poll the web answer until it contains `expect` (the service may still be starting)."""
        last: list[str] = [""]

        def check() -> str:
            try:
                last[0] = self.get(path)
            except (OSError, urllib.error.URLError) as err:
                last[0] = f"<{err}>"
                return ""
            return last[0] if expect in last[0] else ""

        try:
            return poll(check, timeout=HTTP_TIMEOUT, what=f"web answer with {expect!r}", interval=0.2)
        except AssertionError as err:
            raise AssertionError(f"{err}; last answer: {last[0]!r}") from None
