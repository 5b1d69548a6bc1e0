"""The direct-QEMU backend (no libvirt): boots, answers through the host socket, stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop.machine.manager import pid_alive
from desktop.machine.qemu_backend import QemuBackend
from tests.machine.conftest import make_machine

pytestmark = pytest.mark.vm


def test_direct_qemu_backend_boots_and_answers(guest_image_env, tmp_path_factory):
    m = make_machine("qemut", tmp_path_factory, guest_image_env)
    share = tmp_path_factory.mktemp("sftpshare")
    (share / "from-host.txt").write_text("over sftp\n")
    # This machine also covers the reverse-SFTP shared-folder fallback.
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--mount", str(share),
               "--sharefs", "sftp", "--backend", "qemu")
    try:
        start = m.dockyard("start")
        assert start.stdout.strip() == f"export DOCKER_HOST={m.docker_host}"
        assert m.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        pid = int((m.home / "run" / "qemut" / "qemu.pid").read_text())
        assert m.domain_name.startswith("dockyard-qemut-")
        assert f"{m.domain_name}\0" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert m.status()["engine"] == "ok"
        assert m.dockyard("ssh", "cat", str(share / "from-host.txt")).stdout == "over sftp\n"
        m.dockyard("ssh", "cp", str(share / "from-host.txt"), str(share / "from-guest.txt"))
        assert (share / "from-guest.txt").read_text() == "over sftp\n"
        # UDP publishing goes through QEMU's user-net hostfwd, via QMP here.
        backend = QemuBackend(m.domain_name, m.home / "run" / "qemut", m.home / "console.log")
        backend.add_hostfwd("udp", 45353, 53)
        assert "127.0.0.1 45353" in " ".join(backend.monitor_command("info usernet").split())
        backend.remove_hostfwd("udp", 45353)
        assert "45353" not in backend.monitor_command("info usernet")
        m.dockyard("stop")
        assert m.status()["state"] == "stopped"
        # Gone, or a zombie waiting for whichever subreaper adopted the daemon.
        assert not pid_alive(pid)
    finally:
        m.dockyard("rm", "-f", check=False)
