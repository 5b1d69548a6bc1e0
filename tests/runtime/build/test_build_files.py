"""COPY's writes into an image's root, on the real filesystem."""

from __future__ import annotations

import os

import pytest

from runtime.build.build_files import copy_entry
from runtime.errors import InvalidArgument


def _keep_all(rel: str) -> bool:
    return False


def test_a_file_never_replaces_a_directory_in_the_image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_bytes(b"file")
    root = tmp_path / "root"
    (root / "x").mkdir(parents=True)
    (root / "x" / "kept").write_bytes(b"kept")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(InvalidArgument, match="cannot overwrite directory 'x' with a non-directory"):
            copy_entry(src / "x", fd, "x", None, _keep_all, "x", top=True)
    finally:
        os.close(fd)
    assert (root / "x" / "kept").read_bytes() == b"kept"


def test_a_file_replaces_a_file_and_a_directory_merges_into_a_directory(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "new").write_bytes(b"new")
    (src / "f").write_bytes(b"new f")
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "old").write_bytes(b"old")
    (root / "f").write_bytes(b"old f")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy_entry(src / "d", fd, "d", None, _keep_all, "d", top=True)
        copy_entry(src / "f", fd, "f", None, _keep_all, "f", top=True)
    finally:
        os.close(fd)
    assert sorted(os.listdir(root / "d")) == ["new", "old"]
    assert (root / "f").read_bytes() == b"new f"
