"""The machine manager and its supervisor share desktop.machine.instance and never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

MACHINE = Path(__file__).resolve().parents[2] / "desktop" / "machine"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_manager_and_supervisor_do_not_import_each_other():
    assert "desktop.machine.supervisor" not in imported_modules(MACHINE / "manager.py")
    assert "desktop.machine.manager" not in imported_modules(MACHINE / "supervisor.py")
    for side in ("manager.py", "supervisor.py"):
        assert "desktop.machine.instance" in imported_modules(MACHINE / side)
