"""The screenshot script renders every page, the logs and inspect windows and the tray under Xvfb.

It runs `python -m tests.support.ui_screenshots` (Xvfb, trayer, a registry, a
native engine with containers, then the app) into a temporary folder, and
checks every picture: there, of the window's size, not blank; and that the
tray's own corner of the screen shows the icon (many colours where an empty
tray or a black screen has one or two).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QRect
from PySide6.QtGui import QImage

from desktop.ui.screenshots import MIN_COLOURS, PAGES, SIZES, distinct_colours
from tests.support.ui_screenshots import SCREEN, TRAY_HEIGHT

REPO = Path(__file__).resolve().parents[2]
WINDOWS = (*PAGES, "logs", "inspect")


def picture(path: Path) -> QImage:
    assert path.is_file() and path.stat().st_size > 0, f"{path.name} is missing or empty"
    image = QImage(str(path))
    assert not image.isNull(), f"{path.name} is not a PNG"
    return image


def test_every_page_and_the_tray_are_rendered(tmp_path):
    out = tmp_path / "shots"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "tests.support.ui_screenshots", "--out", str(out)],
                          capture_output=True, text=True, timeout=400, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    for width, height in SIZES:
        for name in WINDOWS:
            image = picture(out / f"{name}-{width}x{height}.png")
            assert (image.width(), image.height()) == (width, height), name
            assert distinct_colours(image) >= MIN_COLOURS, f"{name} at {width}x{height} is blank"

    manifest = json.loads((out / "screenshots.json").read_text())
    x, y, w, h = manifest["tray"]
    tray = QRect(x, y, w, h)
    # The icon sits in trayer, docked at the top right of the screen.
    assert tray.top() < TRAY_HEIGHT and tray.right() > SCREEN[0] - 200, tray
    for name in ("screen-tray.png", "screen-tray-menu.png"):
        screen = picture(out / name)
        assert (screen.width(), screen.height()) == SCREEN, name
        assert distinct_colours(screen, tray) >= MIN_COLOURS, f"no icon in the tray in {name}"
    # With the menu open the screen shows more than without it: the menu and its submenu.
    assert distinct_colours(picture(out / "screen-tray-menu.png")) > distinct_colours(picture(out / "screen-tray.png"))
    for name in ("tray-zoom.png", "tray-icons.png"):
        assert distinct_colours(picture(out / name)) >= MIN_COLOURS, name
    assert sorted(manifest["files"]) == sorted(p.name for p in out.glob("*.png"))
