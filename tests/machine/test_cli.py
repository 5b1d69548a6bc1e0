"""The `dockyard` CLI without booting: init (real qemu-img, real key pair), status, rm, errors."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.machine.manager import MachineManager

REPO = Path(__file__).resolve().parents[2]


def dockyard(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKYARD_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "desktop.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "dy"))
    return tmp_path / "dy"


def test_init_creates_key_disk_and_config(home, tmp_path):
    share = tmp_path / "proj"
    share.mkdir()
    out = dockyard(home, "machine", "init", "--name", "m1", "--cpus", "1", "--memory", "1G", "--disk", "2G",
                   "--mount", str(share), "--backend", "qemu")
    assert "machine 'm1' created" in out.stdout
    m = MachineManager("m1")
    cfg = m.config()
    assert (cfg.cpus, cfg.memory_mib, cfg.disk_mib, cfg.backend) == (1, 1024, 2048, "qemu")
    assert [s.host_path for s in cfg.shares] == [str(share)]
    assert oct(m.key_path.stat().st_mode & 0o777) == "0o600"
    assert m.key_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    info = subprocess.run(["qemu-img", "info", "--output=json", str(m.data_disk)], capture_output=True,
                          text=True, check=True)
    disk = json.loads(info.stdout)
    assert (disk["format"], disk["virtual-size"]) == ("qcow2", 2 * 1024**3)

    # The kernel arguments of the contract, with the key as one base64 word.
    line = m.kernel_cmdline("console=ttyS0 quiet", cfg)
    words = dict(w.split("=", 1) for w in line.split() if w.startswith("dockyard."))
    assert base64.b64decode(words["dockyard.key"]).decode() == m.key_path.with_suffix(".pub").read_text().strip()
    assert words["dockyard.sharefs"] == "9p"
    assert words["dockyard.shares"] == f"dyshare0:{share}"
    assert words["dockyard.hostloop"] == "10.0.2.2"
    assert int(words["dockyard.time"]) > 1_700_000_000
    assert line.startswith("console=ttyS0 quiet ")
    # Only a TCG guest is told which clock to count time with (its TSC calibration is unreliable there).
    assert "clocksource=" not in line and "clocksource=" not in m.kernel_cmdline("console=ttyS0", cfg, "kvm")
    assert m.kernel_cmdline("console=ttyS0", cfg, "tcg").split()[-1] == "clocksource=acpi_pm"


def test_status_and_rm(home, tmp_path):
    dockyard(home, "machine", "init", "--name", "m2", "--no-mount", "--backend", "qemu")
    status = json.loads(dockyard(home, "machine", "status", "--json", "--name", "m2").stdout)
    assert status["state"] == "stopped" and status["backend"] == "qemu" and status["shares"] == []
    again = dockyard(home, "machine", "init", "--name", "m2", "--no-mount", check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == "dockyard: machine 'm2' already exists (remove it with `dockyard machine rm`)"
    stop = dockyard(home, "machine", "stop", "--name", "m2")
    assert "not running" in stop.stderr
    dockyard(home, "machine", "rm", "--name", "m2")
    status = json.loads(dockyard(home, "machine", "status", "--json", "--name", "m2").stdout)
    assert status == {"name": "m2", "state": "not-created"}
    assert not MachineManager("m2").data_dir.exists()


@pytest.mark.parametrize("args,message", [
    (["machine", "start", "--name", "ghost"],
     "dockyard: machine 'ghost' does not exist: run `dockyard machine init` first"),
    (["machine", "init", "--memory", "lots"], "dockyard: invalid size 'lots'"),
    (["machine", "init", "--mount", "/does/not/exist"], "dockyard: cannot share '/does/not/exist': not a directory"),
    (["machine", "init", "--name", "bad/name"], "dockyard: invalid machine name 'bad/name'"),
    (["machine", "logs", "--name", "ghost"], "dockyard: machine 'ghost' does not exist"),
    (["machine", "ssh", "--name", "ghost"], "dockyard: machine 'ghost' does not exist"),
])
def test_errors_are_one_line_with_nonzero_exit(home, args, message):
    proc = dockyard(home, *args, check=False)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message)


def test_cli_start_up_does_not_import_paramiko_or_libvirt(home):
    code = ("import sys, desktop.cli as c\n"
            "c.main(['machine', 'status', '--json'])\n"
            "heavy = ('paramiko', 'libvirt', 'cryptography', 'docker', 'requests')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, DOCKYARD_HOME=str(home)), check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_lifecycle_lock_excludes_other_processes(home):
    dockyard(home, "machine", "init", "--name", "m3", "--no-mount", "--backend", "qemu")
    m = MachineManager("m3")
    probe = ("import fcntl, sys\n"
             "f = open(sys.argv[1], 'a+')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('free')\n"
             "except BlockingIOError:\n    print('held')\n")
    lock_path = str(m.run_dir / "lifecycle.lock")
    with m.lifecycle_lock():
        held = subprocess.run([sys.executable, "-c", probe, lock_path], capture_output=True, text=True, check=True)
    free = subprocess.run([sys.executable, "-c", probe, lock_path], capture_output=True, text=True, check=True)
    assert (held.stdout.strip(), free.stdout.strip()) == ("held", "free")


def test_share_paths_with_spaces_commas_and_colons_are_escaped(home, tmp_path):
    odd = tmp_path / "my docs,v1:final"
    odd.mkdir()
    dockyard(home, "machine", "init", "--name", "m4", "--mount", str(odd), "--backend", "qemu")
    m = MachineManager("m4")
    line = m.kernel_cmdline("console=ttyS0", m.config())
    shares = [w for w in line.split() if w.startswith("dockyard.shares=")]
    assert len(shares) == 1  # one word: no raw space survived
    from urllib.parse import unquote

    tag, path = shares[0].split("=", 1)[1].split(":")
    assert (tag, unquote(path)) == ("dyshare0", str(odd))


def test_too_long_kernel_command_line_is_refused(home, tmp_path):
    dockyard(home, "machine", "init", "--name", "m5", "--no-mount", "--backend", "qemu")
    from desktop.machine.config import Share
    from runtime.errors import InvalidArgument

    m = MachineManager("m5")
    cfg = m.config()
    cfg.shares = [Share("/" + "x" * 200 + str(i), f"dyshare{i}") for i in range(12)]
    with pytest.raises(InvalidArgument, match="kernel command line would be"):
        m.kernel_cmdline("console=ttyS0", cfg)
