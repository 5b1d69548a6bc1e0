"""The import layering of runtime/ and guest_agent/, read from the source with `ast`.

runtime/ is our own runtime: no HTTP, no VM. guest_agent/ serves the Docker API on
top of it in the guest, whose python3 has the standard library only. Inside
runtime/, packages sit in layers (see runtime/__init__.py): Linux plumbing at the
bottom, one package per kind of resource above it, the engine on top. A package
imports only from the layers below it, so there are no cycles between packages.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWN_PACKAGES = {"runtime", "guest_agent"}
# The runtime packages each runtime package may import (besides itself and the
# shared base modules at the top of runtime/). Anything not listed is refused.
RUNTIME_LAYERS: dict[str, set[str]] = {
    "linux": set(),
    "images": {"linux"},
    "volumes": {"linux"},
    "network": {"linux"},
    "containers": {"linux", "volumes"},
    "build": {"linux", "images"},
    "engine": {"linux", "images", "volumes", "network", "containers", "build"},
}
GUI_AND_HOST_ONLY = {"desktop", "vmimage", "PySide6", "PyQt5", "PyQt6", "shiboken6", "libvirt"}


@dataclass(frozen=True)
class Import:
    """One imported module name, absolute, with where it was imported."""

    module: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module}"


def module_name(path: Path, root: Path) -> tuple[str, str]:
    """(module, package) dotted names of a source file under root."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every module a file imports, anywhere in it (function bodies and TYPE_CHECKING too).

    `from pkg import name` counts as importing pkg.name as well as pkg: name may
    be a submodule, and naming one that is not costs nothing here.
    """
    _, package = module_name(path, root)
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(Import(target, path, node.lineno))
            found += [Import(f"{target}.{alias.name}", path, node.lineno) for alias in node.names
                      if alias.name != "*"]
    return found


def sources(root: Path, package: str) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)


def runtime_package(module: str, root: Path) -> str | None:
    """The runtime subpackage a runtime module belongs to; None for a top-level module."""
    parts = module.split(".")
    if len(parts) > 1 and (root / "runtime" / parts[1]).is_dir():
        return parts[1]
    return None


def is_runtime_module(module: str, root: Path) -> bool:
    """True for modules that exist in runtime/ (not for `from runtime.x import SomeClass`)."""
    rel = Path(*module.split("."))
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def layering_violations(root: Path) -> list[str]:
    """Every import that breaks the rules above, as "path:line: rule: module"."""
    bad: list[str] = []
    for package in ("runtime", "guest_agent"):
        for path in sources(root, package):
            module, _ = module_name(path, root)
            for imp in imports_of(path, root):
                top = imp.module.split(".")[0]
                where = f"{imp.path.relative_to(root)}:{imp.line}"
                if top not in OWN_PACKAGES and top not in sys.stdlib_module_names:
                    bad.append(f"{where}: not the standard library nor ours: {imp.module}")
                if package == "runtime" and top in {"guest_agent", "desktop", "vmimage", "tests", "bench"}:
                    bad.append(f"{where}: runtime imports a layer above it: {imp.module}")
                if package == "guest_agent" and top in GUI_AND_HOST_ONLY:
                    bad.append(f"{where}: guest_agent imports host-side code: {imp.module}")
                if package == "runtime" and top == "runtime" and is_runtime_module(imp.module, root):
                    bad += [f"{where}: {rule}: {imp.module}"
                            for rule in _runtime_rule_broken(module, imp.module, root)]
    return bad


QT_MODULES = {"PySide6", "PyQt5", "PyQt6", "shiboken6"}


def qt_outside_desktop_ui(root: Path) -> list[str]:
    """Every Qt import outside desktop/ui: the engine and machine code stay Qt-free."""
    bad: list[str] = []
    for package in ("runtime", "guest_agent", "desktop", "vmimage", "bench"):
        if not (root / package).is_dir():
            continue
        for path in sources(root, package):
            if path.relative_to(root).parts[:2] == ("desktop", "ui"):
                continue
            bad += [f"{imp.path.relative_to(root)}:{imp.line}: Qt outside desktop/ui: {imp.module}"
                    for imp in imports_of(path, root) if imp.module.split(".")[0] in QT_MODULES]
    return bad


def _runtime_rule_broken(importer: str, imported: str, root: Path) -> list[str]:
    own = runtime_package(importer, root)
    other = runtime_package(imported, root)
    engine = imported == "runtime.engine" or imported.startswith("runtime.engine.")
    if engine and own != "engine":
        return ["only the guest agent drives the engine"]
    if own is None:                          # a shared base module
        return [] if other is None else ["a shared base module imports a runtime package"]
    if other is None or other == own:
        return []
    if other not in RUNTIME_LAYERS.get(own, set()):
        return [f"runtime.{own} may not import runtime.{other}"]
    return []


def test_runtime_and_guest_agent_keep_their_layers() -> None:
    bad = layering_violations(REPO)
    assert not bad, "\n".join(bad)


def test_only_desktop_ui_imports_qt() -> None:
    bad = qt_outside_desktop_ui(REPO)
    assert not bad, "\n".join(bad)


def test_the_qt_checker_finds_qt_outside_desktop_ui(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"desktop/__init__.py": "", "desktop/ui/__init__.py": "",
                            "desktop/ui/window.py": "from PySide6.QtWidgets import QWidget\n",
                            "desktop/exec_session.py": "def f():\n    from PySide6 import QtCore\n"})
    assert qt_outside_desktop_ui(root) == ["desktop/exec_session.py:2: Qt outside desktop/ui: PySide6",
                                           "desktop/exec_session.py:2: Qt outside desktop/ui: PySide6.QtCore"]


def test_every_runtime_package_has_its_layer_listed() -> None:
    packages = {p.name for p in (REPO / "runtime").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(RUNTIME_LAYERS)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {**{"runtime/__init__.py": "", "runtime/errors.py": "",
                          "runtime/engine/__init__.py": "",
                          "runtime/engine/facade.py": "from ..linux import sys_calls\n",
                          "runtime/linux/__init__.py": "", "runtime/linux/sys_calls.py": "import os\n",
                          "runtime/containers/__init__.py": "", "runtime/containers/spec.py": "",
                          "runtime/images/__init__.py": "", "runtime/images/store.py": "",
                          "guest_agent/__init__.py": "", "guest_agent/app.py": "from runtime.engine.facade import E\n"},
                       **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert layering_violations(_tree(tmp_path, {})) == []


def test_the_checker_finds_each_kind_of_bad_import(tmp_path: Path) -> None:
    cases = {
        "runtime/linux/sys_calls.py": ("from ..containers.spec import X\n", "runtime.linux may not import"),
        "runtime/images/store.py": ("def f():\n    from ..containers import spec\n", "runtime.images may not"),
        "runtime/errors.py": ("from .images.store import S\n", "shared base module imports a runtime package"),
        "runtime/containers/spec.py": ("from .. import engine\n", "only the guest agent drives the engine"),
        "runtime/linux/__init__.py": ("import guest_agent.app\n", "runtime imports a layer above it"),
        "guest_agent/app.py": ("from PySide6 import QtCore\n", "guest_agent imports host-side code"),
        "guest_agent/__init__.py": ("import libvirt\n", "guest_agent imports host-side code"),
        "runtime/images/__init__.py": ("import yaml\n", "not the standard library nor ours"),
    }
    for i, (name, (text, rule)) in enumerate(cases.items()):
        root = _tree(tmp_path / str(i), {name: text})
        bad = layering_violations(root)
        assert any(rule in line and line.startswith(name) for line in bad), (name, rule, bad)
