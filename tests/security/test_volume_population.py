"""Filling a new volume from image layers (runtime.volumes.store) on real unpacked layers:
the merged view is copied, the mount point is resolved inside the image, and nothing
outside the layers is read."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument
from runtime.images.layer_unpack import unpack_layer
from runtime.volumes.store import check_volume_targets, populate_from_layers
from tests.support.crafted_images import Member, layer_tar


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "etc").mkdir(parents=True)
    (out / "etc" / "shadow").write_text("host secret\n")
    return out


def _layers(tmp_path: Path, *layers: list[Member]) -> list[Path]:
    dirs = []
    for i, members in enumerate(layers):
        blob, layer = tmp_path / f"blob{i}", tmp_path / f"layer{i}"
        blob.write_bytes(gzip.compress(layer_tar(members)))
        layer.mkdir()
        unpack_layer(blob, layer)
        dirs.append(layer)
    return dirs


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = "-> " + os.readlink(full)
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = full.read_text()
    return out


def test_merged_view_is_copied(tmp_path: Path, outside: Path) -> None:
    layers = _layers(
        tmp_path,
        [Member("data", "dir"), Member("data/keep", data=b"1"), Member("data/gone", data=b"x"),
         Member("data/opq", "dir"), Member("data/opq/old", data=b"old"),
         Member("data/link", "symlink", target=str(outside / "etc"))],
        [Member("data/.wh.gone"), Member("data/opq/.wh..wh..opq"), Member("data/opq/new", data=b"n"),
         Member("data/keep", data=b"2")],
    )
    dest = tmp_path / "vol"
    dest.mkdir()
    assert populate_from_layers(layers, "/data", dest)
    # The image's symlink is copied as a link (it resolves inside the container), not followed.
    assert _tree(dest) == {"keep": "2", "opq": "dir", "opq/new": "n",
                           "link": "-> " + str(outside / "etc")}


@pytest.mark.parametrize("key", ["../" * 30 + "data", "/x/../../data", "/vol", "/sub/vol",
                                 "/sub/./vol", "/sub/deep/" + "../" * 20 + "vol"])
def test_key_is_resolved_inside_the_image(tmp_path: Path, outside: Path, key: str) -> None:
    layers = _layers(tmp_path, [
        Member("data", "dir"), Member("data/f", data=b"image"),
        Member("vol", "symlink", target="/data"),
        Member("sub", "dir"), Member("sub/vol", "symlink", target="../../../../data"),
        Member("sub/deep", "symlink", target="/" + "../" * 10 + str(outside).lstrip("/")),
    ])
    dest = tmp_path / "dest"
    dest.mkdir()
    assert populate_from_layers(layers, key, dest)
    assert _tree(dest) == {"f": "image"}


@pytest.mark.parametrize("key", ["dotdot", "/esc/etc", "/rel/etc"])
def test_links_and_dotdot_out_of_the_image_find_nothing(tmp_path: Path, outside: Path,
                                                        key: str) -> None:
    """The host's files at the same path are never read: the image has nothing there."""
    if key == "dotdot":
        key = "../" * 30 + str(outside / "etc").lstrip("/")
    layers = _layers(tmp_path, [
        Member("esc", "symlink", target=str(outside)),
        Member("rel", "symlink", target="../" * 30 + str(outside).lstrip("/")),
    ])
    dest = tmp_path / "dest"
    dest.mkdir()
    assert not populate_from_layers(layers, key, dest)
    assert os.listdir(dest) == []


def test_lower_symlink_hidden_by_an_upper_directory_is_not_followed(tmp_path: Path,
                                                                    outside: Path) -> None:
    layers = _layers(tmp_path,
                     [Member("data", "symlink", target=str(outside / "etc"))],
                     [Member("data", "dir"), Member("data/mine", data=b"upper")])
    dest = tmp_path / "dest"
    dest.mkdir()
    assert populate_from_layers(layers, "/data", dest)
    assert _tree(dest) == {"mine": "upper"}


@pytest.mark.parametrize("key, message", [
    ("/data/f", "cannot mount volume over existing file, file exists /data/f"),
    ("/flink", "cannot mount volume over existing file, file exists /data/f"),
    ("/root-link", "resolves to '/'"),
    ("/loop", "symbolic links"),
])
def test_bad_targets_are_refused(tmp_path: Path, key: str, message: str) -> None:
    layers = _layers(tmp_path, [
        Member("data", "dir"), Member("data/f", data=b"file"),
        Member("flink", "symlink", target="data/f"), Member("root-link", "symlink", target="/.."),
        Member("loop", "symlink", target="loop"),
    ])
    with pytest.raises(InvalidArgument, match=message):
        check_volume_targets(layers, ["/data", key])
