"""MachineConfig validation and atomic JSON persistence."""

from __future__ import annotations

import json
import os

import pytest

from desktop.machine.config import (
    MachineConfig,
    MachineState,
    Share,
    load_config,
    load_state,
    parse_size_mib,
    save_config,
    save_state,
    shares_for,
)
from runtime.errors import InvalidArgument, NotFound


@pytest.mark.parametrize("text,mib", [("2048", 2048), ("2G", 2048), ("2GiB", 2048), ("512M", 512),
                                      ("1.5G", 1536), ("1T", 1024 * 1024), ("20g", 20480)])
def test_parse_size(text, mib):
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["", "G", "two", "-1G", "3X"])
def test_parse_size_rejects(text):
    with pytest.raises(InvalidArgument):
        parse_size_mib(text)


def test_round_trip_is_atomic_and_private(tmp_path):
    path = tmp_path / "m" / "default.json"
    cfg = MachineConfig(name="default", cpus=3, memory_mib=1536, shares=shares_for([tmp_path]))
    save_config(path, cfg)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["default.json"]  # no temp file left
    loaded = load_config(path, "default")
    assert loaded == cfg
    assert loaded.shares[0] == Share(host_path=str(tmp_path.resolve()), tag="dyshare0")
    assert json.loads(path.read_text())["cpus"] == 3


def test_missing_config_says_how_to_create(tmp_path):
    with pytest.raises(NotFound, match="dockyard machine init"):
        load_config(tmp_path / "nope.json", "nope")


def test_unknown_keys_are_ignored_and_newer_versions_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"name": "x", "future_field": 1}))
    assert load_config(path, "x").name == "x"
    path.write_text(json.dumps({"name": "x", "version": 99}))
    with pytest.raises(InvalidArgument, match="newer"):
        load_config(path, "x")


@pytest.mark.parametrize("change,message", [
    ({"backend": "vbox"}, "unknown backend"),
    ({"sharefs": "nfs"}, "unknown shared-folder"),
    ({"cpus": 0}, "cpus"),
    ({"memory_mib": 100}, "memory"),
    ({"name": "a/b"}, "invalid machine name"),
    ({"shares": [Share("rel", "t0")]}, "absolute"),
    ({"shares": [Share("/a", "t"), Share("/b", "t")]}, "duplicate"),
])
def test_validation_messages(change, message):
    cfg = MachineConfig(**change)
    with pytest.raises(InvalidArgument, match=message):
        cfg.validate()


def test_shares_must_exist(tmp_path):
    with pytest.raises(InvalidArgument, match="not a directory"):
        shares_for([tmp_path / "missing"])


def test_state_round_trip(tmp_path):
    path = tmp_path / "state.json"
    assert load_state(path) == MachineState()
    st = MachineState(ssh_port=2222, host_key="ssh-ed25519 AAAA", guest_timings={"kernel_s": 1.5})
    save_state(path, st)
    assert load_state(path) == st
