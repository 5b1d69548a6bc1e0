"""The real docker CLI (28.2.2) against `dockyard-agent serve`, images from the real test registry.

Every test drives the CLI exactly as a user would; nothing here is faked.
Containers get unique names so tests share one agent without interfering.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.agent import DOCKER_CLI
from tests.support.waiting import poll


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(result: subprocess.CompletedProcess) -> str:
    """stdout of a docker command that must succeed (the assertion shows stderr otherwise)."""
    assert result.returncode == 0, f"docker failed ({result.returncode}): {result.args}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def busybox(agent, test_images) -> str:
    ref = test_images["busybox"]
    ok(agent.docker("pull", ref, timeout=180))
    return ref


def inspect(agent, name: str) -> dict:
    return json.loads(ok(agent.docker("inspect", name)))[0]


def running(agent, name: str) -> bool:
    return inspect(agent, name)["State"]["Running"]


def exited(agent, name: str) -> bool:
    return inspect(agent, name)["State"]["Status"] == "exited"


# --------------------------------------------------------------------------- basics


def test_version_and_info(agent):
    out = ok(agent.docker("version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}"))
    assert out.strip() == "1.45 linux"
    info = json.loads(ok(agent.docker("info", "--format", "{{json .}}")))
    assert info["OSType"] == "linux" and info["NCPU"] >= 1
    assert "ContainersRunning" in info


def test_run_rm_echo_prints_and_removes(agent, busybox):
    name = unique("echo")
    result = agent.docker("run", "--rm", "--name", name, busybox, "echo", "hi")
    assert ok(result) == "hi\n"
    names = ok(agent.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert name not in names


def test_exit_code_is_propagated(agent, busybox):
    result = agent.docker("run", "--rm", busybox, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "out\n" and result.stderr == "err\n"


def test_missing_executable_gives_127(agent, busybox):
    result = agent.docker("run", "--rm", busybox, "/no/such/binary")
    assert result.returncode == 127, result.stderr
    assert result.stderr.strip()


def test_run_of_a_missing_image_pulls_it(agent, test_images):
    ref = test_images["layered"]
    agent.docker("rmi", "-f", ref)
    result = agent.docker("run", "--rm", ref, "echo", "pulled")
    assert ok(result) == "pulled\n"
    assert "Unable to find image" in result.stderr
    assert ref in ok(agent.docker("images", "--format", "{{.Repository}}:{{.Tag}}")).split()


def test_unknown_image_on_registry_is_a_clear_error(agent, registry):
    ref = f"{registry.host}/nosuch-image:latest"
    result = agent.docker("run", "--rm", ref, "true")
    assert result.returncode == 125
    assert "nosuch-image" in result.stderr
    assert re.search(r"not found|does not exist|denied|unknown", result.stderr, re.I), result.stderr


def test_rm_of_unknown_container(agent):
    result = agent.docker("rm", "nosuch")
    assert result.returncode == 1
    assert "No such container: nosuch" in result.stderr


def test_concurrent_runs(agent, busybox):
    def one(i: int) -> subprocess.CompletedProcess:
        return agent.docker("run", "--rm", busybox, "echo", f"run-{i}", timeout=180)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    for i, result in enumerate(results):
        assert ok(result) == f"run-{i}\n"


# --------------------------------------------------------------------------- logs, ps, inspect


def test_detached_logs_streams_tail_timestamps(agent, busybox):
    name = unique("logs")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sh", "-c", "echo one; echo two >&2"))
    assert ok(agent.docker("wait", name)).strip() == "0"
    result = agent.docker("logs", name)
    assert ok(result) == "one\n" and result.stderr == "two\n"
    ok(agent.docker("rm", name))
    # Only stdout here: the order of lines between two pipes is not defined.
    name = unique("tail")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sh", "-c", "echo one; echo two; echo three"))
    assert ok(agent.docker("wait", name)).strip() == "0"
    assert ok(agent.docker("logs", "--tail", "1", name)) == "three\n"
    assert ok(agent.docker("logs", "--tail", "2", name)) == "two\nthree\n"
    stamped = ok(agent.docker("logs", "--timestamps", name)).splitlines()
    assert len(stamped) == 3
    for line, word in zip(stamped, ("one", "two", "three"), strict=True):
        assert re.match(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z {word}$", line), line
    ok(agent.docker("rm", name))


def test_logs_follow_returns_everything_when_the_container_exits(agent, busybox):
    name = unique("follow")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sh", "-c",
                    "for i in 1 2 3 4 5; do echo line-$i; sleep 0.2; done"))
    result = agent.docker("logs", "-f", name, timeout=60)
    assert ok(result) == "".join(f"line-{i}\n" for i in range(1, 6))
    assert ok(agent.docker("wait", name)).strip() == "0"
    ok(agent.docker("rm", name))


def test_ps_filters_and_status(agent, busybox):
    up = unique("ps-up")
    down = unique("ps-down")
    ok(agent.docker("run", "-d", "--name", up, "--label", "suite=ps", busybox, "sleep", "300"))
    ok(agent.docker("run", "--name", down, busybox, "true"))
    running_names = ok(agent.docker("ps", "--format", "{{.Names}}")).split()
    assert up in running_names and down not in running_names
    all_names = ok(agent.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert up in all_names and down in all_names
    exited_names = ok(agent.docker("ps", "-a", "--filter", "status=exited",
                                   "--format", "{{.Names}}")).split()
    assert down in exited_names and up not in exited_names
    assert ok(agent.docker("ps", "-a", "--filter", f"name={up}", "--format", "{{.Names}}")).split() == [up]
    assert ok(agent.docker("ps", "--filter", "label=suite=ps", "--format", "{{.Names}}")).split() == [up]
    status = ok(agent.docker("ps", "--filter", f"name={up}", "--format", "{{.Status}}")).strip()
    assert status.startswith("Up "), status
    status = ok(agent.docker("ps", "-a", "--filter", f"name={down}", "--format", "{{.Status}}")).strip()
    assert status.startswith("Exited (0) "), status
    assert down in ok(agent.docker("ps", "-a", "--filter", "exited=0", "--format", "{{.Names}}")).split()
    up_id = inspect(agent, up)["Id"]
    assert ok(agent.docker("ps", "-q", "--no-trunc", "--filter", f"id={up_id[:12]}")).split() == [up_id]
    assert up in ok(agent.docker("ps", "--filter", f"ancestor={busybox}", "--format", "{{.Names}}")).split()
    # --last 1: the most recently created container only.
    assert ok(agent.docker("ps", "-a", "--last", "1", "--format", "{{.Names}}")).split() == [down]
    ok(agent.docker("rm", "-f", up))
    pruned = ok(agent.docker("container", "prune", "-f", "--filter", "label!=keep"))
    assert inspect_absent(agent, down), pruned


def inspect_absent(agent, name: str) -> bool:
    return agent.docker("inspect", "--type", "container", name).returncode == 1


def test_inspect_fields(agent, busybox):
    name = unique("insp")
    ok(agent.docker("run", "-d", "--name", name, "-e", "FOO=bar", "--hostname", "boxy",
                    busybox, "sleep", "300"))
    data = inspect(agent, name)
    assert data["Name"] == "/" + name
    assert re.fullmatch(r"[0-9a-f]{64}", data["Id"])
    assert data["State"]["Status"] == "running" and data["State"]["Running"] is True
    assert data["State"]["Pid"] > 0
    assert data["Path"] == "sleep" and data["Args"] == ["300"]
    assert data["Config"]["Image"] == busybox
    assert "FOO=bar" in data["Config"]["Env"]
    assert data["Config"]["Hostname"] == "boxy"
    assert data["Image"].startswith("sha256:")
    assert data["RestartCount"] == 0
    assert data["NetworkSettings"]["IPAddress"]
    assert data["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == data["NetworkSettings"]["IPAddress"]
    assert data["LogPath"]
    ok(agent.docker("rm", "-f", name))


# --------------------------------------------------------------------------- lifecycle


def test_stop_kill_restart_rm_force(agent, busybox):
    name = unique("life")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sleep", "300"))
    ok(agent.docker("stop", "-t", "1", name))
    state = inspect(agent, name)["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137
    ok(agent.docker("start", name))
    assert running(agent, name)
    first_start = inspect(agent, name)["State"]["StartedAt"]
    ok(agent.docker("restart", "-t", "1", name))
    state = inspect(agent, name)["State"]
    assert state["Running"] and state["StartedAt"] != first_start
    ok(agent.docker("kill", name))
    assert inspect(agent, name)["State"]["ExitCode"] == 137
    ok(agent.docker("start", name))
    ok(agent.docker("rm", "-f", name))
    result = agent.docker("inspect", name)
    assert result.returncode == 1 and "No such object" in result.stderr


def test_create_then_start_attached(agent, busybox):
    name = unique("created")
    ok(agent.docker("create", "--name", name, busybox, "sh", "-c", "echo attached-out; exit 6"))
    assert inspect(agent, name)["State"]["Status"] == "created"
    result = agent.docker("start", "-a", name)
    assert result.returncode == 6 and result.stdout == "attached-out\n"
    ok(agent.docker("rm", name))


def test_stop_with_a_handled_sigterm_exits_cleanly(agent, busybox):
    name = unique("term")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sh", "-c",
                    "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done"))
    poll(lambda: "ready" in agent.docker("logs", name).stdout, what="trap installed")
    ok(agent.docker("stop", name))
    state = inspect(agent, name)["State"]
    assert state["ExitCode"] == 0
    assert "bye" in ok(agent.docker("logs", name))
    ok(agent.docker("rm", name))


def test_rename_top_wait(agent, busybox):
    name, new = unique("old"), unique("new")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sh", "-c", "sleep 300"))
    ok(agent.docker("rename", name, new))
    assert inspect(agent, new)["Name"] == "/" + new
    assert agent.docker("inspect", name).returncode == 1
    top = ok(agent.docker("top", new))
    assert "sleep 300" in top and "PID" in top.splitlines()[0]
    # pid 1 of a pid namespace ignores an unhandled SIGTERM (as under Docker): KILL it.
    ok(agent.docker("kill", "-s", "KILL", new))
    assert ok(agent.docker("wait", new)).strip() == "137"
    ok(agent.docker("rm", new))
    waiter = unique("wait")
    ok(agent.docker("run", "-d", "--name", waiter, busybox, "sh", "-c", "exit 7"))
    assert ok(agent.docker("wait", waiter)).strip() == "7"
    ok(agent.docker("rm", waiter))


def test_restart_policy_always(agent, busybox):
    name = unique("always")
    ok(agent.docker("run", "-d", "--name", name, "--restart", "always", busybox, "sh", "-c", "exit 1"))
    poll(lambda: inspect(agent, name)["RestartCount"] >= 2, timeout=60, what="two restarts")
    assert inspect(agent, name)["HostConfig"]["RestartPolicy"]["Name"] == "always"
    ok(agent.docker("rm", "-f", name))


def test_restart_policy_on_failure_limit(agent, busybox):
    name = unique("onfail")
    ok(agent.docker("run", "-d", "--name", name, "--restart", "on-failure:2", busybox,
                    "sh", "-c", "echo attempt; exit 4"))
    poll(lambda: inspect(agent, name)["RestartCount"] == 2 and exited(agent, name),
         timeout=60, what="two restarts then stop")
    assert inspect(agent, name)["State"]["ExitCode"] == 4
    assert ok(agent.docker("logs", name)).count("attempt") == 3
    ok(agent.docker("rm", name))


# --------------------------------------------------------------------------- exec


def test_exec_output_exit_code_env_user_workdir(agent, busybox):
    name = unique("exec")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sleep", "300"))
    assert ok(agent.docker("exec", name, "echo", "from-exec")) == "from-exec\n"
    assert agent.docker("exec", name, "sh", "-c", "exit 5").returncode == 5
    assert ok(agent.docker("exec", "-e", "X=42", name, "sh", "-c", "echo $X")) == "42\n"
    assert ok(agent.docker("exec", "-u", "1000", name, "id", "-u")) == "1000\n"
    assert ok(agent.docker("exec", "-u", "nobody", name, "id", "-un")) == "nobody\n"
    assert ok(agent.docker("exec", "-w", "/tmp", name, "pwd")) == "/tmp\n"
    result = agent.docker("exec", "-i", name, "cat", input="piped into exec\n")
    assert ok(result) == "piped into exec\n"
    ok(agent.docker("exec", "-d", name, "sh", "-c", "echo detached > /tmp/marker"))
    poll(lambda: agent.docker("exec", name, "cat", "/tmp/marker").stdout == "detached\n",
         what="detached exec result")
    ok(agent.docker("rm", "-f", name))


def test_exec_in_stopped_container_is_refused(agent, busybox):
    name = unique("noexec")
    ok(agent.docker("run", "--name", name, busybox, "true"))
    result = agent.docker("exec", name, "true")
    assert result.returncode != 0 and "not running" in result.stderr
    ok(agent.docker("rm", name))


# --------------------------------------------------------------------------- stdio


def test_stdin_piped_with_i(agent, busybox):
    result = agent.docker("run", "-i", "--rm", busybox, "cat", input="hello\nworld\n")
    assert ok(result) == "hello\nworld\n"


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _run_in_pty(argv: list[str], env: dict[str, str], script: list[bytes | tuple[int, int]],
                rows: int, cols: int, timeout: float = 60) -> tuple[int, bytes]:
    """Run `argv` with a real pty as its terminal, type `script`, collect all output.

    A (rows, cols) step resizes the terminal (the kernel sends SIGWINCH to the CLI).
    """
    pid, master = pty.fork()
    if pid == 0:  # child: the pty slave is our controlling terminal
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    _set_winsize(master, rows, cols)
    output = b""
    deadline = time.monotonic() + timeout
    pending = list(script)
    while True:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            raise AssertionError(f"pty session timed out; output so far: {output!r}")
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            # The terminal is idle: type the next line if the shell shows its prompt.
            visible = re.sub(rb"\x1b\[[0-9;]*[A-Za-z]", b"", output).rstrip()
            if pending and visible.endswith((b"#", b"$")):
                step = pending.pop(0)
                if isinstance(step, tuple):
                    _set_winsize(master, *step)
                    step = pending.pop(0)
                os.write(master, step)
                output += b"\n"  # so the same prompt does not trigger the next line
            continue
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        output += data
        if b"\x1b[6n" in data:
            # busybox's line editor asks for the cursor position; answer like a terminal.
            os.write(master, b"\x1b[1;5R")
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), output


def test_interactive_tty(agent, busybox):
    argv = [DOCKER_CLI, "run", "-it", "--rm", busybox, "sh"]
    code, output = _run_in_pty(argv, agent.docker_env(), [
        b"echo typed-$((40+2))\r", b"tty\r", b"stty size\r",
        # The CLI forwards a resize asynchronously: the shell waits for it to arrive.
        (41, 120), b'until [ "$(stty size)" = "41 120" ]; do sleep 0.1; done; echo resized\r',
        b"exit 3\r"], rows=33, cols=101)
    text = output.decode(errors="replace")
    assert "echo typed-$((40+2))" in text          # the terminal echoed what was typed
    assert "typed-42" in text
    assert "33 101" in text, text                  # the CLI's initial resize reached the pty
    assert "\r\nresized\r\n" in text, text         # and so did a later one
    assert code == 3
    # As under Docker, the terminal is a pty of the container's own /dev/pts.
    assert re.search(r"\r\n/dev/pts/\d+\r\n", text), text


def test_exec_interactive_tty(agent, busybox):
    name = unique("exectty")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sleep", "300"))
    argv = [DOCKER_CLI, "exec", "-it", name, "sh"]
    code, output = _run_in_pty(argv, agent.docker_env(), [
        b"echo in-exec-$((6*7))\r", b"stty size\r", b"exit 4\r"], rows=29, cols=97)
    text = output.decode(errors="replace")
    assert "echo in-exec-$((6*7))" in text and "in-exec-42" in text
    assert "29 97" in text, text
    assert code == 4
    ok(agent.docker("rm", "-f", name))


# --------------------------------------------------------------------------- config


def test_env_workdir_user_hostname_entrypoint(agent, busybox):
    out = ok(agent.docker("run", "--rm", "-e", "A=1", "-w", "/tmp", "-u", "1000:1000",
                          "--hostname", "myhost", busybox, "sh", "-c",
                          'echo "$A $(pwd) $(id -u):$(id -g) $(hostname)"'))
    assert out == "1 /tmp 1000:1000 myhost\n"
    out = ok(agent.docker("run", "--rm", "--entrypoint", "echo", busybox, "via", "entrypoint"))
    assert out == "via entrypoint\n"


# --------------------------------------------------------------------------- storage


def test_named_volume_survives_container_removal(agent, busybox):
    vol = unique("vol")
    ok(agent.docker("run", "--rm", "-v", f"{vol}:/data", busybox, "sh", "-c", "echo kept > /data/f"))
    assert ok(agent.docker("run", "--rm", "-v", f"{vol}:/data", busybox, "cat", "/data/f")) == "kept\n"
    assert vol in ok(agent.docker("volume", "ls", "--format", "{{.Name}}")).split()
    ok(agent.docker("volume", "rm", vol))


def test_bind_mounts_rw_and_ro(agent, busybox, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    out = ok(agent.docker("run", "--rm", "-v", f"{host}:/x", busybox, "sh", "-c",
                          "cat /x/in.txt; echo from container > /x/out.txt"))
    assert out == "from host\n"
    assert (host / "out.txt").read_text() == "from container\n"
    result = agent.docker("run", "--rm", "-v", f"{host}:/x:ro", busybox, "sh", "-c",
                          "cat /x/in.txt && touch /x/nope")
    assert result.returncode != 0 and "from host" in result.stdout
    assert "Read-only file system" in result.stderr
    assert not (host / "nope").exists()


def test_mount_flag_bind_volume_tmpfs(agent, busybox, tmp_path):
    host = tmp_path / "m"
    host.mkdir()
    (host / "a").write_text("A\n")
    vol = unique("mvol")
    out = ok(agent.docker(
        "run", "--rm",
        "--mount", f"type=bind,source={host},target=/b,readonly",
        "--mount", f"type=volume,source={vol},target=/v",
        "--mount", "type=tmpfs,target=/t",
        busybox, "sh", "-c",
        "cat /b/a; echo v > /v/x; cat /v/x; grep ' /t ' /proc/mounts | cut -d' ' -f3"))
    assert out == "A\nv\ntmpfs\n"
    ok(agent.docker("volume", "rm", vol))


# --------------------------------------------------------------------------- network


def test_published_port_reaches_httpd(agent, busybox):
    name = unique("web")
    ok(agent.docker("run", "-d", "--name", name, "-p", "127.0.0.1::80", busybox, "sh", "-c",
                    "mkdir /www && echo served-by-dockyard > /www/index.html && httpd -f -p 80 -h /www"))
    port_out = ok(agent.docker("port", name, "80")).strip()
    m = re.fullmatch(r"127\.0\.0\.1:(\d+)", port_out.splitlines()[0])
    assert m, port_out

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/index.html", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return None

    assert poll(fetch, timeout=30, what="httpd answering") == "served-by-dockyard\n"
    ports = inspect(agent, name)["NetworkSettings"]["Ports"]["80/tcp"]
    assert ports == [{"HostIp": "127.0.0.1", "HostPort": m.group(1)}]
    ok(agent.docker("rm", "-f", name))


def test_network_none_has_only_loopback(agent, busybox):
    out = ok(agent.docker("run", "--rm", "--network", "none", busybox, "ls", "/sys/class/net"))
    assert out.split() == ["lo"]


def test_network_host_sees_host_interfaces(agent, busybox):
    out = ok(agent.docker("run", "--rm", "--network", "host", busybox, "ls", "/sys/class/net"))
    assert sorted(out.split()) == sorted(os.listdir("/sys/class/net"))


def test_networks_list_has_the_defaults(agent):
    names = ok(agent.docker("network", "ls", "--format", "{{.Name}}")).split()
    assert sorted(names) == ["bridge", "host", "none"]
    name = unique("net")
    created = ok(agent.docker("network", "create", name)).strip()
    try:
        assert ok(agent.docker("network", "ls", "--filter", "type=custom", "--format", "{{.Name}}")).split() == [name]
        assert all(len(i) == 64 for i in ok(agent.docker("network", "ls", "--no-trunc", "-q")).split())
    finally:
        ok(agent.docker("network", "rm", created))


# --------------------------------------------------------------------------- limits, isolation


def test_memory_limit_oom_kills(agent, busybox):
    name = unique("oom")
    result = agent.docker("run", "--name", name, "--memory", "32m", busybox, "tail", "/dev/zero",
                          timeout=120)
    assert result.returncode == 137
    state = inspect(agent, name)["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    assert inspect(agent, name)["HostConfig"]["Memory"] == 32 * 1024 * 1024
    ok(agent.docker("rm", name))


def test_pids_limit_makes_fork_fail(agent, busybox):
    result = agent.docker("run", "--rm", "--pids-limit", "10", busybox, "sh", "-c",
                          "for i in $(seq 1 30); do sleep 30 & done; wait")
    assert re.search(r"can't fork|Resource temporarily unavailable|fork", result.stderr), result.stderr


def test_stats_from_cgroups(agent, busybox):
    name = unique("stats")
    ok(agent.docker("run", "-d", "--name", name, "--memory", "64m", busybox, "sleep", "300"))
    out = ok(agent.docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", name))
    got_name, usage, _, limit, pids = out.split()
    assert got_name == name and limit == "64MiB" and pids == "1", out
    assert re.fullmatch(r"[\d.]+[KM]iB", usage), out
    ok(agent.docker("rm", "-f", name))


def test_stats_no_stream_shows_the_cpu_use_of_a_busy_container(agent, busybox):
    name = unique("busy")
    ok(agent.docker("run", "-d", "--name", name, busybox, "sh", "-c", "while :; do :; done"))
    try:
        out = ok(agent.docker("stats", "--no-stream", "--format", "{{.CPUPerc}}", name))
        # One core spinning: ~100 % as docker counts (per core); 0.00 % without a previous sample.
        assert float(out.strip().rstrip("%")) > 20, out
    finally:
        ok(agent.docker("rm", "-f", name))


def test_sizes_count_the_writable_layer(agent, busybox):
    name = unique("size")
    ok(agent.docker("run", "--name", name, busybox, "dd", "if=/dev/zero", "of=/blob", "bs=1024", "count=3072"))
    try:
        data = json.loads(ok(agent.docker("inspect", "--size", name)))[0]
        image_size = json.loads(ok(agent.docker("image", "inspect", busybox)))[0]["Size"]
        assert 3 << 20 <= data["SizeRw"] < 4 << 20, data["SizeRw"]
        assert data["SizeRootFs"] == data["SizeRw"] + image_size
        listed = ok(agent.docker("ps", "-a", "-s", "--filter", f"name={name}", "--format", "{{.Size}}"))
        assert listed.startswith("3.1") and "MB" in listed, listed   # "3.15MB (virtual 4.2MB)"
    finally:
        ok(agent.docker("rm", "-f", name))


def test_isolation(agent, busybox):
    out = ok(agent.docker("run", "--rm", busybox, "ps", "-o", "pid,comm"))
    lines = out.strip().splitlines()[1:]
    assert len(lines) == 1 and lines[0].split() == ["1", "ps"], out
    result = agent.docker("run", "--rm", busybox, "mount", "-t", "tmpfs", "none", "/mnt")
    assert result.returncode != 0
    status = ok(agent.docker("run", "--rm", busybox, "cat", "/proc/self/status"))
    assert re.search(r"^CapEff:\s+00000000a80425fb$", status, re.M), status
    assert re.search(r"^NoNewPrivs:\s+0$", status, re.M), status    # only when asked, as Docker
    assert re.search(r"^Seccomp:\s+2$", status, re.M), status


# --------------------------------------------------------------------------- images, volumes, events


def test_images_ls_inspect_history_tag_rmi_prune(agent, busybox):
    listing = ok(agent.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"))
    assert any(line.startswith(busybox + " ") for line in listing.splitlines()), listing
    data = json.loads(ok(agent.docker("image", "inspect", busybox)))[0]
    assert busybox in data["RepoTags"] and data["Os"] == "linux"
    assert data["RootFS"]["Type"] == "layers" and data["RootFS"]["Layers"]
    assert data["Config"]["Cmd"] == ["sh"]
    history = ok(agent.docker("history", busybox))
    assert "CREATED" in history.splitlines()[0]
    alias = f"dockyard-test/alias:{uuid.uuid4().hex[:6]}"
    ok(agent.docker("tag", busybox, alias))
    tagged = json.loads(ok(agent.docker("image", "inspect", alias)))[0]
    assert tagged["Id"] == data["Id"]
    removed = ok(agent.docker("rmi", alias))
    assert "Untagged" in removed
    assert agent.docker("image", "inspect", alias).returncode == 1
    assert agent.docker("image", "inspect", busybox).returncode == 0  # still tagged elsewhere
    ok(agent.docker("image", "prune", "-f"))
    result = agent.docker("rmi", "nosuch-image:tag")
    assert result.returncode == 1 and "No such image" in result.stderr


def test_image_inspect_container_config_matches_dockerd(agent, dockerd, test_images):
    """docker-compose 1.29 reads an image's ContainerConfig when it recreates a container."""
    ref = test_images["busybox"]
    found = []
    for engine in (agent, dockerd):
        ok(engine.docker("pull", "-q", ref))
        data = json.loads(ok(engine.docker("image", "inspect", ref)))[0]
        found.append((data.get("Container"), data.get("ContainerConfig")))
    assert found[0] == found[1]
    assert isinstance(found[0][1], dict)


def test_rmi_of_an_image_in_use_is_refused(agent, busybox):
    name = unique("user")
    ok(agent.docker("create", "--name", name, busybox, "true"))
    # By id: refused whatever other tests tagged the shared image with (by one of several
    # names, rmi only untags, as dockerd does).
    image_id = ok(agent.docker("image", "inspect", "-f", "{{.Id}}", busybox)).strip()
    result = agent.docker("rmi", image_id)
    assert result.returncode == 1 and re.search(r"conflict|being used|in use", result.stderr, re.I)
    ok(agent.docker("rm", name))


def test_volume_commands(agent, busybox):
    vol = unique("v")
    assert ok(agent.docker("volume", "create", "--label", "k=v", vol)).strip() == vol
    assert vol in ok(agent.docker("volume", "ls", "-q")).split()
    data = json.loads(ok(agent.docker("volume", "inspect", vol)))[0]
    assert data["Name"] == vol and data["Driver"] == "local" and data["Labels"] == {"k": "v"}
    user = unique("vuser")
    ok(agent.docker("create", "--name", user, "-v", f"{vol}:/d", busybox, "true"))
    result = agent.docker("volume", "rm", vol)
    assert result.returncode == 1 and re.search(r"in use", result.stderr, re.I)
    ok(agent.docker("rm", user))
    ok(agent.docker("volume", "rm", vol))
    assert agent.docker("volume", "inspect", vol).returncode == 1
    spare = unique("spare")
    ok(agent.docker("volume", "create", spare))
    ok(agent.docker("volume", "prune", "-a", "-f"))
    assert spare not in ok(agent.docker("volume", "ls", "-q")).split()


def test_events_since_until(agent, busybox):
    start = time.time()
    name = unique("ev")
    ok(agent.docker("run", "--name", name, busybox, "true"))
    ok(agent.docker("rm", name))
    end = time.time() + 1
    out = ok(agent.docker("events", "--since", f"{start - 1:.3f}", "--until", f"{end:.3f}",
                          "--filter", f"container={name}", "--format", "{{.Action}}", timeout=30))
    actions = out.split()
    for action in ("create", "start", "die", "destroy"):
        assert action in actions, out
    assert actions.index("create") < actions.index("start") < actions.index("die")


def test_events_stream_live(agent, busybox):
    proc = subprocess.Popen([DOCKER_CLI, "events", "--format", "{{.Type}} {{.Action}}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=agent.docker_env(),
                            bufsize=0)
    try:
        name = unique("live")
        received = bytearray()

        def saw_event() -> bool:
            # The CLI subscribes asynchronously: trigger again until an event arrives.
            ok(agent.docker("volume", "create", name))
            ok(agent.docker("volume", "rm", name))
            while select.select([proc.stdout], [], [], 1.0)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                received.extend(chunk)
                if b"volume create" in received and b"volume destroy" in received:
                    return True
            return False

        poll(saw_event, timeout=30, what="live volume events")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_system_df(agent, busybox):
    out = ok(agent.docker("system", "df"))
    assert "Images" in out and "Containers" in out and "Local Volumes" in out
