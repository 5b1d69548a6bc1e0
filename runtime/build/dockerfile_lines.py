"""The lexical layer of a Dockerfile: parser directives, logical lines, builder flags, JSON arrays.

This follows Docker's parser (the classic builder's and BuildKit's share it):

* parser directives (`# escape=`, `# syntax=`) are read only while every line
  so far has been one; any other line, a blank one or another comment ends them;
* a line ending with the escape character (blanks after it allowed) continues
  on the next; comment lines and blank lines inside a continuation are skipped,
  and a continuation line keeps its leading blanks;
* leading `--name=value` words are the instruction's flags (`--` ends them);
* an argument that starts with `[` and decodes as a JSON array is the exec
  form, trailing text after the array ignored as Go's decoder does; an array
  holding anything but strings is an error, any other failure falls back to
  the shell form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

BOM = "\ufeff"
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = ("escape", "syntax")
_COMMAND_SPLIT = re.compile(r"[\t\v\f\r ]+")
NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


class LineError(Exception):
    """A lexical error at a (1-based) line; dockerfile.py turns it into a DockerfileError."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class LogicalLine:
    """One instruction's text: continuations joined, comments dropped."""

    text: str
    line: int        # 1-based line where it starts


def _is_comment(raw: str) -> bool:
    return raw.lstrip().startswith("#")


def scan(text: str) -> tuple[str, dict[str, str], list[LogicalLine]]:
    """(escape character, directives, logical lines) of a Dockerfile's text."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if lines and lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM):]

    escape = "\\"
    directives: dict[str, str] = {}
    reading_directives = True
    continuation = _continuation_re(escape)
    found: list[LogicalLine] = []
    i = 0
    while i < len(lines):
        raw = lines[i].lstrip()
        i += 1
        if reading_directives:
            match = _DIRECTIVE.match(raw)
            name = match.group(1).lower() if match else ""
            if match and name in _KNOWN_DIRECTIVES:
                if name in directives:
                    raise LineError(i, f"only one {name} parser directive can be used")
                directives[name] = match.group(2)
                if name == "escape":
                    escape = _escape_token(match.group(2), i)
                    continuation = _continuation_re(escape)
                continue
            reading_directives = False
        if _is_comment(raw):
            continue
        start = i
        joined, ended = _trim_continuation(raw, continuation)
        if ended and not joined:
            continue
        while not ended and i < len(lines):
            raw = lines[i]
            i += 1
            if _is_comment(raw) or not raw.strip():
                continue
            more, ended = _trim_continuation(raw, continuation)
            joined += more
        found.append(LogicalLine(joined, start))
    return escape, directives, found


def _escape_token(value: str, line: int) -> str:
    if value not in ("`", "\\"):
        raise LineError(line, f"invalid escape token '{value}' does not match ` or \\")
    return value


def _continuation_re(escape: str) -> re.Pattern[str]:
    return re.compile(re.escape(escape) + r"[ \t]*\Z")


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    """(line without its continuation mark, whether the instruction ends here)."""
    match = continuation.search(line)
    if match:
        return line[:match.start()], False
    return line, True


def split_command(line: str) -> tuple[str, list[str], str]:
    """(keyword as written, flag words, the rest) of one logical line."""
    parts = _COMMAND_SPLIT.split(line.strip(), maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    rest, flags = extract_flags(parts[1])
    return parts[0], flags, rest.strip()


def extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading `--flag` words (quotes and backslashes processed) and what follows them."""
    words: list[str] = []
    pos = 0
    n = len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word: list[str] = []
        blank_ok = False
        quote = ""
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                    pos += 1
                    continue
            elif ch.isspace():
                break
            elif ch in ("'", '"'):
                quote, blank_ok = ch, True
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue   # a backslash at the end is dropped
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
        text = "".join(word)
        if text == "--":
            return line[pos:], words
        if blank_ok or text:
            words.append(text)


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")   # Go's decoder knows no NaN or Infinity


def parse_json_array(rest: str) -> list[str] | None:
    """The exec-form list of `rest`, or None when `rest` is not a JSON array (shell form).

    Raises ValueError(NOT_STRING_ARRAY) for a JSON array holding other than strings.
    """
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value, _end = json.JSONDecoder(parse_constant=_no_constants).raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ValueError(NOT_STRING_ARRAY)
    return value
