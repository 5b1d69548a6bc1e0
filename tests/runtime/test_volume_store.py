"""Volumes on disk: create/get/list/remove, anonymous names, reload from disk."""

from __future__ import annotations

import re

import pytest

from runtime.errors import Conflict, InvalidArgument, NotFound
from runtime.volume_store import VolumeStore


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
    with pytest.raises(InvalidArgument, match="not supported"):
        store.create("vol", options={"type": "tmpfs"})
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
