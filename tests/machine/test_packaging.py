"""A non-editable install carries everything the guest image is built from (pyproject's package data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from vmimage import initramfs
from vmimage.recipe import PROJECT_DIR

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_input_of_the_guest_image(tmp_path):
    # Built from a copy: setuptools leaves build/ and *.egg-info behind in the source tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("desktop", "vmimage", "runtime", "guest_agent"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    # pip's build isolation fetches the build backend named in pyproject.toml, as any install does.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "-w", str(tmp_path), "--no-deps",
                            "-q"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("dockyard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = {p.relative_to(PROJECT_DIR).as_posix() for p in initramfs.init_sources() + initramfs.code_sources()}
    assert any(name.endswith(".sh") for name in needed)   # the non-Python inputs are among them
    assert sorted(needed - names) == []
