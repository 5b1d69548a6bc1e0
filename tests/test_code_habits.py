"""House rules no linter checks for us.

Every suppression names its rule and says why: `# noqa: E402 - sys.path is set first`
and `# type: ignore[attr-defined]  # Windows only` pass; a bare `# noqa`, `# noqa: E402`
or `# type: ignore[...]` with no reason fails. Only comments are read (through
tokenize), so a marker inside a string is not one.

Small modules (issue 7): no module of the shipped packages over MAX_LINES lines and
no class over MAX_METHODS methods, unless a line of the module's docstring starts
with `Size:` and says why (`Size: one state machine; split, it reads worse`).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Files whose bare suppressions are waived while they are rewritten on another branch.
# Empty since the second lint round (issue 7). Remove a file from here as soon as it is
# clean: the test fails on a waiver that is no longer needed.
ROUND_2: frozenset[str] = frozenset()

_CODE = r"[A-Z]+[0-9]+"
# The marker with its codes; what follows it is the reason.
_NOQA = re.compile(rf"#\s*noqa(?P<codes>:\s*{_CODE}(?:\s*,\s*{_CODE})*)?", re.IGNORECASE)
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[\w\-, ]+\])?")
# A reason is a word after the marker (separators such as " - ", "(" or "# " aside).
_REASON = re.compile(r"[A-Za-z]{3,}")


def bare_suppressions(source: str) -> list[tuple[int, str]]:
    """(line, comment) of every noqa / type: ignore without codes or without a reason."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        for pattern in (_NOQA, _IGNORE):
            match = pattern.search(tok.string)
            if match is None:
                continue
            reason = tok.string[match.end():]
            if not match.group("codes") or not _REASON.search(reason):
                found.append((tok.start[0], tok.string))
    return found


def _python_files() -> list[Path]:
    return sorted(path for path in REPO.rglob("*.py")
                  if not any(part.startswith(".") or part in ("build", "__pycache__")
                             for part in path.relative_to(REPO).parts))


@pytest.mark.parametrize("comment", [
    "# noqa",
    "# noqa: E402",
    "# noqa: E402, F401",
    "# NOQA:E731",
    "# type: ignore",
    "# type: ignore[attr-defined]",
    "# type: ignore  # Windows only",         # a reason, but no error code
])
def test_a_bare_suppression_is_found(comment: str) -> None:
    assert bare_suppressions(f"x = 1  {comment}\n") == [(1, comment)]


@pytest.mark.parametrize("comment", [
    "# noqa: E402 - sys.path is set first",
    "# noqa: N802 (http.server naming)",
    "# noqa: E402, F401  re-exported for the CLI",
    "# type: ignore[attr-defined]  # exists on Windows only",
    "# type: ignore[override] - tarfile writes only bytes",
    "# the noqa rule of this file, in prose",
])
def test_a_suppression_with_its_reason_passes(comment: str) -> None:
    assert bare_suppressions(f"x = 1  {comment}\n") == []


def test_a_marker_inside_a_string_is_not_a_comment() -> None:
    assert bare_suppressions('text = "# noqa"\n') == []


def test_every_suppression_in_the_repository_says_why() -> None:
    offenders = []
    for path in _python_files():
        rel = path.relative_to(REPO).as_posix()
        if rel in ROUND_2:
            continue
        offenders += [f"{rel}:{line}: {comment}" for line, comment in bare_suppressions(path.read_text())]
    assert not offenders, "suppressions without an error code or a reason:\n" + "\n".join(offenders)


def test_round_2_waivers_are_still_needed() -> None:
    clean = [rel for rel in sorted(ROUND_2)
             if not (REPO / rel).exists() or not bare_suppressions((REPO / rel).read_text())]
    assert not clean, f"no bare suppression left in {clean}: remove them from ROUND_2"


# --- size ---------------------------------------------------------------------------
SIZED_PACKAGES = ("runtime", "guest_agent", "desktop", "vmimage")
MAX_LINES = 500
MAX_METHODS = 30

# Modules still waiting for a split (none today); the test fails on a waiver no longer needed.
SIZE_ROUND_2 = frozenset({
})


def size_problems(source: str) -> list[str]:
    """What makes a module too big (lines, classes with too many methods); [] if its docstring
    has a `Size:` line with a reason."""
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree) or ""
    for line in docstring.splitlines():
        if line.strip().startswith("Size:") and _REASON.search(line.strip()[len("Size:"):]):
            return []
    problems = []
    lines = len(source.splitlines())
    if lines > MAX_LINES:
        problems.append(f"{lines} lines (over {MAX_LINES})")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            methods = sum(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) for item in node.body)
            if methods > MAX_METHODS:
                problems.append(f"class {node.name} has {methods} methods (over {MAX_METHODS})")
    return problems


def _module(lines: int = 1, methods: int = 0, docstring: str = "A module.") -> str:
    body = [f'"""{docstring}"""', "", "class C:"]
    body += [f"    def m{i}(self): pass" for i in range(methods)] or ["    pass"]
    body += [f"x{i} = {i}" for i in range(lines - len(body))]
    return "\n".join(body) + "\n"


def test_a_module_over_the_line_limit_is_found() -> None:
    assert size_problems(_module(lines=MAX_LINES)) == []
    assert size_problems(_module(lines=MAX_LINES + 1)) == [f"{MAX_LINES + 1} lines (over {MAX_LINES})"]


def test_a_class_over_the_method_limit_is_found() -> None:
    assert size_problems(_module(methods=MAX_METHODS)) == []
    assert size_problems(_module(methods=MAX_METHODS + 1)) == \
        [f"class C has {MAX_METHODS + 1} methods (over {MAX_METHODS})"]


@pytest.mark.parametrize("docstring", [
    "A parser.\n\nSize: one grammar; split, its rules would be read in two files.",
    "A parser.\n\n    Size: Go's table, kept whole to compare with it.",
])
def test_a_size_line_in_the_docstring_waives_both_limits(docstring: str) -> None:
    assert size_problems(_module(lines=MAX_LINES + 1, methods=MAX_METHODS + 1, docstring=docstring)) == []


@pytest.mark.parametrize("source", [
    _module(lines=MAX_LINES + 1, docstring="A parser.\n\nSize:"),              # no reason
    _module(lines=MAX_LINES + 1, docstring="A parser; Size: a grammar."),        # not a line of its own
    "# Size: a grammar.\n" + _module(lines=MAX_LINES + 1, docstring=""),       # a comment, not the docstring
])
def test_a_size_waiver_needs_a_docstring_line_and_a_reason(source: str) -> None:
    assert size_problems(source) != []


def _sized_modules() -> list[Path]:
    return [path for path in _python_files() if path.relative_to(REPO).parts[0] in SIZED_PACKAGES]


def test_every_module_is_small_or_says_why() -> None:
    offenders = []
    for path in _sized_modules():
        rel = path.relative_to(REPO).as_posix()
        if rel not in SIZE_ROUND_2:
            offenders += [f"{rel}: {problem}" for problem in size_problems(path.read_text())]
    assert not offenders, ("split these, or say why in a `Size:` line of the module docstring:\n"
                           + "\n".join(offenders))


def test_size_round_2_waivers_are_still_needed() -> None:
    small = [rel for rel in sorted(SIZE_ROUND_2)
             if not (REPO / rel).exists() or not size_problems((REPO / rel).read_text())]
    assert not small, f"{small} are within the limits now: remove them from SIZE_ROUND_2"
