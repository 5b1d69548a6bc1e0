"""Which Engine API calls Compose v2 and v1 make for the test project, with their bodies.

Runs the user's sequence (up -d, ps, logs, exec, run --rm, stop, start, restart, a
second up after an edit, down -v --remove-orphans) with each Compose generation
against a reference dockerd through `ApiLogProxy`, which claims our agent's API
version so the clients send what they would send to us. Writes the raw logs
(`calls-v2.jsonl`, `calls-v1.jsonl`) and a summary (`API_CALLS.md`) into OUTDIR.

    .venv/bin/python -m tests.compose.capture_api OUTDIR
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import urllib.parse
from collections import Counter
from pathlib import Path

from guest_agent.http_server import API_VERSION
from tests.compose.api_log_proxy import ApiLogProxy
from tests.compose.host_network import iptables_rules, remove_dockerd_leftovers
from tests.support.compose import DOCKERD_CHAIN_RULE, DOCKERD_COMPOSE_ARGS, DOCKERD_POOL_RULE, PROJECT_DIR, Compose
from tests.support.dockerd import Dockerd
from tests.support.registry import start_registry
from tests.support.test_images import push_test_images

CACHE_DIR = Path.home() / ".cache" / "dockyard-tests"
DOCKERD_API = "1.41"   # Debian's dockerd 20.10
_IDS = re.compile(r"/(containers|exec|networks|volumes)/(?!create|json|prune)[^/?]+")
_REGISTRY = re.compile(r"127\.0\.0\.1(%3A|:)\d+")


def user_sequence(compose: Compose) -> None:
    """What a user does with the project, each step required to succeed."""
    steps = [("up", "-d"), ("ps",), ("logs", "--tail", "5"),
             ("exec", "-T", "backend", "sh", "-c", "echo kept > /data/note"),
             ("run", "--rm", "tools"), ("stop", "-t", "1"), ("start",), ("restart", "-t", "1")]
    for step in steps:
        compose.run(*step, check=True)
    yaml = compose.project_dir / "compose.yaml"
    yaml.write_text(yaml.read_text().replace('WEB_TITLE: "compose-test"', 'WEB_TITLE: "edited"'))
    compose.run("up", "-d", check=True)
    compose.run("down", "-v", "--remove-orphans", "-t", "1", check=True)


def template(path: str) -> str:
    path = re.sub(r"^/v1\.\d+", "", path)
    path = _IDS.sub(lambda m: f"/{m.group(1)}/{{id}}", path)
    path = _REGISTRY.sub("REGISTRY", path)
    return re.sub(r"filters=[^&]*", "filters=…", path)


def summarise(generation: str, log: Path) -> str:
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    versions = sorted({m.group(0) for e in entries if (m := re.match(r"^/v1\.\d+", e["path"]))})
    counts = Counter(f"{e['method']} {template(e['path'])}" for e in entries)
    out = [f"## Compose {generation}", "",
           f"{len(entries)} requests, paths prefixed {', '.join(versions) or '(none)'}.", "",
           "| calls | method and path (ids as {id}, filters elided) |", "|---:|---|"]
    out += [f"| {n} | `{key}` |" for key, n in counts.items()]
    out += ["", "Filters sent (project name as P):", ""]
    shapes: list[str] = []
    for e in entries:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(e["path"]).query)
        if "filters" in query:
            shape = (f"`{e['method']} {urllib.parse.urlsplit(template(e['path'])).path}` "
                     f"`{query['filters'][0]}`")
            shape = re.sub(r"capturev[12]", "P", shape)
            if shape not in shapes:
                shapes.append(shape)
    out += [f"- {shape}" for shape in shapes]
    out += ["", "Bodies of the calls that need engine work (first of each kind):", ""]
    seen: set[str] = set()
    for e in entries:
        key = f"{e['method']} {template(e['path'])}"
        body = e.get("body")
        if key.startswith("POST /containers/create"):
            # One create with a healthcheck and one with a published port show every field.
            key = "create with " + ("Healthcheck" if "Healthcheck" in (body or {}) else
                                    "ExposedPorts" if (body or {}).get("ExposedPorts") else "-")
        if key.endswith("/connect") and isinstance(body, dict):
            key += repr(sorted(body.get("EndpointConfig") or {}))   # each shape once
        if not isinstance(body, dict) or key in seen or key == "create with -":
            continue
        if "/networks/" in key:
            shown = body
        elif key.startswith("create with"):
            shown = {k: body[k] for k in ("Healthcheck", "NetworkingConfig", "ExposedPorts")
                     if k in body}
            host = body.get("HostConfig", {})
            shown["HostConfig (non-empty)"] = {k: v for k, v in host.items()
                                               if v not in (None, "", 0, False, [], {}, [0, 0])}
        elif "/update" in key:
            shown = body
        else:
            continue
        seen.add(key)
        out += [f"`{e['method']} {e['path']}`", "", "```json", json.dumps(shown, indent=1, sort_keys=True), "```", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    sections = []
    with tempfile.TemporaryDirectory(prefix="dockyard-compose-capture-") as tmp:
        base = Path(tmp)
        registry = start_registry(base / "registry")
        rules_before = frozenset(iptables_rules())
        dockerd = Dockerd(base / "dockerd", DOCKERD_COMPOSE_ARGS)
        try:
            images = push_test_images(registry, CACHE_DIR, names=["busybox", "debian"])
            for generation in ("v2", "v1"):
                log = outdir / f"calls-{generation}.jsonl"
                log.unlink(missing_ok=True)
                proxy = ApiLogProxy(base / f"proxy-{generation}.sock", dockerd.socket, log,
                                    (API_VERSION, DOCKERD_API)).start()
                shutil.copytree(PROJECT_DIR, base / f"project-{generation}")
                compose = Compose(generation, proxy.docker_host, base / f"config-{generation}",
                                  base / f"project-{generation}", f"capture{generation}",
                                  {"BUSYBOX_IMAGE": images["busybox"], "DEBIAN_IMAGE": images["debian"]})
                try:
                    user_sequence(compose)
                finally:
                    proxy.stop()
                sections.append(summarise(generation, log))
                # Each generation pulls anew, so both logs show the pulls.
                dockerd.docker("image", "rm", "-f", images["busybox"], images["debian"])
        finally:
            dockerd.stop()
            remove_dockerd_leftovers(rules_before, DOCKERD_POOL_RULE, DOCKERD_CHAIN_RULE)
            registry.stop()
    header = ["# Engine API calls of Docker Compose for tests/compose/project", "",
              f"Generated by `python -m tests.compose.capture_api` (reference dockerd behind a "
              f"logging proxy that claims API {API_VERSION}, our agent's version).", ""]
    (outdir / "API_CALLS.md").write_text("\n".join(header + sections) + "\n")
    print(outdir / "API_CALLS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
