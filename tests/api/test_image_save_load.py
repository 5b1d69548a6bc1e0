"""`docker save` and `docker load` with the real CLI and docker-py: commit → save → load into
a second engine with its own root → the same files; ours → dockerd and dockerd → ours;
both layouts (docker-archive and OCI), compressed archives, and refused archives that
leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.agent import DOCKER_CLI, agent_in
from tests.support.side_by_side import Engines


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images):
    return Engines(agent, dockerd, test_images["busybox"])


@pytest.fixture(scope="module")
def second_agent(tmp_path_factory):
    """Another engine with its own root and socket, as a teammate's machine would have."""
    with agent_in(tmp_path_factory.mktemp("second")) as running:
        yield running


@pytest.fixture(scope="module")
def committed(engines: Engines) -> str:
    """An image made by changing a container and committing it, on our engine."""
    agent = engines.ours
    agent.docker("rm", "-f", "save-src")
    made = agent.docker("run", "--network", "none", "--name", "save-src", engines.image, "sh", "-c",
                        "mkdir -p /srv && echo saved > /srv/data && ln -s data /srv/link && rm /etc/group")
    assert made.returncode == 0, made.stderr
    result = agent.docker("commit", "-c", "CMD cat /srv/data", "save-src", "saved/app:1")
    assert result.returncode == 0, result.stderr
    agent.docker("rm", "-f", "save-src")
    return "saved/app:1"


CHECK = ["sh", "-c", "cat /srv/data; readlink /srv/link; test -e /etc/group || echo no-group"]


def _save(engine, path: Path, *names: str) -> None:
    result = engine.docker("save", "-o", str(path), *names)
    assert result.returncode == 0, result.stderr


def _image_id(engine, ref: str) -> str:
    return engine.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()


def _store_state(agent) -> tuple[set[str], list[str], list[str]]:
    images = set(agent.docker("images", "-aq", "--no-trunc").stdout.split())
    root = agent.root / "images"
    return (images, sorted(p.name for p in (root / "layers").iterdir()),
            sorted(p.name for p in (root / "blobs" / "sha256").iterdir()))


def test_commit_save_load_into_a_second_engine(engines: Engines, committed: str, second_agent,
                                               tmp_path: Path) -> None:
    archive = tmp_path / "app.tar"
    _save(engines.ours, archive, committed)
    loaded = second_agent.docker("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == f"Loaded image: {committed}\n"
    assert _image_id(second_agent, committed) == _image_id(engines.ours, committed)
    run = second_agent.docker("run", "--rm", "--network", "none", committed, *CHECK)
    assert run.stdout == "saved\ndata\nno-group\n", run.stderr
    assert second_agent.docker("run", "--rm", "--network", "none", committed).stdout == "saved\n"
    history = [e.docker("history", "--format", "{{.CreatedBy}}|{{.Size}}", committed).stdout
               for e in (engines.ours, second_agent)]
    assert history[0] == history[1]
    # Loading again changes nothing and says so the same way.
    again = second_agent.docker("load", "-i", str(archive))
    assert again.stdout == f"Loaded image: {committed}\n"


def test_the_archive_has_both_layouts(engines: Engines, committed: str, tmp_path: Path) -> None:
    both = tmp_path / "both.tar"
    _save(engines.ours, both, committed, engines.image)
    with tarfile.open(both) as tar:
        entries = json.load(tar.extractfile("manifest.json"))
        assert sorted(e["RepoTags"][0] for e in entries) == sorted([committed, engines.image])
        base_layer = [e for e in entries if e["RepoTags"] == [engines.image]][0]["Layers"][0]
        assert tar.getnames().count(base_layer) == 1     # a shared layer is written once
    archive = tmp_path / "app.tar"
    _save(engines.ours, archive, committed)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"manifest.json", "repositories", "index.json", "oci-layout"} <= names
        (manifest,) = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(manifest["Config"]))
        assert manifest["RepoTags"] == [committed]
        assert "sha256:" + manifest["Config"].rsplit("/", 1)[1] == _image_id(engines.ours, committed)
        layers = [hashlib.sha256(tar.extractfile(p).read()).hexdigest() for p in manifest["Layers"]]
        assert ["sha256:" + h for h in layers] == config["rootfs"]["diff_ids"]
        index = json.load(tar.extractfile("index.json"))
        (desc,) = index["manifests"]
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == "1"
        assert desc["annotations"]["io.containerd.image.name"] == "docker.io/saved/app:1"
        oci_manifest = json.load(tar.extractfile("blobs/sha256/" + desc["digest"][7:]))
        assert [d["digest"] for d in oci_manifest["layers"]] == config["rootfs"]["diff_ids"]
        assert json.load(tar.extractfile("repositories")) == {"saved/app": {"1": layers[-1]}}


def test_ours_to_dockerd_and_back(engines: Engines, committed: str, tmp_path: Path) -> None:
    ours_tar = tmp_path / "ours.tar"
    _save(engines.ours, ours_tar, committed)
    loaded = engines.reference.docker("load", "-i", str(ours_tar))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == f"Loaded image: {committed}\n"
    assert _image_id(engines.reference, committed) == _image_id(engines.ours, committed)
    run = engines.reference.docker("run", "--rm", "--network", "none", committed, *CHECK)
    assert run.stdout == "saved\ndata\nno-group\n", run.stderr

    # dockerd's own image (a commit there) saved by dockerd 20.10 and loaded here.
    ref = engines.reference
    ref.docker("rm", "-f", "theirs-src")
    assert ref.docker("run", "--network", "none", "--name", "theirs-src", engines.image, "sh", "-c",
                      "echo theirs > /theirs").returncode == 0
    assert ref.docker("commit", "theirs-src", "theirs/app:2").returncode == 0
    ref.docker("rm", "-f", "theirs-src")
    theirs_tar = tmp_path / "theirs.tar"
    _save(ref, theirs_tar, "theirs/app:2")
    loaded = engines.ours.docker("load", "-i", str(theirs_tar))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout == "Loaded image: theirs/app:2\n"
    assert _image_id(engines.ours, "theirs/app:2") == _image_id(ref, "theirs/app:2")
    run = engines.ours.docker("run", "--rm", "--network", "none", "theirs/app:2", "cat", "/theirs")
    assert run.stdout == "theirs\n", run.stderr


def test_progress_messages_like_dockerd(engines: Engines, committed: str, tmp_path: Path) -> None:
    """Without quiet, each new layer reports "Loading layer", then the names; the stream
    lines are dockerd's for the same archive."""
    archive = tmp_path / "app.tar"
    _save(engines.ours, archive, committed)
    outputs = []
    for engine, host in ((engines.ours, engines.ours.docker_host), (engines.reference, engines.reference.host)):
        engine.docker("rmi", "-f", "progress/app:1")
        engine.docker("tag", committed, "progress/app:1")
        engine.docker("rmi", committed)
        engine.docker("rmi", "progress/app:1")   # the layer of the commit is gone again
        import docker
        client = docker.APIClient(base_url=host, timeout=60)
        try:
            messages = list(client.load_image(archive.read_bytes(), quiet=False))
        finally:
            client.close()
        outputs.append(messages)
    for messages in outputs:
        statuses = [m.get("status") for m in messages if "status" in m]
        assert statuses and set(statuses) == {"Loading layer"}
        assert all(len(m["id"]) == 12 for m in messages if "status" in m)
    assert [m for m in outputs[0] if "stream" in m] == [m for m in outputs[1] if "stream" in m] == \
        [{"stream": f"Loaded image: {committed}\n"}]


def test_oci_only_and_compressed_archives_load(engines: Engines, committed: str, second_agent,
                                               tmp_path: Path) -> None:
    archive = tmp_path / "app.tar"
    _save(engines.ours, archive, committed)
    oci = io.BytesIO()
    with tarfile.open(archive) as src, tarfile.open(fileobj=oci, mode="w") as dst:
        for member in src.getmembers():
            if member.name not in ("manifest.json", "repositories"):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    second_agent.docker("rmi", "-f", committed)
    client = second_agent.client()
    (image,) = client.images.load(gzip.compress(oci.getvalue()))
    assert image.id == _image_id(engines.ours, committed)
    assert image.tags == [committed]
    out = client.containers.run(committed, CHECK, network_mode="none", remove=True)
    assert out == b"saved\ndata\nno-group\n"


def test_docker_py_save_by_id_and_by_repo(engines: Engines, committed: str, second_agent,
                                          tmp_path: Path) -> None:
    client = engines.ours.client()
    image = client.images.get(committed)
    data = b"".join(image.save(named=False))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        assert entry["RepoTags"] is None
    # An unnamed image loads as its id, on dockerd and on a fresh engine of ours alike.
    (tmp_path / "by-id.tar").write_bytes(data)
    outputs = []
    for engine in (second_agent, engines.reference):
        engine.docker("rmi", "-f", committed)
        result = engine.docker("load", "-i", str(tmp_path / "by-id.tar"))
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] == f"Loaded image ID: {image.id}\n"
    engines.ours.docker("tag", committed, "saved/app:2")
    path = tmp_path / "repo.tar"
    with open(path, "wb") as out:
        subprocess.run([DOCKER_CLI, "save", "saved/app"], stdout=out, check=True,
                       env=engines.ours.docker_env())
    with tarfile.open(path) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        assert sorted(entry["RepoTags"]) == ["saved/app:1", "saved/app:2"]
    engines.ours.docker("rmi", "saved/app:2")
    ours, theirs = engines.each("save", "-o", str(tmp_path / "x.tar"), "no-such-image:1")
    assert ours.returncode == theirs.returncode == 1


def _rewrite(archive: Path, change) -> bytes:
    out = io.BytesIO()
    with tarfile.open(archive) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            member, data = change(member, data)
            if member is not None:
                dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _flip_layer_byte(member: tarfile.TarInfo, data: bytes | None):
    if data is not None and member.size > 10_000 and member.name.startswith("blobs/"):
        data = data[:600] + bytes([data[600] ^ 1]) + data[601:]   # inside the first file
    return member, data


def test_bad_archives_are_refused_and_leave_nothing(engines: Engines, committed: str, second_agent,
                                                    tmp_path: Path) -> None:
    archive = tmp_path / "app.tar"
    _save(engines.ours, archive, "saved/app:1")
    good = archive.read_bytes()
    # None of the archive's layers may be there already (they would not be read again).
    second_agent.docker("rmi", "-f", _image_id(engines.ours, committed))
    assert second_agent.docker("image", "inspect", _image_id(engines.ours, committed)).returncode == 1
    bad = {
        "junk": b"not an archive" * 100,
        "truncated": good[: len(good) // 2],
        "truncated-gzip": gzip.compress(good)[:-200],
        "changed-layer": _rewrite(archive, _flip_layer_byte),
        "no-manifest": _rewrite(archive, lambda m, d: (None, None) if m.name in
                                ("manifest.json", "index.json") else (m, d)),
        "missing-layer": _rewrite(archive, lambda m, d: (None, None) if m.size > 10_000 else (m, d)),
    }
    before = _store_state(second_agent)
    for name, payload in bad.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(payload)
        result = second_agent.docker("load", "-i", str(path))
        assert result.returncode == 1 and "Error response from daemon" in result.stderr, name
        assert _store_state(second_agent) == before, name
        assert second_agent.docker("image", "inspect", committed).returncode == 1, name
