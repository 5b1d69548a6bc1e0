"""`docker import` (POST /images/create?fromSrc=...) with the real CLI and docker-py: a tar
exported by dockerd imported into ours and run, side by side with dockerd importing the
same tar; compressed tars, URLs, and refused tars that leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from tests.support.agent import DOCKER_CLI
from tests.support.side_by_side import Engines


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images):
    return Engines(agent, dockerd, test_images["busybox"])


@pytest.fixture(scope="module")
def exported(engines: Engines, tmp_path_factory) -> Path:
    """A container's file system as dockerd's `docker export` writes it."""
    ref = engines.reference
    ref.docker("rm", "-f", "import-src")
    made = ref.docker("run", "--network", "none", "--name", "import-src", engines.image, "sh", "-c",
                      "echo exported > /marker && mkdir -p /app && echo app > /app/data")
    assert made.returncode == 0, made.stderr
    path = tmp_path_factory.mktemp("export") / "rootfs.tar"
    with open(path, "wb") as out:
        subprocess.run([DOCKER_CLI, "export", "import-src"], stdout=out, check=True,
                       env=ref.docker_env())
    ref.docker("rm", "-f", "import-src")
    return path


def _inspect(engine, ref: str) -> dict:
    result = engine.docker("image", "inspect", ref)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def _image_ids(engine) -> set[str]:
    return set(engine.docker("images", "-aq", "--no-trunc").stdout.split())


def test_import_a_dockerd_export_and_run_it(engines: Engines, exported: Path) -> None:
    changes = ["-c", "CMD cat /marker", "-c", "ENV APP=/app", "-c", "WORKDIR /app",
               "-c", 'LABEL origin="dockerd export"', "-c", "EXPOSE 8080"]
    for engine in (engines.ours, engines.reference):
        result = engine.docker("import", "-m", "from dockerd", *changes, str(exported), "imported:1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == _inspect(engine, "imported:1")["Id"]
    ours, theirs = _inspect(engines.ours, "imported:1"), _inspect(engines.reference, "imported:1")
    # The same tar gives the same layer (the diff id is the tar's digest) on both engines.
    assert ours["RootFS"] == theirs["RootFS"]
    for key in ("Comment", "Author", "Architecture", "Os", "Parent", "RepoTags", "Config"):
        assert ours[key] == theirs[key], key
    history = [e.docker("history", "--format", "{{.CreatedBy}}|{{.Size}}|{{.Comment}}", "imported:1").stdout
               for e in (engines.ours, engines.reference)]
    assert history[0] == history[1]
    run = engines.compare("run", "--rm", "--network", "none", "imported:1")
    assert run.out == "exported\n"
    run = engines.compare("run", "--rm", "--network", "none", "imported:1", "sh", "-c",
                          "pwd; cat data; echo $APP")
    assert run.out == "/app\napp\n/app\n"


def test_import_a_compressed_tar_with_docker_py(engines: Engines, exported: Path) -> None:
    client = engines.ours.client()
    data = gzip.compress(exported.read_bytes())
    client.api.import_image_from_data(data, repository="imported-gz", tag="2",
                                      changes=["CMD [\"cat\", \"/marker\"]"])
    image = client.images.get("imported-gz:2")
    assert image.attrs["Comment"] == "Imported from -"
    # The layer is the decompressed tar: the same diff id as the plain tar's.
    assert image.attrs["RootFS"]["Layers"] == ["sha256:" + hashlib.sha256(exported.read_bytes()).hexdigest()]
    assert client.containers.run("imported-gz:2", network_mode="none", remove=True) == b"exported\n"


def test_import_from_a_url(engines: Engines, exported: Path) -> None:
    payload = exported.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:   # noqa: N802  # http.server's naming
            if self.path != "/rootfs.tar":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rootfs.tar"
        result = engines.ours.docker("import", url, "from-url:1")
        assert result.returncode == 0, result.stderr
        image = _inspect(engines.ours, "from-url:1")
        assert image["Comment"] == f"Imported from {url}"
        run = engines.ours.docker("run", "--rm", "--network", "none", "from-url:1", "cat", "/marker")
        assert run.stdout == "exported\n"
        missing = engines.ours.docker("import", url.replace("rootfs", "nothing"), "never:1")
        assert missing.returncode == 1 and "404" in missing.stderr
    finally:
        server.shutdown()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("payload", [
    b"this is not a tar archive at all" * 64,
    gzip.compress(_tar([("f", b"x" * 100_000)]))[:-100],
    _tar([("../../escape", b"out")]),
], ids=["junk", "truncated-gzip", "escaping"])
def test_a_bad_tar_is_refused_and_leaves_nothing(engines: Engines, payload: bytes, tmp_path: Path) -> None:
    agent = engines.ours
    before = _image_ids(agent)
    layers_before = sorted(p.name for p in (agent.root / "images" / "layers").iterdir())
    blobs_before = sorted(p.name for p in (agent.root / "images" / "blobs" / "sha256").iterdir())
    (tmp_path / "bad.tar").write_bytes(payload)
    result = agent.docker("import", str(tmp_path / "bad.tar"), "bad-import:1")
    assert result.returncode == 1 and "Error response from daemon" in result.stderr
    assert _image_ids(agent) == before
    assert agent.docker("image", "inspect", "bad-import:1").returncode == 1
    assert sorted(p.name for p in (agent.root / "images" / "layers").iterdir()) == layers_before
    assert sorted(p.name for p in (agent.root / "images" / "blobs" / "sha256").iterdir()) == blobs_before
    status, _, body = agent.request("POST", "/images/create?fromSrc=-&repo=bad-import", payload)
    assert 400 <= status < 500 and json.loads(body)["message"]


def test_import_parameters_refused_by_name(engines: Engines, exported: Path) -> None:
    agent = engines.ours
    data = exported.read_bytes()
    for query, words in (("fromSrc=-&platform=windows/amd64", "platform"),
                         ("fromSrc=-&repo=x@sha256:" + "a" * 64, "digest"),
                         ("fromSrc=-&changes=RUN%20x", "run is not a valid change command"),
                         ("fromSrc=ftp://example.invalid/x.tar", "only http and https")):
        status, _, body = agent.request("POST", f"/images/create?{query}", data)
        assert status == 400 and words in json.loads(body)["message"], (query, body)


def test_export_from_ours_imports_into_dockerd_and_ours(engines: Engines, tmp_path: Path) -> None:
    """The round trip the other way: our `docker export` (GET /containers/{id}/export) imported
    by dockerd and by ours give the same layer, and run the same."""
    agent = engines.ours
    agent.docker("rm", "-f", "export-src")
    made = agent.docker("run", "--network", "none", "--name", "export-src", engines.image, "sh", "-c",
                        "echo ours > /marker && rm /etc/group")
    assert made.returncode == 0, made.stderr
    path = tmp_path / "ours.tar"
    with open(path, "wb") as out:
        subprocess.run([DOCKER_CLI, "export", "export-src"], stdout=out, check=True, env=agent.docker_env())
    agent.docker("rm", "-f", "export-src")
    for engine in (engines.ours, engines.reference):
        result = engine.docker("import", "-c", "CMD cat /marker", str(path), "from-ours:1")
        assert result.returncode == 0, result.stderr
    layers = [_inspect(e, "from-ours:1")["RootFS"]["Layers"] for e in (engines.ours, engines.reference)]
    assert layers[0] == layers[1] == ["sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()]
    run = engines.compare("run", "--rm", "--network", "none", "from-ours:1")
    assert run.out == "ours\n"
    gone = engines.compare("run", "--rm", "--network", "none", "from-ours:1", "sh", "-c",
                           "test -e /etc/group || echo no-group")
    assert gone.out == "no-group\n"
