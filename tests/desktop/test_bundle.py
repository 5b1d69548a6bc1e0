"""`dockyard bundle save|load` between real engines: ours, a second fresh one of ours, and Debian's dockerd.

Each scenario is set up on a source engine, probed (requests a user would make:
an HTTP answer through a network alias, the volume's files with owners, modes
and symlinks, each container's state and configuration), saved with the real
`dockyard` CLI, loaded into a fresh target engine that has never seen the image,
and probed again: the answers must be the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent import start_agent

REPO = Path(__file__).resolve().parents[2]
LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"


@dataclass
class Engine:
    """An engine under test: its DOCKER_HOST and a docker CLI runner."""

    name: str
    host: str
    docker: Callable[..., subprocess.CompletedProcess]

    def ok(self, *args: str) -> str:
        result = self.docker(*args)
        assert result.returncode == 0, f"[{self.name}] docker {' '.join(args)}: {result.stderr}"
        return result.stdout.strip()

    def clear(self) -> None:
        """Remove every container, user network and volume: a stopped engine leaves its bridges behind,
        and the host's address pools are shared by every engine on it."""
        containers = self.ok("ps", "-aq")
        if containers:
            self.docker("rm", "-f", *containers.split())
        networks = self.ok("network", "ls", "-q", "--filter", "type=custom")
        if networks:
            self.docker("network", "rm", *networks.split())
        volumes = self.ok("volume", "ls", "-q")
        if volumes:
            self.docker("volume", "rm", "-f", *volumes.split())

    def inventory(self) -> dict[str, list[str]]:
        """What a load may create: containers, volumes, networks and images."""
        return {"containers": sorted(self.ok("ps", "-aq", "--no-trunc").split()),
                "volumes": sorted(self.ok("volume", "ls", "-q").split()),
                "networks": sorted(self.ok("network", "ls", "-q", "--no-trunc").split()),
                "images": sorted(self.ok("images", "-aq", "--no-trunc").split())}


def dockyard(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `dockyard` CLI (this worktree's code)."""
    return subprocess.run([sys.executable, "-m", "desktop.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.fixture
def fresh_engine(tmp_path_factory) -> Callable[[str], Engine]:
    """A factory of engines that have never run anything: ("dockyard") a new agent, ("dockerd") a new dockerd."""
    made: list[tuple[Engine, Callable[[], object]]] = []

    def make(kind: str) -> Engine:
        # Short: dockerd's containerd socket under it must fit a unix socket path.
        base = tmp_path_factory.mktemp(kind[:2])
        if kind == "dockyard":
            agent = start_agent(socket=base / "docker.sock", root=base / "root")
            made.append((Engine("fresh dockyard", agent.docker_host, agent.docker), agent.stop))
        else:
            from tests.support.dockerd import Dockerd

            daemon = Dockerd(base, ["--bridge", "none", "--iptables=false"])
            made.append((Engine("fresh dockerd", daemon.host, daemon.docker), daemon.stop))
        return made[-1][0]

    yield make
    for engine, stop in reversed(made):
        try:
            engine.clear()
        finally:
            stop()


def session_engine(request, kind: str) -> Engine:
    if kind == "dockyard":
        agent = request.getfixturevalue("agent")
        return Engine("dockyard", agent.docker_host, agent.docker)
    daemon = request.getfixturevalue("dockerd")
    return Engine("dockerd", daemon.host, daemon.docker)


def make_scenario(engine: Engine, image: str, tag: str) -> list[str]:
    """A user network, a volume with owners/modes/a symlink, and three containers depending on each other."""
    engine.ok("pull", "-q", image)
    engine.ok("network", "create", "--label", "dockyard.test=bundle", f"net{tag}")
    engine.ok("volume", "create", "--label", "dockyard.test=bundle", f"vol{tag}")
    engine.ok("run", "--rm", "--network", "none", "-v", f"vol{tag}:/data", image, "sh", "-c",
              "echo hello > /data/note && mkdir /data/sub && echo x > /data/sub/f && chown 1234:5678 /data/sub/f"
              " && chmod 640 /data/sub/f && chmod 750 /data/sub && ln -s note /data/link && chown 42:43 /data")
    engine.ok("run", "-d", "--name", f"db{tag}", "--network", f"net{tag}", "--network-alias", "database",
              "-v", f"vol{tag}:/data", "-e", "ROLE=db", "--label", "tier=data", "--restart", "unless-stopped",
              image, "httpd", "-f", "-p", "8080", "-h", "/data")
    engine.ok("run", "-d", "--name", f"app{tag}", "--network", f"net{tag}", "--volumes-from", f"db{tag}:ro",
              "-w", "/data", image, "sh", "-c", LOOP)
    # An image with an entrypoint, which side's `--entrypoint ""` clears.
    engine.ok("commit", "--change", 'ENTRYPOINT ["false"]', f"db{tag}", f"entry{tag}:1")
    engine.ok("create", "--name", f"side{tag}", "--network", f"container:app{tag}", "--entrypoint", "",
              f"entry{tag}:1", "true")
    return [f"db{tag}", f"app{tag}", f"side{tag}"]


def probe(engine: Engine, tag: str) -> dict[str, object]:
    """What a user sees of the scenario."""
    seen: dict[str, object] = {
        "http": engine.ok("exec", f"app{tag}", "wget", "-qO-", "http://database:8080/note"),
        "files": engine.ok("exec", f"app{tag}", "sh", "-c",
                           "stat -c '%n %a %u:%g %F' . note sub sub/f link && readlink link && cat sub/f"),
    }
    for name in (f"db{tag}", f"app{tag}", f"side{tag}"):
        info = json.loads(engine.ok("inspect", name))[0]
        mode = info["HostConfig"]["NetworkMode"]
        if mode.startswith("container:"):
            mode = "container:" + engine.ok("inspect", "-f", "{{.Name}}", mode.split(":", 1)[1]).lstrip("/")
        networks = info["NetworkSettings"]["Networks"]
        seen[name] = {
            "running": info["State"]["Running"], "env": info["Config"]["Env"], "cmd": info["Config"]["Cmd"],
            "labels": info["Config"]["Labels"], "workdir": info["Config"]["WorkingDir"],
            "restart": info["HostConfig"]["RestartPolicy"]["Name"], "mode": mode,
            "volumes_from": info["HostConfig"].get("VolumesFrom"),
            "aliases": {net: sorted(a for a in ep.get("Aliases") or [] if a != info["Id"][:12])
                        for net, ep in networks.items() if not mode.startswith("container:")},
        }
    net = json.loads(engine.ok("network", "inspect", f"net{tag}"))[0]
    vol = json.loads(engine.ok("volume", "inspect", f"vol{tag}"))[0]
    seen["network"] = {"driver": net["Driver"], "labels": net["Labels"], "internal": net["Internal"]}
    seen["volume"] = {"driver": vol["Driver"], "labels": vol["Labels"]}
    return seen


def remove_scenario(engine: Engine, tag: str) -> None:
    engine.docker("rm", "-f", f"side{tag}", f"app{tag}", f"db{tag}")
    engine.docker("volume", "rm", "-f", f"vol{tag}")
    engine.docker("network", "rm", f"net{tag}")
    engine.docker("rmi", f"entry{tag}:1")


def save_scenario(engine: Engine, image: str, tag: str, bundle: Path) -> Path:
    """`bundle`: the scenario saved with `dockyard bundle save`, then removed from `engine` again."""
    try:
        names = make_scenario(engine, image, tag)
        saved = dockyard("bundle", "save", "--host", engine.host, "-o", str(bundle), *names)
        assert saved.returncode == 0, saved.stderr
    finally:
        remove_scenario(engine, tag)
    return bundle


@pytest.mark.parametrize(("source_kind", "target_kind"), [
    ("dockerd", "dockerd"), ("dockerd", "dockyard"), ("dockyard", "dockerd"), ("dockyard", "dockyard")])
def test_bundle_recreates_containers_volumes_and_networks(request, fresh_engine, test_images, tmp_path,
                                                         source_kind, target_kind):
    source = session_engine(request, source_kind)
    tag = uuid.uuid4().hex[:8]
    image = test_images["busybox"]
    try:
        names = make_scenario(source, image, tag)
        before = probe(source, tag)
        bundle = tmp_path / "env.tar"
        saved = dockyard("bundle", "save", "--host", source.host, "-o", str(bundle), *names)
        assert saved.returncode == 0, saved.stderr
        assert "saved 3 containers, 2 images, 1 volumes, 1 networks" in saved.stdout
    finally:
        remove_scenario(source, tag)
    target = fresh_engine(target_kind)
    assert target.docker("image", "inspect", image).returncode != 0, "the target must get the image from the bundle"
    loaded = dockyard("bundle", "load", "--host", target.host, str(bundle))
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 3 containers (2 started)" in loaded.stdout
    assert probe(target, tag) == before
    # side runs `true` itself, not the image's entrypoint `false`.
    assert target.docker("start", "-a", f"side{tag}").returncode == 0
    # Loading again is refused before anything is made: every name is taken.
    inventory = target.inventory()
    again = dockyard("bundle", "load", "--host", target.host, str(bundle))
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "names already taken" in again.stderr, again.stderr
    assert f"container db{tag}" in again.stderr and f"volume vol{tag}" in again.stderr
    assert target.inventory() == inventory


def test_compose_project_answers_the_same_on_a_fresh_engine(agent, fresh_engine, test_images, tmp_path,
                                                            tmp_path_factory):
    """Compose v2 project up on ours, a note in its named volume; bundled, loaded into a second agent
    (and again under another project name): the web service's published port answers the same."""
    from tests.compose.project_copy import ComposeProject
    from tests.support.compose import Compose

    variables = {"BUSYBOX_IMAGE": test_images["busybox"], "DEBIAN_IMAGE": test_images["debian"]}
    name = f"dybundle{uuid.uuid4().hex[:8]}"
    source = ComposeProject.copy("v2", "dockyard", agent.docker_host, agent.docker,
                                 tmp_path_factory.mktemp("cfg"), tmp_path / "project", name, variables)
    bundle = tmp_path / "team.tar"
    try:
        source.up()
        backend = source.service_ids()["backend"]
        source.docker_ok("exec", backend, "sh", "-c", "echo kept-in-volume > /data/note && chown 7:8 /data/note")
        answer = source.answer("note: kept-in-volume")
        files = source.docker_ok("exec", backend, "ls", "-ln", "/data")
        saved = dockyard("bundle", "save", "--host", agent.docker_host, "-o", str(bundle), "--project", name)
        assert saved.returncode == 0, saved.stderr
        assert "saved 3 containers, 1 images, 1 volumes, 1 networks" in saved.stdout
    finally:
        source.cleanup()
    target = fresh_engine("dockyard")
    loaded = dockyard("bundle", "load", "--host", target.host, str(bundle))
    assert loaded.returncode == 0, loaded.stderr

    def on_target(project: str) -> ComposeProject:
        return ComposeProject(Compose("v2", target.host, tmp_path_factory.mktemp("cfg"), source.directory,
                                      project, variables), "fresh dockyard", target.docker)

    for project in (name, f"{name}copy"):
        if project != name:
            renamed = dockyard("bundle", "load", "--host", target.host, str(bundle), "--project", project)
            assert renamed.returncode == 0, renamed.stderr
        moved = on_target(project)
        assert moved.answer("note: kept-in-volume") == answer
        assert moved.docker_ok("exec", moved.service_ids()["backend"], "ls", "-ln", "/data") == files
        services = moved.ok("ps", "--format", "{{.Service}} {{.State}}").stdout.split("\n")
        assert sorted(filter(None, services)) == ["backend running", "slow running", "web running"]
        assert f"{project}_notes" in target.ok("volume", "ls", "-q").split()


def test_foreign_or_damaged_files_are_refused_and_nothing_is_made(dockerd, test_images, tmp_path):
    engine = Engine("dockerd", dockerd.host, dockerd.docker)
    tag = uuid.uuid4().hex[:8]
    good = save_scenario(engine, test_images["busybox"], tag, tmp_path / "good.tar")
    foreign = tmp_path / "foreign.tar"
    subprocess.run(["tar", "-cf", str(foreign), "-C", str(REPO), "README.md"], check=True)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    flipped = tmp_path / "flipped.tar"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"\x89PNG not a tar at all" * 100)
    inventory = engine.inventory()
    for path, why in ((foreign, "first member is not manifest.json"), (truncated, "corrupt"), (flipped, "damaged"),
                      (garbage, "not a Dockyard bundle"), (tmp_path / "none.tar", "no such file")):
        result = dockyard("bundle", "load", "--host", engine.host, str(path))
        assert result.returncode == 1, (path, result.stdout)
        assert result.stderr.count("\n") == 1 and why in result.stderr, (path, result.stderr)
    assert engine.inventory() == inventory
    # No partial output file is left by a save that fails (an unknown container).
    failed = dockyard("bundle", "save", "--host", engine.host, "-o", str(tmp_path / "out.tar"), f"nosuch{tag}")
    assert failed.returncode == 1 and f"no such container: nosuch{tag}" in failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))) == []


def test_a_failure_midway_removes_what_the_load_made(dockerd, test_images, tmp_path):
    """Bundles whose checksums hold but which the engine refuses midway (its images; a container's
    config after the images and the first container were made): what the load made is removed
    again, and the one-line error says what failed."""
    from desktop.bundle.bundle_format import (
        CHECKSUMS,
        FORMAT,
        IMAGES_MEMBER,
        MANIFEST,
        VERSION,
        BundleReader,
        BundleWriter,
    )

    engine = Engine("dockerd", dockerd.host, dockerd.docker)
    tag = uuid.uuid4().hex[:8]
    manifest = {"format": FORMAT, "version": VERSION, "project": "", "images": ["busybox:bundle-test"],
                "networks": [{"name": f"net{tag}", "Driver": "bridge"}],
                "volumes": [{"name": f"vol{tag}", "Driver": "local", "member": ""}], "containers": []}
    bad_images = tmp_path / "bad-images.tar"
    writer = BundleWriter(bad_images)
    writer.add_bytes(MANIFEST, json.dumps(manifest).encode())
    writer.add_bytes(IMAGES_MEMBER, b"\0" * 1024 + b"these are not image layers")
    writer.commit()

    good = save_scenario(engine, test_images["busybox"], tag, tmp_path / "good.tar")
    # The image stays under another name (as on a shared engine where other tests tagged it):
    # the load gives it the bundle's name back, and the undo must take that name away again.
    engine.ok("tag", test_images["busybox"], f"kept{tag}:x")
    engine.ok("rmi", test_images["busybox"])
    reader = BundleReader(good)
    manifest = reader.manifest
    assert [c["name"] for c in manifest["containers"]][-1] == f"side{tag}"
    manifest["containers"][-1]["host_config"]["RestartPolicy"] = {"Name": "now-and-then"}
    bad_container = tmp_path / "bad-container.tar"
    writer = BundleWriter(bad_container)
    writer.add_bytes(MANIFEST, json.dumps(manifest).encode())
    for name in reader.members:
        if name not in (MANIFEST, CHECKSUMS):
            member = reader.open_member(name)
            writer.add_stream(name, iter(lambda member=member: member.read(1 << 20), b""))
    writer.commit()
    reader.close()

    inventory = engine.inventory()
    for path, what in ((bad_images, "loading the bundle's images"), (bad_container, f"creating container side{tag}")):
        result = dockyard("bundle", "load", "--host", engine.host, str(path))
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and what in result.stderr, result.stderr
        assert engine.inventory() == inventory
    engine.ok("rmi", f"kept{tag}:x")
