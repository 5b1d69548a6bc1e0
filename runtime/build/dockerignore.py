"""`.dockerignore`: which paths of a build context are left out, with Docker's exact rules.

As Docker's CLI reads the file (moby's `ignorefile` and `patternmatcher`):

* a line starting with `#` is a comment, blank lines are skipped, the rest is
  trimmed; a leading `!` makes an exception; the pattern is cleaned as Go's
  `filepath.Clean` does and a leading `/` dropped, so `/a`, `./a` and `a/` mean `a`;
* patterns are Go `filepath.Match` globs (`*` and `?` never cross `/`, `[a-z]`
  classes, `\\` escapes) plus `**`, any number of directories, even none;
* a pattern matches a path or any of its parent directories;
* the last pattern that matches decides, so `!keep` after `*.log` keeps it;
* an ignored directory is still walked when an exception names something
  below it (`may_contain_kept`), and only those files are kept from it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .. import path_scope
from ..errors import BuildError

_BOM = "\ufeff"


@dataclass(frozen=True)
class _Pattern:
    text: str                 # the cleaned pattern, without its "!"
    exclusion: bool
    regex: re.Pattern[str]


def _class_regex(pattern: str, start: int) -> tuple[str, int]:
    """The regex of the bracket expression at pattern[start] ("["); (regex, index after "]")."""
    i = start + 1
    out = "["
    if i < len(pattern) and pattern[i] == "^":
        out += "^"
        i += 1
    first = True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            return out + "]", i + 1
        if ch == "\\":
            i += 1
            if i == len(pattern):
                break
            out += re.escape(pattern[i])
        elif ch == "-":
            out += "-"
        else:
            out += re.escape(ch)
        first = False
        i += 1
    raise BuildError(f"syntax error in pattern: {pattern}")


def glob_regex(pattern: str, double_star: bool = True) -> re.Pattern[str]:
    """The regex of a Go `filepath.Match` glob; with `double_star`, `**` also crosses `/`."""
    out = "^"
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if double_star and i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1   # "**/" is "**"
                out += ".*" if i == n else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\":
            if i < n:
                out += re.escape(pattern[i])
                i += 1
            else:
                out += re.escape("\\")
        elif ch == "[":
            part, i = _class_regex(pattern, i - 1)
            out += part
        else:
            out += re.escape(ch)
    try:
        return re.compile(out + r"\Z", re.DOTALL)
    except re.error:
        raise BuildError(f"syntax error in pattern: {pattern}") from None


def clean_rel(path: str) -> str:
    """A context-relative path as the matcher compares it: "a/b", "." for the root."""
    return "/".join(path_scope.components(path)) or "."


class IgnoreMatcher:
    """The compiled patterns of one `.dockerignore`."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = path_scope.go_clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise BuildError('illegal exclusion pattern: "!"')
                text = path_scope.go_clean(text[1:])
            # Paths are relative to the context: "/a" can only mean "a" (from_text does
            # this too; a caller may hand patterns over directly).
            if len(text) > 1 and text.startswith("/"):
                text = text[1:]
            self.patterns.append(_Pattern(text, exclusion, glob_regex(text)))
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    @classmethod
    def from_text(cls, text: str) -> IgnoreMatcher:
        """The matcher of a `.dockerignore` file's text."""
        patterns: list[str] = []
        for number, line in enumerate(text.split("\n")):
            if number == 0 and line.startswith(_BOM):
                line = line[len(_BOM):]
            line = line.removesuffix("\r")
            if line.startswith("#"):
                continue
            pattern = line.strip()
            if not pattern:
                continue
            invert = pattern.startswith("!")
            if invert:
                pattern = pattern[1:].strip()
            if pattern:
                pattern = path_scope.go_clean(pattern)
                if len(pattern) > 1 and pattern.startswith("/"):
                    pattern = pattern[1:]
            patterns.append("!" + pattern if invert else pattern)
        return cls(patterns)

    def ignored(self, rel_path: str) -> bool:
        """Whether the context path `rel_path` ("a/b", "./a/b" or "/a/b") is left out."""
        path = clean_rel(rel_path)
        parents = path.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            # Only a pattern that could change the answer is tried.
            if pattern.exclusion != matched:
                continue
            hit = pattern.regex.match(path) is not None
            if not hit:
                hit = any(pattern.regex.match("/".join(parents[:i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_contain_kept(self, rel_dir: str) -> bool:
        """Whether an ignored directory must still be walked: an exception names a path below it."""
        if not self.has_exclusions:
            return False
        prefix = clean_rel(rel_dir) + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def kept_paths(root: Path, matcher: IgnoreMatcher) -> list[str]:
    """Every path below `root` the matcher keeps, as Docker's CLI walks a context; sorted.

    An ignored directory that `may_contain_kept` is walked but not listed itself;
    symlinks are listed, never followed.
    """
    kept: list[str] = []

    def walk(directory: Path, rel: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            child = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
            if matcher.ignored(child):
                if is_dir and matcher.may_contain_kept(child):
                    walk(Path(entry.path), child)
                continue
            kept.append(child)
            if is_dir:
                walk(Path(entry.path), child)

    walk(root, "")
    return kept
