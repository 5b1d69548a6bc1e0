"""IgnoreMatcher: Docker's .dockerignore rules, case by case (test_build_differential.py checks a
whole context against Docker's CLI and dockerd)."""

from __future__ import annotations

import pytest

from runtime.build.dockerignore import IgnoreMatcher, kept_paths
from runtime.errors import BuildError

# (patterns, path, ignored)
CASES = [
    (["*.log"], "a.log", True),
    (["*.log"], "sub/a.log", False),            # * never crosses /
    (["*/*.log"], "sub/a.log", True),
    (["**/*.log"], "sub/deep/a.log", True),
    (["**/*.log"], "a.log", True),              # ** is any number of directories, even none
    (["sub/**"], "sub/x/y", True),
    (["sub/**"], "other/x", False),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["sub"], "sub/x/y", True),                 # a parent directory matching is enough
    (["**/x"], "x/y/z", True),
    (["/sub"], "sub/file", True),               # leading / and ./ are cleaned away
    (["./sub/"], "sub/file", True),
    (["sub/../other"], "other/f", True),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c].txt"], "b.txt", True),
    (["[^a-c].txt"], "b.txt", False),
    (["[^a-c].txt"], "d.txt", True),
    (["weird\\[1\\].txt"], "weird[1].txt", True),
    (["weird\\[1\\].txt"], "weird1.txt", False),
    (["a.b"], "axb", False),                    # regex characters are literal
    (["a+(b)"], "a+(b)", True),
    (["*.log", "!keep.log"], "keep.log", False),
    (["!keep.log", "*.log"], "keep.log", True),  # the last match wins
    (["dir", "!dir/keep"], "dir/keep/f", False),
    (["dir", "!dir/keep"], "dir/other", True),
    (["*", "!x", "x/y"], "x/y", True),
    (["*", "!x", "x/y"], "x/z", False),
    ([], "anything", False),
]


@pytest.mark.parametrize(("patterns", "path", "ignored"), CASES)
def test_ignored(patterns, path, ignored):
    assert IgnoreMatcher(patterns).ignored(path) is ignored
    assert IgnoreMatcher(patterns).ignored("./" + path) is ignored
    assert IgnoreMatcher(patterns).ignored("/" + path) is ignored


def test_from_text_reads_comments_blanks_bom_and_exceptions():
    matcher = IgnoreMatcher.from_text("\ufeff# comment\r\n\n  *.log  \n ! keep.log\n/abs/\n#!a.log\n")
    assert [(p.text, p.exclusion) for p in matcher.patterns] == [("*.log", False), ("keep.log", True),
                                                               ("abs", False)]
    assert matcher.ignored("a.log") and not matcher.ignored("keep.log") and matcher.ignored("abs/x")
    # "# ..." is a comment only at the start of the line.
    assert IgnoreMatcher.from_text(" #x\n").ignored("#x")


@pytest.mark.parametrize(("patterns", "directory", "walk"), [
    (["dir", "!dir/keep"], "dir", True),
    (["dir", "!dir/keep"], "other", False),
    (["dir"], "dir", False),                    # no exception: the directory is skipped whole
    (["dir", "!dir2/x"], "dir", False),
    (["a", "!a/b/c"], "a/b", True),
])
def test_may_contain_kept(patterns, directory, walk):
    assert IgnoreMatcher(patterns).may_contain_kept(directory) is walk


@pytest.mark.parametrize("patterns", [["!"], ["[a-"], ["a[b"]])
def test_bad_patterns_are_refused(patterns):
    with pytest.raises(BuildError):
        IgnoreMatcher(patterns)


def test_kept_paths_walks_into_ignored_dirs_only_for_exceptions(tmp_path):
    for name in ["dir/keep/f", "dir/drop", "x.log", "y.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "link").symlink_to("/etc")
    matcher = IgnoreMatcher(["dir", "!dir/keep", "*.log"])
    assert kept_paths(tmp_path, matcher) == ["dir/keep", "dir/keep/f", "link", "y.txt"]
