"""Volumes on disk: create/get/list/remove, anonymous names, reload from disk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime.errors import Conflict, InvalidArgument, NotFound
from runtime.volumes.store import VolumeStore


def test_create_is_idempotent_and_persists(tmp_path):
    store = VolumeStore(tmp_path)
    vol, new = store.create("data", labels={"a": "b"})
    assert new and vol.mountpoint == str(tmp_path / "data" / "_data")
    (tmp_path / "data" / "_data" / "f").write_text("x")
    again, new2 = store.create("data")
    assert not new2 and again.labels == {"a": "b"}
    reloaded = VolumeStore(tmp_path)
    assert reloaded.get("data").labels == {"a": "b"}
    assert [v.name for v in reloaded.list()] == ["data"]


def test_anonymous_volume_gets_64_hex_name(tmp_path):
    store = VolumeStore(tmp_path)
    vol, _ = store.create()
    assert re.fullmatch(r"[0-9a-f]{64}", vol.name)
    assert store.is_anonymous(vol)
    assert not store.is_anonymous(store.create("named")[0])


def test_invalid_name_and_options(tmp_path):
    store = VolumeStore(tmp_path)
    with pytest.raises(InvalidArgument, match="invalid characters"):
        store.create("-bad")
    with pytest.raises(InvalidArgument, match='missing required option: "device"'):
        store.create("vol", options={"type": "tmpfs"})
    with pytest.raises(InvalidArgument, match='invalid option: "foo"'):
        store.create("vol", options={"foo": "bar"})
    with pytest.raises(InvalidArgument, match="plugin"):
        store.create("vol", driver="nfs")


def test_remove(tmp_path):
    store = VolumeStore(tmp_path)
    store.create("vol")
    with pytest.raises(Conflict, match="volume is in use"):
        store.remove("vol", in_use_by=["abc"])
    (tmp_path / "vol" / "_data" / "file").write_bytes(b"12345")
    assert store.usage("vol") == 5
    store.remove("vol")
    assert not (tmp_path / "vol").exists()
    with pytest.raises(NotFound, match="no such volume"):
        store.get("vol")
    with pytest.raises(NotFound):
        store.remove("vol")
    store.remove("vol", force=True)


def _mounted(path: str) -> bool:
    from runtime.volumes.local_volume import is_mounted
    return is_mounted(path)


def test_driver_options_mount_while_in_use(tmp_path):
    """A tmpfs volume is mounted for its first user and unmounted after its last."""
    store = VolumeStore(tmp_path / "volumes")
    vol, _ = store.create("tv", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    assert store.acquire("tv", "c1") == vol.mountpoint
    assert _mounted(vol.mountpoint)
    Path(vol.mountpoint, "f").write_text("x")
    store.acquire("tv", "c2")
    store.release("c1")
    assert _mounted(vol.mountpoint) and Path(vol.mountpoint, "f").exists()
    store.release("c2")
    assert not _mounted(vol.mountpoint) and not Path(vol.mountpoint, "f").exists()
    store.release("c2")   # idempotent


def test_removing_a_bind_volume_keeps_the_host_directory(tmp_path):
    """Even a mount left behind by a crash is undone before the volume's files are deleted."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "precious").write_text("keep me")
    store = VolumeStore(tmp_path / "volumes")
    store.create("bv", options={"type": "none", "o": "bind", "device": str(host)})
    store.acquire("bv", "c1")
    assert (tmp_path / "volumes" / "bv" / "_data" / "precious").exists()
    # A new store (the engine restarted) unmounts what the last run left mounted.
    again = VolumeStore(tmp_path / "volumes")
    assert not _mounted(str(tmp_path / "volumes" / "bv" / "_data"))
    again.acquire("bv", "c1")
    again.remove("bv")
    assert (host / "precious").read_text() == "keep me"
