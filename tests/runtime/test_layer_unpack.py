"""Layer extraction on the real filesystem: whiteouts, metadata, and hostile tar members."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from runtime.images.layer_unpack import OPAQUE_XATTR, UnsafeLayerError, unpack_layer


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buf.getvalue()
    return gzip.compress(raw) if compress else raw


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, **attrs) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    info.mtime = attrs.pop("mtime", 1_600_000_000)
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE and data is None:
        data = b""
    return info, data


@pytest.fixture
def area(tmp_path: Path) -> dict[str, Path]:
    """A layer dir next to an 'outside' dir that must stay empty."""
    layer = tmp_path / "layer"
    outside = tmp_path / "outside"
    layer.mkdir()
    outside.mkdir()
    return {"root": tmp_path, "layer": layer, "outside": outside}


def unpack(area: dict[str, Path], members: list[tuple], compress: bool = True):
    blob = area["root"] / "blob"
    blob.write_bytes(make_tar(members, compress))
    return unpack_layer(blob, area["layer"])


def test_files_dirs_links_and_metadata(area) -> None:
    members = [
        member("bin", tarfile.DIRTYPE, mode=0o711),
        member("bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o4755, uid=1000, gid=1000),
        member("bin/alias", tarfile.SYMTYPE, linkname="tool"),
        member("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"),
        member("run", tarfile.DIRTYPE),
        member("run/pipe", tarfile.FIFOTYPE, mode=0o600),
        member("tmp", tarfile.DIRTYPE, mode=0o1777),
        member("etc/abs-target", tarfile.SYMTYPE, linkname="/etc/passwd"),  # parent implied
    ]
    blob_bytes = make_tar(members, compress=False)
    res = unpack(area, members)
    layer = area["layer"]
    st = os.lstat(layer / "bin/tool")
    assert stat.S_IMODE(st.st_mode) == 0o4755          # setuid survives the chown
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert int(st.st_mtime) == 1_600_000_000
    assert os.readlink(layer / "bin/alias") == "tool"
    assert os.lstat(layer / "bin/hard").st_ino == st.st_ino
    assert stat.S_ISFIFO(os.lstat(layer / "run/pipe").st_mode)
    assert stat.S_IMODE(os.lstat(layer / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(layer / "bin").st_mode) == 0o711
    assert int(os.lstat(layer / "bin").st_mtime) == 1_600_000_000   # set after the children
    assert os.readlink(layer / "etc/abs-target") == "/etc/passwd"   # kept as data, not followed
    assert res.diff_id == "sha256:" + hashlib.sha256(blob_bytes).hexdigest()
    assert res.size == len(b"#!/bin/sh\necho hi\n")


def test_uncompressed_layer(area) -> None:
    res = unpack(area, [member("a.txt", data=b"plain")], compress=False)
    assert (area["layer"] / "a.txt").read_bytes() == b"plain"
    assert res.members == 1


def test_whiteouts_and_opaque_dirs(area) -> None:
    unpack(area, [
        member("data", tarfile.DIRTYPE),
        member("data/.wh.gone.txt"),
        member("opaque", tarfile.DIRTYPE),
        member("opaque/.wh..wh..opq"),
        member("opaque/new.txt", data=b"new"),
        member("deep/er/.wh.x"),                  # parents of a whiteout are created
    ])
    layer = area["layer"]
    wh = os.lstat(layer / "data/gone.txt")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert not (layer / "data/.wh.gone.txt").exists()
    assert os.getxattr(layer / "opaque", OPAQUE_XATTR) == b"y"
    assert not (layer / "opaque/.wh..wh..opq").exists()
    assert (layer / "opaque/new.txt").read_bytes() == b"new"
    assert stat.S_ISCHR(os.lstat(layer / "deep/er/x").st_mode)


def test_later_member_replaces_earlier(area) -> None:
    unpack(area, [
        member("x", tarfile.DIRTYPE),
        member("x/inner", data=b"1"),
        member("x/sub", tarfile.DIRTYPE),
        member("x/sub/deep", data=b"2"),
        member("x", data=b"now a file"),          # a file replaces the directory tree
        member("y", data=b"old"),
        member("y", data=b"new"),
    ])
    assert (area["layer"] / "x").read_bytes() == b"now a file"
    assert (area["layer"] / "y").read_bytes() == b"new"


def test_absolute_names_stay_inside(area) -> None:
    marker = f"dockyard-test-{uuid.uuid4().hex}"
    unpack(area, [member(f"/tmp/{marker}", data=b"x"), member(f"./{marker}", data=b"y")])
    assert not Path(f"/tmp/{marker}").exists()
    assert (area["layer"] / "tmp" / marker).read_bytes() == b"x"
    assert (area["layer"] / marker).read_bytes() == b"y"


def test_harmless_dotdot_is_cleaned(area) -> None:
    unpack(area, [member("a/../b.txt", data=b"b")])
    assert (area["layer"] / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("case", [
    "dotdot", "symlink-parent", "symlink-parent-relative", "hardlink-dotdot",
    "hardlink-via-symlink", "hardlink-missing"])
def test_hostile_members_are_refused(area, case: str) -> None:
    out = area["outside"]
    secret = out / "secret"
    secret.write_bytes(b"secret")
    members = {
        "dotdot": [member("../outside/evil", data=b"x")],
        "symlink-parent": [member("esc", tarfile.SYMTYPE, linkname=str(out)),
                           member("esc/evil", data=b"x")],
        "symlink-parent-relative": [member("d", tarfile.DIRTYPE),
                                    member("d/esc", tarfile.SYMTYPE, linkname="../../outside"),
                                    member("d/esc/evil", data=b"x")],
        "hardlink-dotdot": [member("h", tarfile.LNKTYPE, linkname="../outside/secret")],
        "hardlink-via-symlink": [member("esc", tarfile.SYMTYPE, linkname=str(out)),
                                 member("h", tarfile.LNKTYPE, linkname="esc/secret")],
        "hardlink-missing": [member("h", tarfile.LNKTYPE, linkname="nope")],
    }[case]
    with pytest.raises(UnsafeLayerError):
        unpack(area, members)
    assert sorted(p.name for p in out.iterdir()) == ["secret"]
    assert secret.read_bytes() == b"secret"
    assert os.stat(secret).st_nlink == 1            # no hard link was made to it


def test_device_nodes_are_skipped(area) -> None:
    res = unpack(area, [
        member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        member("dev/ok", data=b"regular"),
    ])
    assert not os.path.lexists(area["layer"] / "dev/null")
    assert not os.path.lexists(area["layer"] / "dev/sda")
    assert (area["layer"] / "dev/ok").read_bytes() == b"regular"
    assert sorted(res.skipped) == ["dev/null", "dev/sda"]


def test_corrupt_gzip_is_an_error(area) -> None:
    blob = area["root"] / "blob"
    good = make_tar([member("a", data=b"a" * 100_000)])
    blob.write_bytes(good[: len(good) // 2])
    with pytest.raises(UnsafeLayerError):
        unpack_layer(blob, area["layer"])


def test_file_replacing_an_escaping_symlink_does_not_write_through(area) -> None:
    secret = area["outside"] / "secret"
    secret.write_bytes(b"secret")
    unpack(area, [member("x", tarfile.SYMTYPE, linkname=str(secret)),
                  member("x", data=b"replaced")])
    assert secret.read_bytes() == b"secret"
    assert not os.path.islink(area["layer"] / "x")
    assert (area["layer"] / "x").read_bytes() == b"replaced"


def test_zstd_layer(area) -> None:
    # zstd support uses the zstd tool (Python 3.11 has no zstd module); Debian package "zstd".
    raw = make_tar([member("z.txt", data=b"zstd!")], compress=False)
    blob = area["root"] / "blob.zst"
    blob.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True,
                                    check=True).stdout)
    res = unpack_layer(blob, area["layer"])
    assert (area["layer"] / "z.txt").read_bytes() == b"zstd!"
    assert res.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
