"""`docker cp`, `docker diff` and `docker export`: ours against Debian's dockerd, through the same CLI.

The same scenario (files, modes, owners, symlinks to "/" and "../../..", a
hard link, a deleted image file) is set up in a `--network none` container on
both engines; what `docker diff`, the archive stat header, `docker cp` out
and `docker cp` in give must agree. Escapes are checked against a marker file
outside the engine's root, and export is checked by importing it into dockerd.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.agent import DOCKER_CLI, UnixHTTPConnection, http_request
from tests.support.waiting import poll

Docker = Callable[..., subprocess.CompletedProcess]

SETUP = r"""
mkdir -p /data/sub /data/dir/deep
echo hi > /data/f && chmod 640 /data/f && chown 1000:1000 /data/f
echo deep > /data/dir/deep/file && chmod 4755 /data/dir
ln -s / /data/rootlink && ln -s ../../.. /data/up && ln -s /etc /data/etclink
ln -s f /data/flink && ln -s /data/dir /data/dirlink && ln /data/f /data/hard
mkfifo /data/fifo
rm /bin/ls && echo extra:x:1234:1234::/:/bin/sh >> /etc/passwd
mkdir /tmp/newdir && touch /tmp/newdir/x
touch /ready
"""
STAT_PATHS = ("/data/f", "/data/flink", "/data/rootlink", "/data/rootlink/", "/data/up", "/data/up/",
              "/data/dirlink", "/data/dirlink/", "/data/dir/.", "/data/fifo", "/data/sub", "/",
              "/etc/../data/f", "data/f", "/nonexistent")
CP_OUT_PATHS = ("/data", "/data/", "/data/.", "/data/dir", "/data/dirlink", "/data/dirlink/",
                "/data/flink", "/data/up", "/data/hard", "/etc/passwd")


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result.stdout


def _name() -> str:
    return f"files-{uuid.uuid4().hex[:8]}"


class Engine:
    """One engine under test: its CLI runner, socket and environment."""

    def __init__(self, label: str, docker: Docker, socket: Path, env: dict[str, str]) -> None:
        self.label, self.docker, self.socket, self.env = label, docker, socket, env

    def cp_out(self, container: str, path: str) -> bytes:
        """`docker cp CONTAINER:PATH -`: the tar the CLI writes."""
        result = subprocess.run([DOCKER_CLI, "cp", f"{container}:{path}", "-"], capture_output=True,
                                env=self.env, timeout=60)
        assert result.returncode == 0, f"{self.label}: cp {path}: {result.stderr.decode()}"
        return result.stdout

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.socket, method, "/v1.41" + path, body)

    def scenario(self, image: str, script: str = SETUP, *options: str) -> str:
        name = _name()
        _ok(self.docker("run", "-d", "--name", name, "--network", "none", *options, image,
                        "sh", "-c", script + "\nexec sleep 1000"))
        poll(lambda: self.docker("exec", name, "test", "-e", "/ready").returncode == 0,
             what=f"{self.label} scenario set up")
        return name


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images) -> list[Engine]:
    ours = Engine("dockyard", agent.docker, agent.socket, agent.docker_env())
    theirs = Engine("dockerd", dockerd.docker, dockerd.socket, dockerd.docker_env())
    for engine in (ours, theirs):
        for image in ("busybox", "layered"):
            _ok(engine.docker("pull", "-q", test_images[image], timeout=300))
    return [ours, theirs]


@pytest.fixture(scope="module")
def scenario(engines, test_images) -> dict[str, str]:
    """The scenario's container on each engine, by engine label."""
    names = {e.label: e.scenario(test_images["busybox"]) for e in engines}
    yield names
    for e in engines:
        e.docker("rm", "-f", names[e.label])


def _tar_entries(data: bytes) -> list[tuple[str, str, int, int, int, int, str]]:
    """(name, type, mode, uid, gid, size, linkname) of each entry, in archive order."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        return [(m.name, m.type.decode(), m.mode, m.uid, m.gid, m.size if m.isreg() else 0, m.linkname)
                for m in tar]


def _stat_header(headers: dict[str, str]) -> dict:
    return json.loads(base64.b64decode(headers["x-docker-container-path-stat"]))


def _comparable_stat(stat: dict) -> dict:
    """The stat without what differs between two file systems (directory sizes, times)."""
    stat = dict(stat)
    stat.pop("mtime")
    if stat["mode"] & (1 << 31):
        stat.pop("size")
    return stat


# --------------------------------------------------------------------------- differential


def test_diff_matches_dockerd(engines, scenario):
    outputs = {e.label: sorted(_ok(e.docker("diff", scenario[e.label])).splitlines()) for e in engines}
    assert "D /bin/ls" in outputs["dockyard"]
    assert "A /data/rootlink" in outputs["dockyard"]
    assert outputs["dockyard"] == outputs["dockerd"]


def test_diff_of_overlay_whiteouts_and_opaque_dirs_matches_dockerd(engines, test_images):
    from tests.support import test_images as layered
    # A directory of the image removed and made again is opaque in the upper dir.
    script = (f"rm /{layered.LAYERED_KEPT} && echo v3 > /{layered.LAYERED_CHANGED} && "
              f"rm -r /{layered.LAYERED_OPAQUE_DIR} && mkdir /{layered.LAYERED_OPAQUE_DIR} && "
              f"touch /{layered.LAYERED_OPAQUE_DIR}/added && touch /ready")
    outputs = {}
    for e in engines:
        name = e.scenario(test_images["layered"], script)
        try:
            outputs[e.label] = sorted(_ok(e.docker("diff", name)).splitlines())
        finally:
            e.docker("rm", "-f", name)
    assert f"D /{layered.LAYERED_KEPT}" in outputs["dockyard"]
    assert f"D /{layered.LAYERED_OPAQUE_NEW}" in outputs["dockyard"]
    assert outputs["dockyard"] == outputs["dockerd"]


def test_diff_over_the_api_gives_kinds(agent, engines, scenario):
    status, _, body = engines[0].request("GET", f"/containers/{scenario['dockyard']}/changes")
    assert status == 200
    changes = {c["Path"]: c["Kind"] for c in json.loads(body)}
    assert changes["/bin/ls"] == 2 and changes["/data"] == 1 and changes["/etc/passwd"] == 0


def test_archive_stat_header_matches_dockerd(engines, scenario):
    for path in STAT_PATHS:
        answers = {}
        for e in engines:
            status, headers, _ = e.request("HEAD", f"/containers/{scenario[e.label]}/archive?path={quote(path)}")
            answers[e.label] = (status, _comparable_stat(_stat_header(headers)) if status == 200 else None)
        assert answers["dockyard"] == answers["dockerd"], path
    status, headers, _ = engines[0].request("HEAD", f"/containers/{scenario['dockyard']}/archive?path=/data/up")
    assert _stat_header(headers)["linkTarget"] == "/"


def test_cp_out_matches_dockerd(engines, scenario):
    for path in CP_OUT_PATHS:
        tars = {e.label: _tar_entries(e.cp_out(scenario[e.label], path)) for e in engines}
        assert tars["dockyard"], path
        assert tars["dockyard"] == tars["dockerd"], path


def test_cp_of_a_running_container_sees_its_volumes_but_not_its_kernel_or_tmpfs_mounts(engines, test_images):
    """As dockerd: the root, volumes and /etc files; /proc, /sys, /dev and tmpfs mounts are the
    container's own and not in the copy's view (their mount points are empty)."""
    script = "echo tmp > /scratch/in-tmpfs && echo vol > /vol/in-volume && touch /ready"
    seen = {}
    for e in engines:
        name = e.scenario(test_images["busybox"], script, "--tmpfs", "/scratch", "-v", "/vol")
        try:
            seen[e.label] = {path: e.request("HEAD", f"/containers/{name}/archive?path={path}")[0]
                             for path in ("/scratch/in-tmpfs", "/vol/in-volume", "/proc/1/status",
                                          "/sys/kernel", "/dev/null", "/etc/hosts")}
        finally:
            e.docker("rm", "-f", "-v", name)
    assert seen["dockyard"]["/vol/in-volume"] == 200 and seen["dockyard"]["/proc/1/status"] == 404
    assert seen["dockyard"] == seen["dockerd"]


def test_cp_out_to_a_directory_follows_links_with_L_as_dockerd(engines, scenario, tmp_path):
    results = {}
    for e in engines:
        out = tmp_path / e.label
        out.mkdir()
        _ok(e.docker("cp", "-L", f"{scenario[e.label]}:/data/flink", str(out / "followed")))
        _ok(e.docker("cp", f"{scenario[e.label]}:/data/flink", str(out / "link")))
        _ok(e.docker("cp", f"{scenario[e.label]}:/data/dirlink/.", str(out / "contents")))
        results[e.label] = sorted(
            (str(p.relative_to(out)), p.is_symlink(), oct(p.lstat().st_mode),
             p.read_text() if p.is_file() and not p.is_symlink() else "")
            for p in out.rglob("*"))
    assert ("followed", False, "0o100640", "hi\n") in results["dockyard"]
    assert results["dockyard"] == results["dockerd"]


def _source_tree(base: Path) -> Path:
    src = base / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "a.txt").chmod(0o600)
    (src / "d" / "e" / "z").write_text("z\n")
    (src / "link").symlink_to("a.txt")
    for p in (src / "a.txt", src / "d", src / "d" / "e", src / "d" / "e" / "z"):
        os.chown(p, 1234, 5678)
    return src


def test_cp_in_matches_dockerd_through_symlinks(engines, scenario, tmp_path):
    src = _source_tree(tmp_path)
    listing = {}
    for e in engines:
        name = scenario[e.label]
        _ok(e.docker("cp", str(src), f"{name}:/data/rootlink/"))             # /data/rootlink -> /
        _ok(e.docker("cp", str(src / "a.txt"), f"{name}:/data/up/x.txt"))   # ../../.. from /data
        _ok(e.docker("cp", str(src / "a.txt"), f"{name}:/data/dirlink"))    # a link to a directory
        _ok(e.docker("cp", "-a", str(src / "d"), f"{name}:/tmp/"))
        listing[e.label] = _ok(e.docker(
            "exec", name, "find", "/src", "/x.txt", "/data/dir", "/tmp/d", "-exec",
            "stat", "-c", "%n %u %g %a %F %s", "{}", ";")).splitlines()
    assert "/x.txt 1234 5678 600 regular file 6" in listing["dockyard"]
    assert sorted(listing["dockyard"]) == sorted(listing["dockerd"])


def _crafted_tar(entries: list[tuple[str, str, str]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size, info.mode = len(value), 0o644
                tar.addfile(info, io.BytesIO(value.encode()))
            else:
                info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
                info.linkname = value
                tar.addfile(info)
    return out.getvalue()


CRAFTED = {
    "dotdot": [("../../../escaped-dotdot", "file", "x")],
    "absolute-link": [("evil", "symlink", "/"), ("evil/escaped-abslink", "file", "x")],
    "relative-link": [("rel", "symlink", "../../../../"), ("escaped-rel", "file", "x")],
    "hardlink": [("h1", "hardlink", "../../etc/passwd")],
    "absolute-name": [("/abs/escaped-absname", "file", "x")],
}


def test_crafted_tars_land_where_dockerd_puts_them(engines, scenario):
    for label, entries in CRAFTED.items():
        body = _crafted_tar(entries)
        outcome = {}
        for e in engines:
            name = scenario[e.label]
            status, _, _ = e.request("PUT", f"/containers/{name}/archive?path=/data/sub&noOverwriteDirNonDir=true",
                                     body)
            found = e.docker("exec", name, "find", "/", "-xdev", "-name", "escaped-*").stdout.split()
            outcome[e.label] = (status == 200, sorted(found))
        assert outcome["dockyard"] == outcome["dockerd"], label
        if label == "dotdot":
            assert outcome["dockyard"][0] is False


def test_cp_in_of_a_file_bigger_than_a_request_body_may_be(engines, scenario, tmp_path):
    """The archive is read as it arrives (the agent keeps other bodies to 16 MiB in memory)."""
    from guest_agent.http_request import MAX_BODY
    ours = engines[0]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MAX_BODY + (4 << 20)))
    _ok(ours.docker("cp", str(big), f"{scenario['dockyard']}:/tmp/big.bin", timeout=180))
    inside = _ok(ours.docker("exec", scenario["dockyard"], "md5sum", "/tmp/big.bin")).split()[0]
    assert inside == hashlib.md5(big.read_bytes()).hexdigest()
    ours.docker("exec", scenario["dockyard"], "rm", "/tmp/big.bin")


def test_a_refused_archive_leaves_the_connection_usable(engines, scenario):
    """A tar refused at its first entry is still read to its end: the client gets the 400 and
    the keep-alive connection serves the next request."""
    ours = engines[0]
    body = _crafted_tar([("../escaped-early", "file", "x"), ("later", "file", "y" * (1 << 20))])
    conn = UnixHTTPConnection(ours.socket)
    try:
        conn.request("PUT", f"/v1.41/containers/{scenario['dockyard']}/archive?path=/tmp", body=iter([body]),
                     encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 400 and b"outside" in response.read()
        conn.request("GET", "/_ping")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"OK")
    finally:
        conn.close()


# --------------------------------------------------------------------------- escapes


def test_cp_through_a_symlink_to_a_host_path_stays_inside(engines, test_images, tmp_path):
    """A container symlink naming a host directory (absolute, and with ../..) resolves in the
    container: the host's marker is neither written nor read."""
    ours = engines[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = outside / "marker.txt"
    marker.write_text("host secret\n")
    depth = "../" * 12
    # The same directory exists in the container: that one is where the links lead.
    name = ours.scenario(test_images["busybox"], f"mkdir -p {outside} && ln -s {outside} /abs && "
                                                 f"ln -s {depth}{str(outside)[1:]} /rel && touch /ready")
    try:
        src = tmp_path / "marker.txt"
        src.write_text("from cp\n")
        for link in ("/abs", "/rel"):
            _ok(ours.docker("cp", str(src), f"{name}:{link}/"))
            assert marker.read_text() == "host secret\n"
            copied = ours.cp_out(name, f"{link}/marker.txt")
            assert b"host secret" not in copied and b"from cp" in copied
        inside = _ok(ours.docker("exec", name, "cat", f"{outside}/marker.txt"))
        assert inside == "from cp\n"
        status, _, _ = ours.request("PUT", f"/containers/{name}/archive?path=/abs",
                                    _crafted_tar([("../../../../../../marker.txt", "file", "x")]))
        assert status == 400
        assert marker.read_text() == "host secret\n"
    finally:
        ours.docker("rm", "-f", name)


# --------------------------------------------------------------------------- stopped containers


def test_cp_in_and_out_of_created_and_exited_containers(agent, engines, test_images, tmp_path):
    ours = engines[0]
    volume = _name()
    name = _name()
    _ok(ours.docker("create", "--name", name, "--network", "none", "-v", f"{volume}:/vol",
                    test_images["busybox"], "sh", "-c", "cat /vol/a.txt /tmp/a.txt && echo done > /tmp/out"))
    try:
        src = tmp_path / "a.txt"
        src.write_text("copied in\n")
        _ok(ours.docker("cp", str(src), f"{name}:/tmp/"))
        _ok(ours.docker("cp", str(src), f"{name}:/vol/"))
        assert b"copied in" in ours.cp_out(name, "/vol/a.txt")
        _ok(ours.docker("start", "-a", name))
        assert _ok(ours.docker("logs", name)) == "copied in\ncopied in\n"
        poll(lambda: json.loads(_ok(ours.docker("inspect", name)))[0]["State"]["Status"] == "exited",
             what="exited")
        entries = _tar_entries(ours.cp_out(name, "/tmp/out"))
        assert [e[0] for e in entries] == ["out"]
        assert b"done" in ours.cp_out(name, "/tmp/out")
        assert "archive-mnt" not in Path("/proc/self/mountinfo").read_text()
        # The engine's /etc/hosts of the last run, as dockerd shows it for a stopped container.
        hosts = ours.cp_out(name, "/etc/hosts")
        assert b"localhost" in hosts
    finally:
        ours.docker("rm", "-f", "-v", name)


def test_cp_archive_mode_gives_files_to_the_containers_user(engines, test_images, tmp_path):
    """`docker cp -a` (copyUIDGID): the container's User, looked up in its own /etc/passwd
    (the test image's "app" is 1000:1000); without -a the archive's owners are kept."""
    ours = engines[0]
    name = _name()
    _ok(ours.docker("create", "--name", name, "--user", "app", test_images["busybox"], "true"))
    try:
        src = tmp_path / "owned.txt"
        src.write_text("x")
        os.chown(src, 1234, 5678)
        _ok(ours.docker("cp", "-a", str(src), f"{name}:/tmp/with-a.txt"))
        _ok(ours.docker("cp", str(src), f"{name}:/tmp/without-a.txt"))
        owners = {e[0]: (e[3], e[4]) for e in _tar_entries(ours.cp_out(name, "/tmp/."))}
        assert owners["./with-a.txt"] == (1000, 1000)
        assert owners["./without-a.txt"] == (1234, 5678)
    finally:
        ours.docker("rm", "-f", name)


def test_cp_into_a_read_only_volume_is_refused(engines, test_images, tmp_path):
    ours = engines[0]
    name = _name()
    _ok(ours.docker("create", "--name", name, "-v", f"{tmp_path}:/ro:ro", test_images["busybox"], "true"))
    try:
        src = tmp_path / "f"
        src.write_text("x")
        result = ours.docker("cp", str(src), f"{name}:/ro/g")
        assert result.returncode != 0 and "read-only" in result.stderr
        assert not (tmp_path / "g").exists()
    finally:
        ours.docker("rm", "-f", name)


# --------------------------------------------------------------------------- docker-py, export


def test_docker_py_put_and_get_archive(agent, engines, scenario):
    client = agent.client()
    container = client.containers.get(scenario["dockyard"])
    assert container.put_archive("/data/sub", _crafted_tar([("py.txt", "file", "from docker-py")]))
    stream, stat = container.get_archive("/data/sub/py.txt")
    assert stat["name"] == "py.txt" and stat["size"] == len("from docker-py")
    entries = _tar_entries(b"".join(stream))
    assert entries == [("py.txt", "0", 0o100644, 0, 0, len("from docker-py"), "")]
    with pytest.raises(Exception, match="Could not find the file"):
        container.get_archive("/nonexistent")


def test_export_imports_into_dockerd_and_runs(agent, dockerd, engines, test_images):
    ours = engines[0]
    name = ours.scenario(test_images["busybox"], "echo exported > /data-export.txt && touch /ready",
                         "-v", "/vol")
    try:
        _ok(ours.docker("exec", name, "sh", "-c", "echo in-volume > /vol/v.txt"))
        exported = subprocess.run([DOCKER_CLI, "export", name], capture_output=True, env=ours.env,
                                  timeout=120, check=True).stdout
        names = [entry[0] for entry in _tar_entries(exported)]
        assert "data-export.txt" in names and "bin/busybox" in names
        assert not any(".wh." in n for n in names) and "bin/ls" in names
        assert "vol/v.txt" not in names
        tag = f"exported-{uuid.uuid4().hex[:8]}:latest"
        imported = subprocess.run([DOCKER_CLI, "import", "-", tag], input=exported, capture_output=True,
                                  env=dockerd.docker_env(), timeout=120)
        assert imported.returncode == 0, imported.stderr
        out = _ok(dockerd.docker("run", "--rm", "--network", "none", tag, "/bin/cat", "/data-export.txt"))
        assert out == "exported\n"
        dockerd.docker("rmi", tag)
    finally:
        ours.docker("rm", "-f", "-v", name)
