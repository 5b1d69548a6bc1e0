"""A full disk under a running agent: clear errors, no hangs, and recovery without a restart.

The agent's root is a small ext4 file system in a loop-mounted image file made here
(no reserved blocks, so root cannot dig into a reserve). A pull of the debian test
image fills it first (it does not fit), then a container writes until nothing is left.
While the disk is full, containers exit, are waited for, are removed with --rm and
are read back; every call answers in time with a clear message. Then the filler is
removed, and without restarting the agent its state on disk catches up and run, logs,
inspect and pull work again.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import DOCKER_CLI, start_agent
from tests.support.waiting import poll

FS_MIB = 128
CALL_TIMEOUT = 120   # seconds for any one client call: a hang fails the test
NO_SPACE = "no space left on device"
# A container that reports a `docker stop` and exits with a code of its own.
TRAPPED = 'trap "echo bye-{name}; exit {code}" TERM; echo ready; sleep 100000 & wait'


def _run(*argv: str, timeout: float = 60) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=timeout)


@pytest.fixture
def small_root(tmp_path: Path):
    """A mounted FS_MIB ext4 file system; unmounted and deleted afterwards."""
    image = tmp_path / "disk.img"
    mnt = tmp_path / "root"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(FS_MIB << 20)
    # 4 KiB blocks whatever the size (mke2fs picks 1 KiB for small file systems), so the
    # filler's 4k writes can take the very last block.
    _run("mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", str(image))
    _run("mount", "-o", "loop", str(image), str(mnt))
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        image.unlink(missing_ok=True)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _clear_error(result: subprocess.CompletedProcess) -> str:
    """The CLI failed, saying the disk is full, not an opaque internal error."""
    assert result.returncode != 0, result.stdout
    assert NO_SPACE in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "OSError" not in result.stderr, result.stderr
    return result.stderr


def _state_on_disk(root: Path, cid: str) -> dict:
    try:
        return json.loads((root / "containers" / cid / "state.json").read_text())["state"]
    except FileNotFoundError:
        return {}


def test_full_disk_gives_clear_errors_and_recovers_without_restart(tmp_path, small_root, test_images):
    agent = start_agent(tmp_path / "docker.sock", small_root)
    pid = agent.process.pid

    def docker(*a: str, **kw: Any) -> subprocess.CompletedProcess:
        return agent.docker(*a, timeout=kw.pop("timeout", CALL_TIMEOUT), **kw)

    busybox, debian, layered = test_images["busybox"], test_images["debian"], test_images["layered"]
    attached = None
    try:
        assert docker("pull", busybox).returncode == 0
        ids = {}
        for name, code, rm in (("keep", 3, False), ("gone", 5, True)):
            args = ["run", "-d", "--network", "none", "--name", name, *(["--rm"] if rm else []),
                    busybox, "sh", "-c", TRAPPED.format(name=name, code=code)]
            result = docker(*args)
            assert result.returncode == 0, result.stderr
            ids[name] = result.stdout.strip()
        # An attached `docker run --rm`: its output must still arrive once the log cannot be written.
        attached = subprocess.Popen(
            [DOCKER_CLI, "run", "--rm", "--network", "none", "--name", "att", busybox, "sh", "-c",
             TRAPPED.format(name="att", code=4)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent.docker_env())
        for name in ("keep", "gone", "att"):
            poll(lambda name=name: "ready" in docker("logs", name).stdout, what=f"{name} ready")

        # 1. A pull that does not fit: a clear error, and nothing half-written is left.
        result = docker("pull", debian)
        assert NO_SPACE in result.stdout + result.stderr, result.stdout + result.stderr
        assert "internal error" not in result.stdout + result.stderr
        images = small_root / "images"
        assert list((images / "tmp").iterdir()) == []
        assert [p for p in (images / "layers").iterdir() if p.name.startswith(".tmp-")] == []
        assert debian.rsplit(":", 1)[0].split("/", 1)[1] not in docker("images").stdout

        # 2. A container fills the disk; it exits, and `docker wait` returns its code.
        # (ext4 hands back blocks it had reserved for delayed allocation once the data is
        # written out: the filler syncs and fills again until not one block is left.)
        result = docker("run", "-d", "--network", "none", "--name", "hog", busybox, "sh", "-c",
                        "dd if=/dev/zero of=/big bs=1M; for i in 1 2 3 4; do sync; "
                        "dd if=/dev/zero of=/big$i bs=4k; done")
        assert result.returncode == 0, result.stderr
        assert docker("wait", "hog").stdout.strip() == "1"
        assert _free_bytes(small_root) == 0

        # 3. With the disk full, new work is refused clearly.
        _clear_error(docker("run", "--rm", "--network", "none", busybox, "true"))
        _clear_error(docker("pull", layered))

        # 4. Containers that exit now are recorded in memory, waited for, removed, read back.
        assert docker("stop", "keep").returncode == 0
        assert docker("wait", "keep").stdout.strip() == "3"
        # (the exit could not be written: the path under test was taken)
        assert f"cannot record the state of container {ids['keep'][:12]}" in agent.log_text()
        state = json.loads(docker("inspect", "keep").stdout)[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 3)
        assert "Exited (3)" in docker("ps", "-a", "--filter", "name=keep").stdout
        logs = docker("logs", "keep")
        assert logs.returncode == 0 and "ready" in logs.stdout

        assert docker("stop", "gone").returncode == 0
        poll(lambda: "No such container" in docker("container", "inspect", "gone").stderr, what="--rm removal")

        assert docker("stop", "att").returncode == 0
        out, err = attached.communicate(timeout=CALL_TIMEOUT)
        assert attached.returncode == 4, err
        assert "bye-att" in out    # delivered to the client although the log could not take it
        poll(lambda: "No such container" in docker("container", "inspect", "att").stderr, what="att removed")

        # 5. Space comes back: the state on disk catches up, and everything works again.
        assert docker("rm", "-f", "hog").returncode == 0
        poll(lambda: _free_bytes(small_root) > (32 << 20), what="the filler's space freed")
        poll(lambda: _state_on_disk(small_root, ids["keep"]).get("exit_code") == 3,
             what="the pending state write")
        result = docker("run", "--rm", "--network", "none", busybox, "echo", "works")
        assert (result.returncode, result.stdout) == (0, "works\n"), result.stderr
        assert docker("run", "--network", "none", "--name", "after", busybox, "echo", "logged").returncode == 0
        assert docker("logs", "after").stdout == "logged\n"
        assert json.loads(docker("inspect", "after").stdout)[0]["State"]["ExitCode"] == 0
        assert docker("pull", layered).returncode == 0
        result = docker("run", "--rm", "--network", "none", layered, "cat", "/data/keep.txt")
        assert result.returncode == 0, result.stderr
        assert agent.alive() and agent.process.pid == pid
    finally:
        if attached is not None and attached.poll() is None:
            attached.kill()
            attached.wait()
        for name in ("keep", "hog", "after"):
            docker("rm", "-f", name)
        agent.stop()
