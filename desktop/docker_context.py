"""The `dockyard` docker context: `docker context use dockyard` instead of exporting DOCKER_HOST.

Colima and Docker Desktop create a context for their engine; so does Dockyard,
wherever it prints a DOCKER_HOST. The docker CLI keeps a context as
`<config dir>/contexts/meta/<sha256 of the name>/meta.json` (config dir:
$DOCKER_CONFIG, else ~/.docker) in exactly the JSON `docker context create`
writes, which is what `write_context` writes, atomically, so no docker CLI is
needed. The current context is never switched: that stays the user's choice.

Run as `python -m desktop.docker_context --host unix:///path/to.sock` it writes
the context and prints the hint (the Makefile's `run-native` does that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from runtime.atomic_file import write_bytes_atomic

log = logging.getLogger(__name__)

DEFAULT_NAME = "dockyard"
DESCRIPTION = "Dockyard"


def context_name(machine: str = "default") -> str:
    """"dockyard" for the default machine, "dockyard-<machine>" for the others (as Colima names profiles)."""
    return DEFAULT_NAME if machine == "default" else f"{DEFAULT_NAME}-{machine}"


def config_dir() -> Path:
    """Where the docker CLI reads its configuration: $DOCKER_CONFIG, else ~/.docker."""
    configured = os.environ.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path.home() / ".docker"


def meta_path(name: str, base: Path | None = None) -> Path:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return (base or config_dir()) / "contexts" / "meta" / digest / "meta.json"


def context_json(name: str, host: str, description: str = DESCRIPTION) -> dict:
    """The meta.json `docker context create NAME --description D --docker host=H` writes."""
    return {"Name": name, "Metadata": {"Description": description},
            "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}


def write_context(host: str, name: str = DEFAULT_NAME, base: Path | None = None) -> Path:
    """Create or update context `name` pointing at `host` (e.g. "unix:///run/x.sock"); its meta.json path.

    Written to a temporary file in the same directory and renamed over the old one, so a
    docker CLI reading it meanwhile sees the old or the new context, never half of one.
    """
    path = meta_path(name, base)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(context_json(name, host), separators=(",", ":")).encode()
    write_bytes_atomic(path, data, 0o644)
    return path


def use_hint(name: str = DEFAULT_NAME) -> str:
    return f"docker context {name!r} is ready: run `docker context use {name}` to make it the default"


def publish(host: str, name: str = DEFAULT_NAME) -> str | None:
    """Write the context and return the hint to print; None (logged) when it cannot be written.

    A read-only or foreign-owned ~/.docker must not fail the engine's start: the
    DOCKER_HOST line still works.
    """
    try:
        write_context(host, name)
    except OSError as err:
        log.warning("cannot write docker context %r in %s: %s", name, config_dir(), err)
        return None
    return use_hint(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desktop.docker_context",
                                     description="Create or update the dockyard docker context.")
    parser.add_argument("--host", required=True, help="the engine's address, e.g. unix:///run/dockyard/docker.sock")
    parser.add_argument("--name", default=DEFAULT_NAME, help="context name (default: %(default)s)")
    args = parser.parse_args(argv)
    hint = publish(args.host, args.name)
    if hint is None:
        return 1
    print(hint, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
