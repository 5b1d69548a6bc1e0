"""push_image on images made here (not pulled): their gzip blobs go up and come back.

The API tests (tests/api/test_push.py) push pulled images; an image made from a
tar (as commit, import and build make them) has blobs the store compressed itself.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from runtime.images.push import push_image
from runtime.images.store import ImageStore
from tests.support.registry import start_registry


def _layer_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def test_an_image_made_here_round_trips(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "ours")
    base = store.register_layer(_layer_tar(tmp_path / "a.tar", {"a.txt": b"a\n"}), "")
    top = store.register_layer(_layer_tar(tmp_path / "b.tar", {"b.txt": b"b" * 100_000}),
                               base.chain_id)
    with start_registry(tmp_path / "registry") as reg:
        name = f"{reg.host}/made/here"
        config = {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
                  "config": {"Cmd": ["sh"]}, "history": [{"created_by": "a"}, {"created_by": "b"}]}
        image = store.create_image(config, [base.chain_id, top.chain_id], [f"{name}:v1"])
        messages: list[dict] = []
        [pushed] = push_image(store, name, "v1", progress=messages.append)
        assert [m["status"] for m in messages if m.get("status") in ("Pushed", "Preparing")] == \
            ["Preparing", "Preparing", "Pushed", "Pushed"]
        assert f"{name}@{pushed.digest}" in store.get(image.id).repo_digests

        other = ImageStore(tmp_path / "theirs")
        pulled = other.pull(f"{name}:v1")
        assert pulled.id == image.id
        assert f"{name}@{pushed.digest}" in pulled.repo_digests
        top_dir = other.layer_dirs(pulled)[1]
        assert (top_dir / "b.txt").read_bytes() == b"b" * 100_000
        manifest = json.loads(other.blobs.read(pushed.digest))
        assert [layer["digest"] for layer in manifest["layers"]] == \
            [store.layer_blob(c)[0] for c in (base.chain_id, top.chain_id)]


def test_blob_sources_newest_first_deduplicated_and_bounded(tmp_path: Path) -> None:
    from runtime.images.blob_store import MAX_SOURCES, BlobStore

    blobs = BlobStore(tmp_path)
    digest = "sha256:" + "ab" * 32
    assert blobs.sources(digest) == []
    blobs.add_source([digest], "r:5000", "a")
    blobs.add_source([digest], "r:5000", "b")
    blobs.add_source([digest], "r:5000", "a")           # seen again: newest now
    assert blobs.sources(digest) == [("r:5000", "a"), ("r:5000", "b")]
    for i in range(2 * MAX_SOURCES):
        blobs.add_source([digest], "other:5000", f"n{i}")
    kept = blobs.sources(digest)
    assert len(kept) == MAX_SOURCES and kept[0] == ("other:5000", f"n{2 * MAX_SOURCES - 1}")
    blobs.delete(digest)
    assert blobs.sources(digest) == kept                 # a deleted blob's sources stay known


def test_a_mount_refused_for_want_of_access_falls_back_to_an_upload(tmp_path: Path) -> None:
    from runtime.images.registry_credentials import RegistryCredentials

    store = ImageStore(tmp_path / "ours")
    layer = store.register_layer(_layer_tar(tmp_path / "a.tar", {"a.txt": b"a\n"}), "")
    with start_registry(tmp_path / "registry", auth="token") as reg:
        creds = RegistryCredentials(reg.username, reg.password)
        config = {"architecture": "amd64", "os": "linux", "config": {}}
        store.create_image(config, [layer.chain_id], [f"{reg.host}/team/src:1", f"{reg.host}/team/dst:1"])
        push_image(store, f"{reg.host}/team/src", "1", creds)
        assert store.blobs.sources(store.layer_blob(layer.chain_id)[0])[0] == (reg.host, "team/src")
        assert reg.token_server is not None
        reg.token_server.withheld.add("team/src")        # no pull access to the source any more
        messages: list[dict] = []
        push_image(store, f"{reg.host}/team/dst", "1", creds, messages.append)
        assert [m["status"] for m in messages if m.get("id") and m["status"] != "Pushing"] == \
            ["Preparing", "Pushed"]
