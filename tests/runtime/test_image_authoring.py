"""The image-authoring core: layer tars from real overlay upper dirs, layers registered from
tars (safely, idempotently), images made from configs, blobs and manifests for push/save."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from runtime.errors import InvalidArchive, RegistryError
from runtime.images.layer_store import chain_ids
from runtime.images.layer_tar import write_layer_tar
from runtime.images.layer_unpack import OPAQUE_XATTR
from runtime.images.store import ImageStore


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def _tar_of(directory: Path) -> bytes:
    buf = io.BytesIO()
    write_layer_tar(directory, buf)
    return buf.getvalue()


@pytest.fixture
def overlay_change(tmp_path: Path):
    """A real overlay mount over a lower tree, changed the way a container changes its root;
    yields (lower, upper) once unmounted."""
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "etc").mkdir()
    (lower / "etc/motd").write_text("hello\n")
    (lower / "etc/keep").write_text("keep\n")
    (lower / "data").mkdir()
    (lower / "data/old").write_text("old\n")
    (lower / "gone").write_text("x")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        (merged / "etc/motd").unlink()                  # a whiteout in a kept directory
        os.utime(upper / "etc/motd", (1_000_000, 1_000_000), follow_symlinks=False)   # long ago
        (merged / "gone").unlink()                      # a whiteout at the top
        subprocess.run(["rm", "-rf", str(merged / "data")], check=True)
        (merged / "data").mkdir(mode=0o750)             # re-made: an opaque directory
        (merged / "data/new").write_text("new\n")
        (merged / "bin").mkdir()
        (merged / "bin/tool").write_text("#!/bin/sh\n")
        os.chown(merged / "bin/tool", 1000, 1001)
        os.chmod(merged / "bin/tool", 0o4755)         # after chown, which clears setuid
        os.link(merged / "bin/tool", merged / "bin/tool2")
        os.symlink("/etc/passwd", merged / "bin/link")  # absolute: stored, never followed
        os.mkfifo(merged / "bin/fifo")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    yield lower, upper


def test_layer_tar_of_a_real_overlay_upper_dir(overlay_change) -> None:
    _lower, upper = overlay_change
    assert stat.S_ISCHR(os.lstat(upper / "etc/motd").st_mode)       # overlay made these, not us
    assert os.getxattr(upper / "data", OPAQUE_XATTR) == b"y"
    data = _tar_of(upper)
    # tarfile reads "bin/" back as "bin"; the header holds the slash (checked below).
    members = {m.name + ("/" if m.isdir() else ""): m for m in _members(data)}
    names = list(members)
    assert b"bin/\0" in data
    # Go's filepath.Walk order, as dockerd writes: a directory, then its entries sorted by
    # their names on disk (a whiteout sorts as the name it hides).
    assert names == ["bin/", "bin/fifo", "bin/link", "bin/tool", "bin/tool2", "data/",
                     "data/.wh..wh..opq", "data/new", "etc/", "etc/.wh.motd", ".wh.gone"]
    for whiteout in ("etc/.wh.motd", ".wh.gone"):
        m = members[whiteout]
        assert m.isreg() and m.size == 0 and m.mode == 0o600
    opq = members["data/.wh..wh..opq"]
    assert opq.isreg() and opq.size == 0 and opq.mode == 0o750
    assert members["bin/tool"].mode == 0o4755 and (members["bin/tool"].uid, members["bin/tool"].gid) == (1000, 1001)
    assert members["bin/tool2"].islnk() and members["bin/tool2"].linkname == "bin/tool"
    assert members["bin/link"].issym() and members["bin/link"].linkname == "/etc/passwd"
    assert members["bin/fifo"].isfifo()
    assert "etc/keep" not in members and "etc/motd" not in members
    assert not any("overlay" in k for m in members.values() for k in m.pax_headers)
    assert _tar_of(upper) == data                                   # deterministic bytes


def test_excluded_paths_and_the_directories_only_they_fill_are_left_out(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    for d in ("etc", "proc", "data"):
        (upper / d).mkdir(parents=True)
    (upper / "etc/hosts").write_text("127.0.0.1 x\n")
    (upper / "data/hosts").write_text("kept\n")
    exclude = {"etc/hosts", "proc"}
    buf = io.BytesIO()
    write_layer_tar(upper, buf, exclude=exclude)
    assert [m.name for m in _members(buf.getvalue())] == ["data", "data/hosts"]
    (upper / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\n")
    buf = io.BytesIO()
    write_layer_tar(upper, buf, exclude=exclude)
    assert [m.name for m in _members(buf.getvalue())] == ["data", "data/hosts", "etc", "etc/passwd"]
    empty = tmp_path / "empty"
    empty.mkdir()
    buf = io.BytesIO()
    write_layer_tar(empty, buf)
    assert buf.getvalue() == bytes(1024)   # Go's empty tar: dockerd's "no layer" digest


def test_register_layer_round_trip_and_idempotence(overlay_change, tmp_path: Path) -> None:
    lower, upper = overlay_change
    store = ImageStore(tmp_path / "store")
    (tmp_path / "base.tar").write_bytes(_tar_of(lower))
    (tmp_path / "change.tar").write_bytes(_tar_of(upper))
    base = store.register_layer(tmp_path / "base.tar", "")
    assert base.chain_id == base.diff_id == \
        "sha256:" + hashlib.sha256((tmp_path / "base.tar").read_bytes()).hexdigest()
    top = store.register_layer(tmp_path / "change.tar", base.chain_id)
    assert top.parent == base.chain_id and top.chain_id == chain_ids([base.diff_id, top.diff_id])[1]

    # The stored layer holds overlay's own whiteout format again.
    diff = store.layers.diff_dir(top.chain_id)
    st = os.lstat(diff / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(diff / "data", OPAQUE_XATTR) == b"y"
    assert (diff / "data/new").read_text() == "new\n"
    assert os.lstat(diff / "bin/tool").st_ino == os.lstat(diff / "bin/tool2").st_ino
    assert os.readlink(diff / "bin/link") == "/etc/passwd"

    # The gzip blob decompresses to exactly the diff id's tar.
    digest, size, media_type, path = store.layer_blob(top.chain_id)
    assert media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    blob = path.read_bytes()
    assert (digest, size) == ("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == top.diff_id

    # Again, also gzip-compressed: the same layer, nothing new on disk.
    (tmp_path / "change.tar.gz").write_bytes(gzip.compress((tmp_path / "change.tar").read_bytes()))
    before = (sorted(os.listdir(store.layers.layers_dir)), sorted(os.listdir(store.blobs.dir)))
    assert store.register_layer(tmp_path / "change.tar.gz", base.chain_id) == top
    assert store.register_layer(tmp_path / "change.tar", base.chain_id) == top
    assert (sorted(os.listdir(store.layers.layers_dir)), sorted(os.listdir(store.blobs.dir))) == before

    # A lost blob is rebuilt from the diff dir: the same bytes, checked against the diff id.
    path.unlink()
    assert store.layer_blob(top.chain_id)[:3] == (digest, size, media_type)

    config = {"architecture": "amd64", "os": "linux", "created": "2026-12-05T00:00:00Z",
              "config": {"Cmd": ["sh"]}, "history": [{"created_by": "a"}, {"created_by": "b"}]}
    image = store.create_image(config, [base.chain_id, top.chain_id], ["made:here"])
    assert image.config["rootfs"] == {"type": "layers", "diff_ids": [base.diff_id, top.diff_id]}
    assert image.id == "sha256:" + hashlib.sha256(store.blobs.path(image.id).read_bytes()).hexdigest()
    assert store.create_image(config, [base.chain_id, top.chain_id], ["made:again"]).id == image.id
    assert store.get("made:here").id == store.get("made:again").id == image.id
    assert store.layer_dirs(image) == [store.layers.diff_dir(base.chain_id), diff]
    manifest = json.loads(store.manifest_for(image))
    assert manifest["config"]["digest"] == image.id
    assert [layer["digest"] for layer in manifest["layers"]] == \
        [store.layer_blob(base.chain_id)[0], digest]

    reopened = ImageStore(tmp_path / "store")
    assert reopened.get("made:here").id == image.id
    assert reopened.layers.get(top.chain_id).blob_digest == digest


def _crafted_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _file(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


@pytest.mark.parametrize("members", [
    [(_file("../escape"), b"x")],
    [(_file("a/../../escape"), b"x")],
    [(_file("link", tarfile.SYMTYPE, "/"), b""), (_file("link/tmp/escape"), b"x")],
    [(_file("hard", tarfile.LNKTYPE, "../../etc/passwd"), b"")],
], ids=["dotdot", "dotdot-inside", "through-symlink", "hardlink-out"])
def test_register_layer_refuses_escaping_tars_and_keeps_nothing(tmp_path: Path, members) -> None:
    store = ImageStore(tmp_path / "store")
    _crafted_tar(tmp_path / "bad.tar", members)
    with pytest.raises(InvalidArchive):
        store.register_layer(tmp_path / "bad.tar", "")
    assert [p for p in store.layers.layers_dir.iterdir() if p.name != "l"] == []
    assert list(store.layers.db_dir.iterdir()) == []
    assert list(store.blobs.dir.iterdir()) == []
    assert list(store.blobs.tmp_dir.iterdir()) == []
    assert not (tmp_path / "escape").exists() and not Path("/tmp/escape").exists()


def test_absolute_names_stay_inside_the_layer(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    _crafted_tar(tmp_path / "abs.tar", [(_file("/abs-dockyard-test"), b"inside")])
    layer = store.register_layer(tmp_path / "abs.tar", "")
    assert (store.layers.diff_dir(layer.chain_id) / "abs-dockyard-test").read_text() == "inside"
    assert not Path("/abs-dockyard-test").exists()


def test_corrupt_archives_are_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    good = tmp_path / "good.tar"
    _crafted_tar(good, [(_file("f"), b"y" * 5000)])
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(good.read_bytes())[:-40])
    (tmp_path / "junk.tar").write_bytes(b"\x01" * 2048)
    for bad in ("cut.tar.gz", "junk.tar"):
        with pytest.raises(InvalidArchive):
            store.register_layer(tmp_path / bad, "")
    assert list(store.layers.db_dir.iterdir()) == [] and list(store.blobs.dir.iterdir()) == []


def test_a_foreign_layer_without_its_blob_is_not_rebuilt_wrongly(tmp_path: Path) -> None:
    """A tar we did not write (GNU format, other padding) cannot be remade from its files:
    layer_blob must say so rather than hand out a blob with another diff id."""
    store = ImageStore(tmp_path / "store")
    _crafted_tar(tmp_path / "gnu.tar", [(_file("d", tarfile.DIRTYPE), b""), (_file("d/f"), b"z")])
    layer = store.register_layer(tmp_path / "gnu.tar", "")
    store.blobs.delete(layer.blob_digest)
    with pytest.raises(RegistryError, match="diff id"):
        store.layer_blob(layer.chain_id)


def test_pulls_keep_their_blobs(test_images, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image = store.pull(test_images["layered"])
    record = store.index.images[image.id]
    pulled = json.loads(store.blobs.read(record.manifest_digest))
    for desc, chain in zip(pulled["layers"], record.chain_ids, strict=True):
        digest, size, media_type, path = store.layer_blob(chain)
        assert (digest, size, media_type) == (desc["digest"], desc["size"], desc["mediaType"])
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest
    made = json.loads(store.manifest_for(image))
    assert [d["digest"] for d in made["layers"]] == [d["digest"] for d in pulled["layers"]]
    assert made["config"] == {"mediaType": "application/vnd.docker.container.image.v1+json",
                              "size": len(store.blobs.read(image.id)), "digest": image.id}
    store.remove(test_images["layered"])
    for desc in pulled["layers"]:
        assert not store.blobs.has(desc["digest"])


def test_engine_runs_an_image_made_from_a_container_upper_dir(engine, busybox, tmp_path: Path) -> None:
    """The whole chain through engine.images: a container's changes → layer tar → layer → image → run."""
    from tests.runtime.engine_helpers import run
    cid, code, _, _ = run(engine, busybox, ["sh", "-c", "echo made > /made && rm /etc/group && "
                                                       "rm -rf /home && mkdir /home && touch /home/only"])
    assert code == 0
    with open(tmp_path / "layer.tar", "wb") as out:
        write_layer_tar(engine.store.dir(cid) / "diff", out)
    base = engine.images.get(busybox)
    parent = engine.images.store.index.images[base.id].chain_ids[-1]
    layer = engine.images.register_layer(tmp_path / "layer.tar", parent)
    config = dict(base.config, history=[*base.config.get("history", []), {"created_by": "test"}])
    image = engine.images.create_image(config, [*engine.images.store.index.images[base.id].chain_ids,
                                                 layer.chain_id], ["authored:1"])
    _, code, out, _ = run(engine, "authored:1", ["sh", "-c", "cat /made; ls /home; test -e /etc/group || echo nogroup"])
    assert (code, out) == (0, b"made\nonly\nnogroup\n")
    assert engine.images.get(image.id).repo_tags == ["authored:1"]
