"""The registry client against a real Debian docker-registry (anonymous, Basic and token auth)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from runtime.errors import RegistryAuthError, RegistryError, RegistryNotFound
from runtime.images.reference import parse_reference
from runtime.images.registry_client import (
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_MANIFEST,
    RegistryClient,
    dial_map_from_env,
    is_insecure_host,
    loopback_dial_map,
)
from runtime.images.store import RegistryCredentials
from tests.conftest import CACHE_DIR
from tests.support.registry import FaultyProxy, start_registry
from tests.support.test_images import push_test_images


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("basic-registry"), auth="basic")
    push_test_images(reg, CACHE_DIR, names=["busybox"])
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("token-registry"), auth="token")
    push_test_images(reg, CACHE_DIR, names=["busybox"])
    yield reg
    reg.stop()


def config_of(client: RegistryClient, ref_text: str, creds=None) -> dict:
    ref = parse_reference(ref_text)
    resolved = client.resolve(ref, creds)
    return json.loads(client.fetch_blob(ref, resolved.config, creds))


def test_resolves_oci_and_docker_manifests(registry, test_images) -> None:
    client = RegistryClient()
    oci = client.resolve(parse_reference(test_images["busybox"]))
    assert oci.media_type == MEDIA_OCI_MANIFEST
    assert oci.digest == oci.manifest_digest == "sha256:" + hashlib.sha256(oci.manifest_bytes).hexdigest()
    assert len(oci.layers) == 1
    docker = client.resolve(parse_reference(test_images["debian"]))
    assert docker.media_type == MEDIA_DOCKER_MANIFEST       # pushed as Docker v2 schema 2
    assert config_of(client, test_images["debian"])["config"]["Cmd"] == ["bash"]


def test_index_picks_the_host_platform(registry, test_images) -> None:
    busybox = RegistryClient().resolve(parse_reference(test_images["busybox"]))
    amd64 = RegistryClient(platform_=("linux", "amd64")).resolve(parse_reference(test_images["multiarch"]))
    assert amd64.config.digest == busybox.config.digest
    assert amd64.digest != amd64.manifest_digest             # the index digest is what gets pinned
    arm = RegistryClient(platform_=("linux", "arm64")).resolve(parse_reference(test_images["multiarch"]))
    assert arm.config.digest != busybox.config.digest
    with pytest.raises(RegistryNotFound, match="no matching manifest for linux/s390x"):
        RegistryClient(platform_=("linux", "s390x")).resolve(parse_reference(test_images["multiarch"]))


def test_resolve_by_digest_is_verified(registry, test_images) -> None:
    client = RegistryClient()
    resolved = client.resolve(parse_reference(test_images["busybox"]))
    by_digest = client.resolve(parse_reference(f"{registry.host}/busybox@{resolved.digest}"))
    assert by_digest.config.digest == resolved.config.digest


def test_missing_tag_and_repository(registry, test_images) -> None:
    client = RegistryClient()
    with pytest.raises(RegistryNotFound, match="manifest unknown"):
        client.resolve(parse_reference(f"{registry.host}/busybox:no-such-tag"))
    with pytest.raises(RegistryNotFound):
        client.resolve(parse_reference(f"{registry.host}/no-such-repo:latest"))


def test_basic_auth(basic_registry) -> None:
    ref = f"{basic_registry.host}/busybox:latest"
    good = RegistryCredentials(basic_registry.username, basic_registry.password)
    assert config_of(RegistryClient(), ref, good)["config"]["Cmd"] == ["sh"]
    with pytest.raises(RegistryAuthError):
        RegistryClient().resolve(parse_reference(ref), RegistryCredentials(basic_registry.username, "wrong"))
    with pytest.raises(RegistryNotFound, match="pull access denied"):
        RegistryClient().resolve(parse_reference(ref))


def test_token_auth_fetches_and_caches_a_scoped_token(token_registry) -> None:
    ref = f"{token_registry.host}/busybox:latest"
    good = RegistryCredentials(token_registry.username, token_registry.password)
    server = token_registry.token_server
    before = len(server.issued)
    client = RegistryClient()
    assert config_of(client, ref, good)["config"]["Cmd"] == ["sh"]
    config_of(client, ref, good)
    issued = server.issued[before:]
    assert len(issued) == 1                                  # cached per scope after the first
    assert issued[0]["access"] == [{"type": "repository", "name": "busybox", "actions": ["pull"]}]
    with pytest.raises(RegistryAuthError):
        RegistryClient().resolve(parse_reference(ref), RegistryCredentials(token_registry.username, "bad"))
    with pytest.raises(RegistryNotFound, match="pull access denied"):
        RegistryClient().resolve(parse_reference(ref))


def test_download_resumes_after_a_broken_connection(registry, test_images, tmp_path: Path) -> None:
    with FaultyProxy(registry.host, mode="cut", faults=1) as proxy:
        client = RegistryClient(dial_map={registry.host: proxy.host})
        ref = parse_reference(test_images["busybox"])
        layer = client.resolve(ref).layers[0]
        dest = tmp_path / "blob"
        seen = []
        client.download_blob(ref, layer, dest, on_progress=lambda cur, tot: seen.append(cur))
        gets = proxy.blob_gets()
    assert "sha256:" + hashlib.sha256(dest.read_bytes()).hexdigest() == layer.digest
    assert len(gets) == 2
    assert gets[0][2] == "" and gets[1][2].startswith("bytes=") and gets[1][2] != "bytes=0-"
    assert seen[-1] == layer.size


def test_corrupted_blob_is_refused(registry, test_images, tmp_path: Path) -> None:
    with FaultyProxy(registry.host, mode="corrupt") as proxy:
        client = RegistryClient(dial_map=lambda host: proxy.host if host == registry.host else host)
        ref = parse_reference(test_images["busybox"])
        resolved = client.resolve(ref)
        with pytest.raises(RegistryError, match="digest mismatch"):
            client.download_blob(ref, resolved.layers[0], tmp_path / "blob")
        with pytest.raises(RegistryError, match="digest mismatch"):
            client.fetch_blob(ref, resolved.config)


def test_scheme_choice() -> None:
    assert is_insecure_host("127.0.0.1:5000")
    assert is_insecure_host("127.3.4.5:80")
    assert is_insecure_host("localhost:5000")
    assert is_insecure_host("[::1]:5000")
    assert not is_insecure_host("registry.example.com")
    client = RegistryClient(insecure_registries=["registry.lan:5000"])
    assert client.endpoint("registry.lan:5000") == "http://registry.lan:5000"
    assert client.endpoint("ghcr.io") == "https://ghcr.io"
    assert client.endpoint("docker.io") == "https://registry-1.docker.io"


def test_loopback_dial_map_reaches_the_registry_through_another_address(registry, test_images,
                                                                         monkeypatch) -> None:
    dial = loopback_dial_map("10.0.2.2")
    assert dial("127.0.0.1:5000") == "10.0.2.2:5000"
    assert dial("localhost:5000") == "10.0.2.2:5000"
    assert dial("ghcr.io") == "ghcr.io"
    # Real traffic: the registry listens on 127.0.0.1 only, so the user's name
    # "127.0.0.2:PORT" is reachable only through the map.
    name = f"127.0.0.2:{registry.port}/busybox:latest"
    with pytest.raises(RegistryError, match="cannot reach registry"):
        RegistryClient().resolve(parse_reference(name))
    monkeypatch.setenv("DOCKYARD_HOST_LOOPBACK", "127.0.0.1")
    resolved = RegistryClient(dial_map=dial_map_from_env()).resolve(parse_reference(name))
    assert resolved.reference.domain == f"127.0.0.2:{registry.port}"
    assert len(resolved.layers) == 1
