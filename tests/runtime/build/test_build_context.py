"""extract_context and copy_sources: a client's build context unpacked without ever leaving dest.

Messages are dockerd 20.10's where it has one (COPY outside the context, missing, no match).
"""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from guest_agent.api_errors import status_for
from runtime.build.build_context import copy_sources, extract_context
from runtime.build.dockerignore import IgnoreMatcher
from runtime.errors import BuildError


def tar_bytes(entries: list[tuple], mode: str = "w") -> bytes:
    """A tar of (name, kind, data-or-target[, mode]) entries; kind is file, dir, sym or link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, kind, payload, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            info.mode = rest[0] if rest else (0o755 if kind == "dir" else 0o644)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE}[kind]
            if kind in ("sym", "link"):
                info.linkname = payload
            tar.addfile(info)
    return buf.getvalue()


CONTEXT = [
    ("Dockerfile", "file", b"FROM scratch\nCOPY . /\n"),
    ("a.txt", "file", b"a", 0o640),
    ("b.txt", "file", b"b"),
    ("dir/", "dir", None, 0o750),
    ("dir/c.txt", "file", b"c"),
    ("dir/sub/d.md", "file", b"d"),           # parent directory not in the tar: made
    ("link", "sym", "/etc/passwd"),           # content, never followed
    ("dirlink", "sym", "dir"),
    ("hard", "link", "a.txt"),
    ("/abs/e.txt", "file", b"e"),             # a leading / is dropped
    (".wh.x", "file", b"not a whiteout"),
]


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_extract_plain_and_compressed(tmp_path, mode):
    dest = tmp_path / "ctx"
    dest.mkdir()
    text, matcher = extract_context(io.BytesIO(tar_bytes(CONTEXT, mode)), dest)
    assert text == "FROM scratch\nCOPY . /\n"
    assert not matcher.patterns
    assert (dest / "a.txt").read_bytes() == b"a" and (dest / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (dest / "dir").stat().st_mode & 0o777 == 0o750
    assert (dest / "dir/sub/d.md").read_bytes() == b"d"
    assert os.readlink(dest / "link") == "/etc/passwd"
    assert (dest / "hard").stat().st_ino == (dest / "a.txt").stat().st_ino
    assert (dest / "abs/e.txt").read_bytes() == b"e"
    assert (dest / ".wh.x").read_bytes() == b"not a whiteout"
    assert int((dest / "b.txt").stat().st_mtime) == 1_700_000_000


@pytest.mark.parametrize("entries", [
    [("../evil", "file", b"x")],
    [("a/../../evil", "file", b"x")],
    [("out", "sym", ".."), ("out/evil", "file", b"x")],             # through a planted symlink
    [("out", "sym", "{outside}"), ("out/evil", "file", b"x")],    # an absolute link (to tmp_path)
    [("h", "link", "../evil")],
    [("h", "link", "nothing-here")],
])
def test_hostile_members_are_refused_and_nothing_lands_outside(tmp_path, entries):
    dest = tmp_path / "a" / "ctx"
    dest.mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    entries = [(n, k, p.replace("{outside}", str(tmp_path)) if isinstance(p, str) else p)
               for n, k, p in entries]
    with pytest.raises(BuildError):
        extract_context(io.BytesIO(tar_bytes([("Dockerfile", "file", b"FROM x\n"), *entries])), dest)
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    outside = sorted(p.name for p in tmp_path.rglob("*") if dest not in p.parents)
    assert outside == before


def test_a_directory_member_replaces_a_symlink_rather_than_following_it(tmp_path):
    dest = tmp_path / "ctx"
    dest.mkdir()
    entries = [("Dockerfile", "file", b"FROM x\n"), ("out", "sym", ".."), ("out/", "dir", None),
               ("out/evil", "file", b"x")]
    extract_context(io.BytesIO(tar_bytes(entries)), dest)
    assert (dest / "out").is_dir() and not (dest / "out").is_symlink()
    assert (dest / "out/evil").read_bytes() == b"x" and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("data", [b"not a tar at all", b"\x1f\x8bgarbage", b"x" * 2048,
                                  tar_bytes(CONTEXT, "w:gz")[:-10], tar_bytes(CONTEXT, "w:bz2")[:-10],
                                  tar_bytes(CONTEXT, "w:xz")[:-10], tar_bytes(CONTEXT)[:700]])
def test_corrupt_tars_are_refused_as_client_errors(tmp_path, data):
    with pytest.raises(BuildError) as caught:
        extract_context(io.BytesIO(data), tmp_path)
    assert status_for(caught.value) == 400


@pytest.mark.parametrize(("entries", "name", "text"), [
    ([("sub/Dockerfile.dev", "file", b"FROM dev\n")], "sub/Dockerfile.dev", "FROM dev\n"),
    ([("sub/Dockerfile.dev", "file", b"FROM dev\n")], "/sub/Dockerfile.dev", "FROM dev\n"),
    ([("dockerfile", "file", b"FROM lower\n")], "Dockerfile", "FROM lower\n"),
    ([("real", "file", b"FROM linked\n"), ("Dockerfile", "sym", "/real")], "Dockerfile", "FROM linked\n"),
])
def test_dockerfile_found_by_name(tmp_path, entries, name, text):
    assert extract_context(io.BytesIO(tar_bytes(entries)), tmp_path, name)[0] == text


@pytest.mark.parametrize(("entries", "name", "message"), [
    ([("a", "file", b"x")], "Dockerfile", "Cannot locate specified Dockerfile: Dockerfile"),
    ([], "Dockerfile", "Cannot locate specified Dockerfile: Dockerfile"),
    ([("Dockerfile", "file", b"")], "Dockerfile", "the Dockerfile (Dockerfile) cannot be empty"),
    ([("dockerfile", "file", b"FROM x\n")], "Other", "Cannot locate specified Dockerfile: Other"),
    # A link out of the context resolves inside it (to <ctx>/etc/passwd, absent).
    ([("Dockerfile", "sym", "/etc/passwd")], "Dockerfile", "Cannot locate specified Dockerfile: Dockerfile"),
    ([("Dockerfile", "sym", "../../../../etc/passwd")], "Dockerfile",
     "Cannot locate specified Dockerfile: Dockerfile"),
])
def test_dockerfile_errors(tmp_path, entries, name, message):
    with pytest.raises(BuildError) as caught:
        extract_context(io.BytesIO(tar_bytes(entries)), tmp_path, name)
    assert str(caught.value) == message


def test_dockerignore_read_and_names_itself_and_the_dockerfile_away(tmp_path):
    entries = [("Dockerfile", "file", b"FROM x\n"), (".dockerignore", "file", b"*.log\nDockerfile\n.dockerignore\n"),
               ("a.log", "file", b"x"), ("keep", "file", b"k")]
    text, matcher = extract_context(io.BytesIO(tar_bytes(entries)), tmp_path)
    assert text == "FROM x\n" and matcher.ignored("a.log") and not matcher.ignored("keep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "keep"]


@pytest.fixture
def context(tmp_path):
    extract_context(io.BytesIO(tar_bytes(CONTEXT + [("dir/x.txt", "file", b"x"), ("dox", "dir", None),
                                                    ("s p.txt", "file", b"s")])), tmp_path)
    return tmp_path


@pytest.mark.parametrize(("sources", "expected"), [
    (["."], [""]),
    (["/"], [""]),
    (["a.txt", "/b.txt", "./dir/../a.txt"], ["a.txt", "b.txt", "a.txt"]),
    (["dir"], ["dir"]),
    (["*.txt"], ["a.txt", "b.txt", "s p.txt"]),     # * does not reach into dir/
    (["dir/*.txt"], ["dir/c.txt", "dir/x.txt"]),
    (["d?r"], ["dir"]),
    (["d[io]?"], ["dir", "dox"]),
    (["d[^o]r"], ["dir"]),
    (["**.txt"], ["a.txt", "b.txt", "s p.txt"]),    # Go's ** is two *: it never crosses /
    (["dirlink/c.txt"], ["dir/c.txt"]),             # symlinks followed in scope
    (["hard"], ["hard"]),
])
def test_copy_sources(context, sources, expected):
    found = copy_sources(context, sources, IgnoreMatcher([]))
    assert found == [context / e if e else context for e in expected]
    assert all(p == context or context in p.parents for p in found)


@pytest.mark.parametrize(("sources", "ignore", "message"), [
    (["../x"], [], "COPY failed: forbidden path outside the build context: ../x ()"),
    (["/../../Dockerfile"], [], "COPY failed: forbidden path outside the build context: ../../Dockerfile ()"),
    (["a/../../Dockerfile"], [], "COPY failed: forbidden path outside the build context: a/../../Dockerfile ()"),
    (["../*.txt"], [], "COPY failed: forbidden path outside the build context: ../*.txt ()"),
    (["missing"], [], "COPY failed: file not found in build context or excluded by .dockerignore: "
                      "stat missing: file does not exist"),
    (["a.txt"], ["a.txt"], "COPY failed: file not found in build context or excluded by .dockerignore: "
                           "stat a.txt: file does not exist"),
    (["*.nope"], [], "COPY failed: no source files were specified"),
    (["*.txt"], ["*.txt"], "COPY failed: no source files were specified"),
    # The symlink points at /etc/passwd: in scope that is <context>/etc/passwd, which is not there.
    (["link"], [], "COPY failed: file not found in build context or excluded by .dockerignore: "
                   "stat link: file does not exist"),
])
def test_copy_sources_errors(context, sources, ignore, message):
    with pytest.raises(BuildError) as caught:
        copy_sources(context, sources, IgnoreMatcher(ignore))
    assert str(caught.value) == message


def test_add_names_itself_in_errors(context):
    with pytest.raises(BuildError, match="^ADD failed: file not found"):
        copy_sources(context, ["missing"], IgnoreMatcher([]), keyword="ADD")


def test_a_file_member_replaces_an_earlier_directory_with_all_it_holds(tmp_path):
    dest = tmp_path / "ctx"
    dest.mkdir()
    entries = [("Dockerfile", "file", b"FROM x\n"), ("d/", "dir", None), ("d/sub/x", "file", b"x"),
               ("d/link", "sym", "/"), ("d", "file", b"now a file")]
    extract_context(io.BytesIO(tar_bytes(entries)), dest)
    assert (dest / "d").read_bytes() == b"now a file"
