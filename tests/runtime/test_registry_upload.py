"""The upload side of the registry client against a real Debian docker-registry.

A recording proxy sits between the client and the registry (through the dial map,
so names, Locations and auth stay the registry's) to show how the client talks:
how many PATCH chunks, which mount requests.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from runtime.errors import RegistryAuthError, RegistryError
from runtime.images.reference import parse_reference
from runtime.images.registry_client import Descriptor, RegistryClient
from runtime.images.registry_credentials import RegistryCredentials
from runtime.images.registry_session import RegistrySession
from runtime.images.registry_upload import RegistryUploader
from tests.support.registry import FaultyProxy, start_registry

CHUNK = 64 << 10


@pytest.fixture(scope="module")
def fresh_registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("upload-registry"))
    yield reg
    reg.stop()


def _blob(tmp_path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path, "sha256:" + hashlib.sha256(data).hexdigest()


def test_blob_goes_up_in_chunks_and_comes_back_identical(fresh_registry, tmp_path: Path) -> None:
    size = 5 * CHUNK + 123
    path, digest = _blob(tmp_path, size)
    ref = parse_reference(f"{fresh_registry.host}/upload/chunks:latest")
    creds = RegistryCredentials()
    with FaultyProxy(fresh_registry.host, mode="pass") as proxy:
        session = RegistrySession(dial_map={fresh_registry.host: proxy.host})
        uploader = RegistryUploader(session, chunk_size=CHUNK)
        assert not uploader.blob_exists(ref, digest, creds)
        seen: list[tuple[int, int]] = []
        uploader.upload_blob(ref, path, digest, size, creds, on_progress=lambda c, t: seen.append((c, t)))
        assert uploader.blob_exists(ref, digest, creds)
        patches = [r for r in proxy.requests if r[0] == "PATCH"]
    assert [r[2] for r in patches] == [f"{i * CHUNK}-{min((i + 1) * CHUNK, size) - 1}" for i in range(6)]
    assert [r[0] for r in proxy.requests if r[0] in ("POST", "PUT")] == ["POST", "PUT"]
    assert seen[-1] == (size, size) and len(seen) == 6
    back = tmp_path / "back"
    RegistryClient().download_blob(ref, Descriptor("application/octet-stream", digest, size), back)
    assert back.read_bytes() == path.read_bytes()


def test_a_blob_that_does_not_match_its_digest_is_not_committed(fresh_registry, tmp_path: Path) -> None:
    path, digest = _blob(tmp_path, 1000)
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    ref = parse_reference(f"{fresh_registry.host}/upload/wrong:latest")
    uploader = RegistryUploader(RegistrySession(), chunk_size=CHUNK)
    with pytest.raises(RegistryError, match="changed on disk"):
        uploader.upload_blob(ref, path, wrong, 1000, RegistryCredentials())
    assert not uploader.blob_exists(ref, wrong, RegistryCredentials())
    assert not uploader.blob_exists(ref, digest, RegistryCredentials())


def test_mount_links_a_blob_from_another_repository(fresh_registry, tmp_path: Path) -> None:
    path, digest = _blob(tmp_path, 3000)
    creds = RegistryCredentials()
    source = parse_reference(f"{fresh_registry.host}/upload/source:latest")
    target = parse_reference(f"{fresh_registry.host}/upload/target:latest")
    uploader = RegistryUploader(RegistrySession())
    uploader.upload_blob(source, path, digest, 3000, creds)
    assert not uploader.blob_exists(target, digest, creds)
    assert uploader.mount_blob(target, digest, source, creds) is None
    assert uploader.blob_exists(target, digest, creds)
    # A blob the source does not hold: the registry opens an upload session instead.
    other, other_digest = _blob(tmp_path, 10)
    location = uploader.mount_blob(target, other_digest, source, creds)
    assert location is not None and "/v2/upload/target/blobs/uploads/" in location
    uploader.upload_blob(target, other, other_digest, 10, creds, location=location)
    assert uploader.blob_exists(target, other_digest, creds)


def test_manifest_put_returns_the_digest_the_registry_serves(fresh_registry, tmp_path: Path) -> None:
    creds = RegistryCredentials()
    ref = parse_reference(f"{fresh_registry.host}/upload/app:v1")
    uploader = RegistryUploader(RegistrySession())
    layer, layer_digest = _blob(tmp_path, 2000)
    uploader.upload_blob(ref, layer, layer_digest, 2000, creds)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_path = tmp_path / "config"
    config_path.write_bytes(config)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    uploader.upload_blob(ref, config_path, config_digest, len(config), creds)
    media = "application/vnd.docker.distribution.manifest.v2+json"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 2000, "digest": layer_digest}]}).encode()
    digest = uploader.put_manifest(ref, "v1", manifest, media, creds)
    resolved = RegistryClient().resolve(ref)
    assert resolved.digest == digest and resolved.manifest_bytes == manifest


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_push_scope_and_refusals(auth: str, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg", auth=auth)
    try:
        path, digest = _blob(tmp_path, 500)
        ref = parse_reference(f"{reg.host}/team/app:latest")
        uploader = RegistryUploader(RegistrySession())
        with pytest.raises(RegistryAuthError, match="^(no basic auth credentials|unauthorized: )"):
            uploader.upload_blob(ref, path, digest, 500, RegistryCredentials())
        with pytest.raises(RegistryAuthError, match="^unauthorized: "):
            uploader.upload_blob(ref, path, digest, 500, RegistryCredentials(reg.username, "wrong"))
        good = RegistryCredentials(reg.username, reg.password)
        uploader.upload_blob(ref, path, digest, 500, good)
        assert uploader.blob_exists(ref, digest, good)
        if reg.token_server is not None:
            assert {"type": "repository", "name": "team/app", "actions": ["pull", "push"]} in \
                reg.token_server.issued[-1]["access"]
    finally:
        reg.stop()
