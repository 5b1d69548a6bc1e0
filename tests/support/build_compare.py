"""Building one context on two engines with the docker CLI's classic builder, and what to compare.

`build(engine, context, *args)` runs `DOCKER_BUILDKIT=0 docker build` against an engine
(a RunningAgent or a Dockerd: anything with `docker_env()`); `image_config` reads the
config fields a build sets; `file_tree` runs a container of the image and lists every
path with its type, mode, owner, link target and content hash.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

DOCKER_CLI = "docker"

# The fields of an image's Config that a Dockerfile sets.
CONFIG_FIELDS = ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
                 "Healthcheck", "StopSignal", "Shell", "OnBuild")

# Every path of the image, one line each: "path|type|mode|uid|gid|target or md5". What an
# engine puts in every container (bind-mounted /etc files, dockerd's init layer with
# /.dockerenv and /etc/mtab) and the kernel's trees are left out: they are not the image's.
LIST_TREE = r"""
find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /etc/hosts -o -path /etc/hostname \
     -o -path /etc/resolv.conf -o -path /.dockerenv -o -path /etc/mtab \) -prune -o -print | sort | while read -r f; do
  line=$(stat -c '%n|%F|%a|%u|%g' "$f")
  if [ -L "$f" ]; then line="$line|$(readlink "$f")"
  elif [ -f "$f" ]; then line="$line|$(md5sum < "$f" | cut -c1-32)"; fi
  echo "$line"
done
"""


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    """A build context directory holding `files` (relative path -> content)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def docker(engine: Any, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(engine.docker_env(), DOCKER_BUILDKIT="0")
    return subprocess.run([DOCKER_CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def build(engine: Any, context: Path, *args: str) -> subprocess.CompletedProcess:
    """`docker build --network none ARGS CONTEXT` with the classic builder."""
    return docker(engine, "build", "--network", "none", *args, str(context))


def built_id(engine: Any, context: Path, *args: str) -> str:
    """Build and return the image id (the build must succeed)."""
    r = build(engine, context, "-q", *args)
    assert r.returncode == 0, f"build failed on {engine}:\n{r.stdout}\n{r.stderr}"
    return r.stdout.strip().splitlines()[-1]


def image_config(engine: Any, image: str) -> dict[str, Any]:
    r = docker(engine, "image", "inspect", image)
    assert r.returncode == 0, r.stderr
    config = json.loads(r.stdout)[0]["Config"] or {}
    return {key: config.get(key) or None for key in CONFIG_FIELDS}


def layer_count(engine: Any, image: str) -> int:
    """How many layers the image has (a step that changed no file must add none)."""
    r = docker(engine, "image", "inspect", "--format", "{{len .RootFS.Layers}}", image)
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def file_tree(engine: Any, image: str) -> list[str]:
    r = docker(engine, "run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", "/bin/sh",
               image, "-c", LIST_TREE)
    assert r.returncode == 0, f"listing {image} failed: {r.stderr}"
    return r.stdout.splitlines()


def container_count(engine: Any) -> int:
    r = docker(engine, "ps", "-aq")
    assert r.returncode == 0, r.stderr
    return len(r.stdout.split())
