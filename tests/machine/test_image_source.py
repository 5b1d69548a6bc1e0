"""Which guest image a machine boots, and `dockyard machine image export|import` through the real CLI.

No VM: the image is a small one shaped like the cache's (tests/vm_image/test_image_archive.py),
and "a host that cannot build" is a real PATH without apt, dpkg or mmdebstrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.machine.guest_image_source import choose, current_image
from runtime.errors import NotFound, RuntimeFailure
from tests.vm_image.test_image_archive import RECIPE, make_image_dir
from vmimage.image_archive import export_image, install_archive

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def archive(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "guest.tar.xz"
    return path, export_image(make_image_dir(tmp_path / "built"), path)


@pytest.fixture
def bare_path(tmp_path, monkeypatch) -> Path:
    """A PATH with qemu-img only (what `machine init` needs): no apt, dpkg, mmdebstrap or tar."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-img").symlink_to("/usr/bin/qemu-img")
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_a_host_that_cannot_build_boots_the_imported_image_and_says_why(tmp_path, archive, bare_path):
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeFailure, match="cannot build one .*apt.*import one with"):
        choose(cache, "auto")
    install_archive(archive[0], cache, archive[1], source="guest.tar.xz")
    choice = choose(cache, "auto")
    assert choice.kind == "imported" and choice.imported_hash == RECIPE
    assert "no local build is possible" in choice.reason and "mmdebstrap" in choice.reason
    image = current_image(cache, "auto")
    assert image.recipe_hash == RECIPE and image.rootfs == cache / RECIPE / "rootfs.img"


def test_the_setting_chooses_imported_or_build_on_a_host_that_can_build(tmp_path, archive):
    cache = tmp_path / "cache"
    with pytest.raises(NotFound, match="no guest image was imported"):
        choose(cache, "imported")
    install_archive(archive[0], cache, archive[1])
    assert choose(cache, "imported").imported_hash == RECIPE
    assert choose(cache, "build").kind == "build"
    # This host (root, Debian, mmdebstrap) can build: auto means build, even with an import.
    assert choose(cache, "auto").kind == "build"


def dockyard(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "desktop.cli", "machine", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120,
                          env=dict(os.environ, DOCKYARD_HOME=str(home), PYTHONPATH=str(REPO), **env))


def test_cli_import_refuses_a_wrong_digest_in_one_line(tmp_path, archive):
    home = tmp_path / "home"
    wrong = "0" * 64
    done = dockyard(home, "image", "import", str(archive[0]), "--sha256", wrong)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
    assert wrong in done.stderr and archive[1] in done.stderr
    assert not (home / "data" / "images").exists() or not any((home / "data" / "images").iterdir())


def test_cli_init_without_a_buildable_or_imported_image_creates_nothing(tmp_path, bare_path):
    home = tmp_path / "home"
    done = dockyard(home, "init", "--backend", "qemu", "--no-mount", "--name", "noimage")
    assert done.returncode == 1
    assert "import one with `dockyard machine image import" in done.stderr
    status = dockyard(home, "status", "--json", "--name", "noimage")
    assert json.loads(status.stdout)["state"] == "not-created"


def test_cli_import_then_init_says_it_uses_the_imported_image_then_export_round_trips(tmp_path, archive,
                                                                                       bare_path):
    home = tmp_path / "home"
    done = dockyard(home, "image", "import", str(archive[0]), "--sha256", archive[1])
    assert done.returncode == 0, done.stderr
    assert f"guest image {RECIPE} installed" in done.stderr
    init = dockyard(home, "init", "--backend", "qemu", "--no-mount", "--disk", "1G", "--name", "imp")
    assert init.returncode == 0, init.stderr
    assert f"the imported image {RECIPE}" in init.stderr and "no local build is possible" in init.stderr
    dockyard(home, "rm", "--name", "imp")
    again = tmp_path / "again.tar.xz"
    export = dockyard(home, "image", "export", str(again))
    assert export.returncode == 0, export.stderr
    digest = hashlib.sha256(again.read_bytes()).hexdigest()
    assert export.stdout == f"{digest}  {again}\n"
    assert f"--sha256 {digest}" in export.stderr


def test_cli_image_build_on_a_host_that_cannot_build_says_why_and_what_to_do(tmp_path, bare_path):
    done = dockyard(tmp_path / "home", "image", "build")
    assert done.returncode == 1
    assert "mmdebstrap" in done.stderr and "import one with" in done.stderr
    assert len(done.stderr.splitlines()) == 1
