"""What the app loads at launch: the memory target (≤ 120 MB with 20 containers) leaves
no room for modules only some users need on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_app_loads_the_terminal_emulator_only_when_a_terminal_opens():
    code = ("import sys, desktop.ui.app\n"
            "print(sorted(m for m in ('pyte', 'wcwidth') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
