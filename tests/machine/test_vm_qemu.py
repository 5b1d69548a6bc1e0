"""The direct-QEMU backend (no libvirt): boots, answers through the host socket, stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop.machine.manager import pid_alive
from tests.machine.conftest import make_machine

pytestmark = pytest.mark.vm


def test_direct_qemu_backend_boots_and_answers(guest_image_env, tmp_path_factory):
    m = make_machine("qemut", tmp_path_factory, guest_image_env)
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--no-mount", "--backend", "qemu")
    try:
        start = m.dockyard("start")
        assert start.stdout.strip() == f"export DOCKER_HOST={m.docker_host}"
        assert m.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        pid = int((m.home / "run" / "qemut" / "qemu.pid").read_text())
        assert "dockyard-qemut" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert m.status()["engine"] == "ok"
        m.dockyard("stop")
        assert m.status()["state"] == "stopped"
        # Gone, or a zombie waiting for whichever subreaper adopted the daemon.
        assert not pid_alive(pid)
    finally:
        m.dockyard("rm", "-f", check=False)
