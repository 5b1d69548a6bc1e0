"""runtime.path_scope on real directories: cleaning, in-scope resolution, and symlinks
swapped while a path is being opened (both the openat2 path and the userspace walk)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

import pytest

from runtime import path_scope


@pytest.mark.parametrize("path, cleaned, go", [
    ("", "/", "."), (".", "/", "."), ("..", "/", ".."), ("/", "/", "/"),
    ("../../etc", "/etc", "../../etc"), ("/a/../../etc", "/etc", "/etc"),
    ("//a//b/./c/", "/a/b/c", "/a/b/c"), ("a/../../b", "/b", "../b"),
])
def test_clean_and_go_clean(path: str, cleaned: str, go: str) -> None:
    assert path_scope.clean(path) == cleaned
    assert path_scope.go_clean(path) == go      # what dockerd stores as a Destination
    assert path_scope.is_root(path) == (cleaned == "/")


def test_resolve_follows_links_in_scope() -> None:
    links = {("a",): "/x/y", ("x", "y", "up"): "../../../../..", ("loop",): "loop"}

    def resolve(path: str) -> list[str]:
        return path_scope.resolve(path, lambda parts: links.get(tuple(parts)))

    assert resolve("/a/z") == ["x", "y", "z"]
    assert resolve("../../a/up/etc") == ["etc"]
    with pytest.raises(path_scope.ScopeError):
        resolve("/loop")


@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    """Run a test through the kernel's RESOLVE_IN_ROOT and through the userspace walk."""
    monkeypatch.setattr(path_scope, "use_openat2", request.param == "openat2")
    return request.param


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("secret")
    os.symlink(str(outside), root / "abs")                       # absolute, straight out
    os.symlink("../../../../../../../../" + str(outside).lstrip("/"), root / "a" / "rel")
    os.symlink("/a/b", root / "ab")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    return {"root": root, "outside": outside}


def _where(fd: int) -> str:
    try:
        return os.readlink(path_scope.fd_path(fd))
    finally:
        os.close(fd)


@pytest.mark.parametrize("path, expected", [
    ("/a/b", "a/b"), ("/ab/../b", "a/b"), ("ab", "a/b"), ("/ab/../../../..", ""),
    ("../../..", ""), ("/abs/..", None), ("/a/rel", None),
])
def test_open_in_root_stays_inside(tree, resolver, path: str, expected: str | None) -> None:
    """None: the link's target is looked for inside the root, where it does not exist."""
    root_fd = os.open(tree["root"], os.O_PATH | os.O_DIRECTORY)
    try:
        if expected is None:
            with pytest.raises(FileNotFoundError):
                path_scope.open_in_root(root_fd, path)
            return
        got = _where(path_scope.open_in_root(root_fd, path))
    finally:
        os.close(root_fd)
    assert got == str(tree["root"] / expected).rstrip("/")


def test_open_in_root_creates_inside(tree, resolver) -> None:
    root_fd = os.open(tree["root"], os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(FileNotFoundError):
            path_scope.open_in_root(root_fd, "/abs/secret")
        made = _where(path_scope.open_in_root(root_fd, "/abs/sub/file", create="file"))
        made_dir = _where(path_scope.open_in_root(root_fd, "/a/rel/d1/d2", create="dir"))
        with pytest.raises(path_scope.ScopeError):
            path_scope.open_in_root(root_fd, "/loop1", create="dir")
    finally:
        os.close(root_fd)
    inside = tree["root"] / str(tree["outside"]).lstrip("/")
    assert made == str(inside / "sub" / "file") and (inside / "sub" / "file").is_file()
    assert made_dir == str(inside / "d1" / "d2")
    assert sorted(os.listdir(tree["outside"])) == ["secret"]


def test_cp_lookups_keep_the_last_link_and_resolve_in_scope(tree, resolver) -> None:
    """docker cp's rules: the directories are followed in scope, the last name is not; the
    stat's linkTarget is the fully resolved path, still inside the root."""
    root_fd = os.open(tree["root"], os.O_PATH | os.O_DIRECTORY)
    try:
        parent, name = path_scope.open_parent_in_root(root_fd, "/ab/abs")     # ab -> /a/b
        assert (_where(parent), name) == (str(tree["root"] / "a" / "b"), "abs")
        parent, name = path_scope.open_parent_in_root(root_fd, "/ab/../abs")  # cleaned first, as dockerd
        assert (_where(parent), name) == (str(tree["root"]), "abs")
        parent, name = path_scope.open_parent_in_root(root_fd, "/")
        assert (_where(parent), name) == (str(tree["root"]), "")
        with pytest.raises(FileNotFoundError):
            path_scope.open_parent_in_root(root_fd, "/abs/secret")
        parent, name = path_scope.open_parent_in_root(root_fd, "/abs/new/file", create=True)
        assert (_where(parent), name) == (str(tree["root"] / str(tree["outside"]).lstrip("/") / "new"), "file")
        assert path_scope.resolve_in_root(root_fd, "/a/rel/secret") == [
            *str(tree["outside"]).strip("/").split("/"), "secret"]
        # ".." after a link climbs from where the link led (FollowSymlinkInScope), not lexically.
        assert path_scope.resolve_in_root(root_fd, "/ab/../ab") == ["a", "ab"]
    finally:
        os.close(root_fd)
    assert sorted(os.listdir(tree["outside"])) == ["secret"]


def test_open_beneath_follows_nothing(tree) -> None:
    root_fd = os.open(tree["root"], os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(path_scope.open_beneath(root_fd, ["a", "b"]))
        for parts in (["ab"], ["abs"], ["a", "rel", "x"], ["a", ".."], ["a/b"]):
            with pytest.raises(path_scope.ScopeError):
                path_scope.open_beneath(root_fd, parts, create=True)
    finally:
        os.close(root_fd)
    assert sorted(os.listdir(tree["outside"])) == ["secret"]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_symlink_swapped_during_resolution_never_leads_out(tree, resolver) -> None:
    """A racer swaps a directory and a symlink out of the root, over and over, while paths
    through it are opened and created: every result stays inside the root."""
    root, outside = tree["root"], tree["outside"]
    (root / "swap").mkdir()
    os.symlink(str(outside), root / "swap-link")
    stop = threading.Event()
    swaps = [0]

    def racer() -> None:
        while not stop.is_set():
            _exchange(root / "swap", root / "swap-link")
            swaps[0] += 1

    thread = threading.Thread(target=racer)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    thread.start()
    try:
        results = {_where(path_scope.open_in_root(root_fd, f"/swap/made-{i % 5}", create="dir"))
                   for i in range(500)}
    finally:
        stop.set()
        thread.join()
        os.close(root_fd)
    assert swaps[0] > 0
    assert all(r.startswith(str(root) + "/") for r in results), results
    assert sorted(os.listdir(outside)) == ["secret"]
