"""Unit tests of the image builder's pieces that need no mmdebstrap and no VM."""

from __future__ import annotations

import io
import stat
import subprocess

from vmimage.cpio import CpioWriter, read_newc
from vmimage.recipe import hash_files


def test_cpio_archives_concatenate_and_round_trip(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "link").symlink_to("mod.py")
    first, second = io.BytesIO(), io.BytesIO()
    w = CpioWriter(first)
    w.char_device("dev/console", 5, 1)
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.close()
    w = CpioWriter(second)
    w.tree(tmp_path / "pkg", "opt/lib/pkg")
    w.close()
    entries = read_newc(first.getvalue() + second.getvalue())
    assert entries["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    assert stat.S_ISCHR(entries["dev/console"][0])
    assert entries["opt/lib/pkg/mod.py"][1] == b"x = 1\n"
    assert entries["opt/lib/pkg/link"] == (stat.S_IFLNK | 0o777, b"mod.py")
    assert stat.S_ISDIR(entries["opt/lib"][0])


def test_busybox_cpio_reads_our_archive(tmp_path):
    """An independent reader (busybox cpio) agrees with our writer."""
    archive = tmp_path / "a.cpio"
    with open(archive, "wb") as f:
        w = CpioWriter(f)
        w.file("dir/file.txt", b"hello\n", 0o640)
        w.symlink("dir/link", "file.txt")
        w.close()
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d", "-F", str(archive)], cwd=out, check=True,
                   capture_output=True)
    assert (out / "dir" / "file.txt").read_bytes() == b"hello\n"
    assert stat.S_IMODE((out / "dir" / "file.txt").stat().st_mode) == 0o640
    assert (out / "dir" / "link").readlink().name == "file.txt"


def test_hash_changes_with_content_and_name(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("1")
    first = hash_files([a], tmp_path)
    a.write_text("2")
    second = hash_files([a], tmp_path)
    b = a.rename(tmp_path / "b.py")
    assert len({first, second, hash_files([b], tmp_path)}) == 3
