"""The guest image that travels, and the rootless build, with real boots (TCG).

* export -> a fresh image cache (the image is not there) -> import -> init -> start, on a
  "host" whose PATH has QEMU but no apt, dpkg or mmdebstrap, so the machine can only
  boot the imported image;
* a normal user (made here, with its subordinate ids) builds the guest from nothing and
  boots it with the direct QEMU backend, and `docker version` answers through its socket.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.machine.conftest import REPO, CliMachine, make_machine

pytestmark = pytest.mark.vm

TEST_USER = "dockyard-rootless"


def bare_path(directory: Path) -> str:
    """A PATH with what a non-Debian host has of ours: QEMU, and no apt, dpkg, mmdebstrap or tar."""
    directory.mkdir()
    for tool in ("qemu-img", "qemu-system-x86_64"):
        (directory / tool).symlink_to(shutil.which(tool))
    return str(directory)


def image_command(m: CliMachine, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`dockyard machine image ...` in the machine's environment (image commands take no --name)."""
    proc = subprocess.run([sys.executable, "-m", "desktop.cli", "machine", "image", *args], capture_output=True,
                          text=True, env=m.env, cwd=REPO, timeout=900)
    if check:
        assert proc.returncode == 0, f"dockyard machine image {' '.join(args)}: {proc.stderr}"
    return proc


def test_export_then_import_into_an_empty_cache_boots_where_nothing_can_be_built(guest_image_env, tmp_path_factory):
    built = make_machine("imgsrc", tmp_path_factory, guest_image_env)
    archive = tmp_path_factory.mktemp("travel") / "guest.tar.xz"
    export = image_command(built, "export", str(archive))
    digest, name = export.stdout.split()
    assert name == str(archive)

    home = tmp_path_factory.mktemp("dy-imported")
    env = {k: v for k, v in built.env.items() if k not in ("DOCKYARD_IMAGE_CACHE", "DOCKYARD_GUEST_IMAGE")}
    env.update(DOCKYARD_HOME=str(home), PATH=bare_path(home / "bin"))
    m = CliMachine(name="imgtravel", env=env, home=home)
    cache = home / "data" / "images"
    assert not cache.exists() or not any(cache.iterdir())

    refused = image_command(m, "import", str(archive), "--sha256", "f" * 64, check=False)
    assert refused.returncode == 1 and digest in refused.stderr and "f" * 64 in refused.stderr
    assert not cache.exists() or not any(cache.iterdir())
    image_command(m, "import", str(archive), "--sha256", digest)
    recipe_hash = json.loads((cache / "imported.json").read_text())["recipe_hash"]

    init = m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "2G", "--no-mount", "--backend", "qemu")
    assert f"the imported image {recipe_hash}" in init.stderr and "no local build is possible" in init.stderr
    try:
        start = m.dockyard("start")
        assert f"the imported image {recipe_hash}" in start.stderr
        assert m.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        state = json.loads((home / "data" / "machines" / "imgtravel" / "state.json").read_text())
        assert state["image_hash"] == recipe_hash
        # Nothing was built in this cache: only the imported image and its record.
        assert sorted(p.name for p in cache.iterdir()) == sorted([recipe_hash, "imported.json"])
    finally:
        m.dockyard("rm", "-f", check=False)


def ensure_test_user() -> pwd.struct_passwd:
    """The unprivileged user this test owns, with subordinate ids for mmdebstrap's unshare mode."""
    try:
        user = pwd.getpwnam(TEST_USER)
    except KeyError:
        # Debian 12's useradd also writes /etc/subuid and /etc/subgid lines.
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER], check=True,
                       capture_output=True)
        user = pwd.getpwnam(TEST_USER)
    for table, flag in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
        lines = Path(table).read_text().splitlines() if Path(table).exists() else []
        if not any(line.split(":")[0] in (TEST_USER, str(user.pw_uid)) for line in lines):
            subprocess.run(["usermod", flag, "300000-365535", TEST_USER], check=True, capture_output=True)
    return user


def test_a_normal_user_builds_and_boots_the_guest_without_root(tmp_path_factory):
    user = ensure_test_user()
    # The user's own folder (pytest's tmp folders are root's, 0700).
    base = Path(tempfile.mkdtemp(prefix="dockyard-rootless-"))
    os.chown(base, user.pw_uid, user.pw_gid)
    home = base / "home"
    env = {"HOME": str(base), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "DOCKYARD_HOME": str(home), "PYTHONPATH": str(REPO)}

    def as_user(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                               "--reset-env", "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                              capture_output=True, text=True, cwd=base, timeout=timeout)

    def dockyard(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        done = as_user(sys.executable, "-m", "desktop.cli", "machine", *args, "--name", "rootless",
                       timeout=timeout)
        assert done.returncode == 0, f"dockyard {' '.join(args)}: {done.stderr}"
        return done

    try:
        assert as_user("id", "-u").stdout.strip() == str(user.pw_uid) != "0"
        dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "2G", "--no-mount", "--backend", "qemu")
        # Builds the whole guest (no image in this user's cache), then boots it.
        start = dockyard("start", timeout=1500)
        socket_path = home / "run" / "rootless" / "docker.sock"
        assert start.stdout.strip() == f"export DOCKER_HOST=unix://{socket_path}"
        images = list((home / "data" / "images").glob("*/rootfs.img"))
        assert images and all(p.stat().st_uid == user.pw_uid for p in images)
        version = as_user("docker", "-H", f"unix://{socket_path}", "version", "--format", "{{.Server.Version}}")
        assert version.returncode == 0 and version.stdout.strip(), version.stderr
        assert socket_path.stat().st_uid == user.pw_uid
    finally:
        as_user(sys.executable, "-m", "desktop.cli", "machine", "rm", "-f", "--name", "rootless", timeout=120)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
