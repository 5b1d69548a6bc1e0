"""`dockyard-desktop` resolves to a real entry point and brings the machine up from any state."""

from __future__ import annotations

import subprocess
from pathlib import Path

from desktop.app import machine_commands

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def test_first_launch_creates_then_starts() -> None:
    assert machine_commands("default", exists=False) == [["machine", "init", "--name", "default", "--start"]]


def test_later_launches_only_start() -> None:
    assert machine_commands("work", exists=True) == [["machine", "start", "--name", "work"]]


def test_the_console_script_runs() -> None:
    proc = subprocess.run([str(VENV_BIN / "dockyard-desktop"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "DOCKER_HOST" in proc.stdout
