"""The container process launcher against a real busybox rootfs, real namespaces and cgroups.

Runs as root on the host: every container gets real overlayfs, pid/mount/uts/ipc/net
namespaces and v1/v2 cgroups, exactly as in the guest VM.
"""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import struct
import subprocess
import termios
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.containers import process as container_process
from runtime.containers.process import ContainerProcess, cleanup, container_pids, exec_in, launch
from runtime.containers.spec import BindMount, ContainerSpec, ProcessSpec, Stdio, TmpfsMount
from runtime.containers.user import UserLookupError, resolve_user
from runtime.errors import Conflict, ContainerStartError, RuntimeFailure
from runtime.linux import cgroups
from runtime.linux.cgroup_limits import Limits
from tests.support.rootfs import PATH_ENV, make_busybox_rootfs

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


@dataclass
class Result:
    """What a finished container left behind."""

    code: int
    out: str
    err: str
    process: ContainerProcess


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


@pytest.fixture
def make_spec(tmp_path, rootfs):
    made: list[ContainerSpec] = []

    def factory(args: list[str], lower_dirs: list[Path] | None = None, **kwargs) -> ContainerSpec:
        process_fields = {k: kwargs.pop(k) for k in ("user", "tty", "cwd", "env", "capabilities",
                                                     "privileged", "no_new_privileges")
                          if k in kwargs}
        process_fields.setdefault("env", [PATH_ENV])
        cid = uuid.uuid4().hex
        base = tmp_path / cid[:12]
        (base / "upper").mkdir(parents=True)
        (base / "work").mkdir()
        spec = ContainerSpec(id=cid, lower_dirs=lower_dirs or [rootfs], upper_dir=base / "upper",
                             work_dir=base / "work", process=ProcessSpec(args=args, **process_fields),
                             hostname=kwargs.pop("hostname", "testbox"), **kwargs)
        made.append(spec)
        return spec

    yield factory
    for spec in made:
        cleanup(spec)


def _read_all(fd: int, sink: list[bytes]) -> None:
    while chunk := os.read(fd, 65536):
        sink.append(chunk)
    os.close(fd)


def start(spec: ContainerSpec) -> tuple[ContainerProcess, int, int]:
    """Launch with pipes for stdout/stderr; returns (process, stdout read fd, stderr read fd)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    stdin = os.open(os.devnull, os.O_RDONLY)
    try:
        proc = launch(spec, Stdio(stdin, out_w, err_w))
    finally:
        for fd in (stdin, out_w, err_w):
            os.close(fd)
    return proc, out_r, err_r


def finish(proc: ContainerProcess, out_r: int, err_r: int) -> Result:
    out: list[bytes] = []
    err: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(err_r, err))
    reader.start()
    _read_all(out_r, out)
    reader.join()
    code = proc.wait()
    return Result(code, b"".join(out).decode(), b"".join(err).decode(), proc)


def run(spec: ContainerSpec) -> Result:
    return finish(*start(spec))


def run_exec(container: ContainerProcess, spec: ContainerSpec, process: ProcessSpec) -> Result:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    stdin = os.open(os.devnull, os.O_RDONLY)
    try:
        proc = exec_in(container, spec, process, Stdio(stdin, out_w, err_w))
    finally:
        for fd in (stdin, out_w, err_w):
            os.close(fd)
    return finish(proc, out_r, err_r)


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


# ---------------------------------------------------------------- basics


def test_output_and_exit_code(make_spec):
    result = run(make_spec(["sh", "-c", "echo out; echo err >&2; exit 3"]))
    assert (result.code, result.out, result.err) == (3, "out\n", "err\n")


def test_pid_namespace_shows_only_the_container(make_spec):
    result = run(make_spec(["sh", "-c", "ps -o pid,args; true"]))
    rows = [line.split(None, 1) for line in result.out.strip().splitlines()[1:]]
    assert result.code == 0
    assert [pid for pid, _ in rows] == ["1", "2"], result.out
    assert rows[0][1].startswith("sh -c ps")


def test_hostname_and_fresh_network_namespace(make_spec):
    result = run(make_spec(["sh", "-c", "hostname; ls /sys/class/net; cat /sys/class/net/lo/operstate"],
                           hostname="box1"))
    lines = result.out.split()
    assert lines[0] == "box1"
    assert lines[1] == "lo"          # only loopback in a fresh namespace
    assert lines[2] in ("unknown", "up")


def test_dev_has_the_standard_devices(make_spec):
    result = run(make_spec(["sh", "-c", "ls /dev; head -c 4 /dev/zero | wc -c; echo x > /dev/null; "
                                        "ls -l /dev/ptmx; df /dev/shm | tail -1"]))
    assert result.code == 0, result.err
    for name in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
                 "fd", "stdin", "stdout", "stderr", "ptmx"):
        assert name in result.out.split(), result.out
    assert "\n4\n" in result.out
    assert "-> pts/ptmx" in result.out


# ---------------------------------------------------------------- confinement


def test_cannot_mount(make_spec):
    result = run(make_spec(["mount", "-t", "tmpfs", "x", "/mnt"]))
    assert result.code != 0
    assert "denied" in result.err or "not permitted" in result.err


def test_root_gets_docker_default_capabilities(make_spec):
    result = run(make_spec(["cat", "/proc/self/status"]))
    assert status_field(result.out, "CapEff") == DOCKER_DEFAULT_CAPS
    assert status_field(result.out, "CapPrm") == DOCKER_DEFAULT_CAPS
    assert status_field(result.out, "CapBnd") == DOCKER_DEFAULT_CAPS
    assert status_field(result.out, "CapInh") == "0000000000000000"
    assert status_field(result.out, "NoNewPrivs") == "0"     # Docker sets it only when asked
    assert status_field(result.out, "Seccomp") == "2"


def test_non_root_user_has_no_effective_capabilities(make_spec):
    result = run(make_spec(["cat", "/proc/self/status"], user="app"))
    assert status_field(result.out, "CapEff") == "0000000000000000"
    assert status_field(result.out, "CapBnd") == DOCKER_DEFAULT_CAPS
    assert status_field(result.out, "Uid").split()[0] == "1000"


def test_privileged_keeps_every_capability_and_sees_the_host(make_spec):
    host_devices = sorted(e.name for e in os.scandir("/dev")
                          if stat.S_ISCHR(e.stat(follow_symlinks=False).st_mode) and
                          e.name not in ("null", "zero", "full", "random", "urandom", "tty",
                                         "console", "ptmx"))
    assert host_devices, "the host has extra character devices"
    result = run(make_spec(["sh", "-c", "cat /proc/self/status; grep ' /sys ' /proc/mounts; "
                                        f"test -c /dev/{host_devices[0]} && echo HOSTDEV; "
                                        "wc -c < /proc/interrupts"], privileged=True))
    assert int(status_field(result.out, "CapEff"), 16) > int(DOCKER_DEFAULT_CAPS, 16)
    assert " sysfs rw," in result.out
    assert "HOSTDEV" in result.out
    assert result.out.splitlines()[-1] != "0"     # not masked


def test_masked_and_readonly_proc_paths(make_spec):
    # /proc/kcore does not exist on every kernel; these masked paths exist on this host.
    assert Path("/proc/interrupts").read_text() and os.listdir("/sys/firmware")
    result = run(make_spec(["sh", "-c", "wc -c < /proc/interrupts; ls /sys/firmware | wc -l; "
                                        "cat /proc/kcore 2>/dev/null | wc -c; "
                                        "echo x > /proc/sys/kernel/domainname && echo WROTE; "
                                        "grep ' /proc/sys ' /proc/mounts"]))
    counts, mount_line = result.out.splitlines()[:3], result.out.splitlines()[3]
    assert counts == ["0", "0", "0"], result.out
    assert "Read-only file system" in result.err
    # The read-only remount keeps the flags /proc was mounted with.
    assert mount_line.split()[3].split(",")[:4] == ["ro", "nosuid", "nodev", "noexec"], mount_line


def test_writes_go_to_the_upper_layer(make_spec, rootfs):
    spec = make_spec(["sh", "-c", "echo new > /created; echo changed > /etc/hostname; rm /etc/group"])
    assert run(spec).code == 0
    assert (spec.upper_dir / "created").read_text() == "new\n"
    assert (spec.upper_dir / "etc/hostname").read_text() == "changed\n"
    assert (rootfs / "etc/hostname").read_text() == "image-hostname\n"
    assert (rootfs / "etc/group").exists()
    assert not (rootfs / "created").exists()


def test_readonly_rootfs(make_spec):
    result = run(make_spec(["sh", "-c", "touch /x || echo DENIED; touch /tmp/y && echo TMPOK"],
                           readonly_rootfs=True, mounts=[TmpfsMount("/tmp", "size=1m")]))
    assert "DENIED" in result.out and "TMPOK" in result.out


def test_bind_mounts_rw_and_ro(make_spec, tmp_path):
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "given").write_text("from host\n")
    etc_hosts = tmp_path / "hosts"
    etc_hosts.write_text("127.0.0.1 localhost special\n")
    spec = make_spec(["sh", "-c", "echo hi > /data/rw/file; cat /data/ro/given; "
                                  "echo no > /data/ro/file || echo RO-DENIED; cat /etc/hosts"],
                     mounts=[BindMount(str(rw), "/data/rw"), BindMount(str(ro), "/data/ro", readonly=True)],
                     etc_files={"/etc/hosts": etc_hosts})
    result = run(spec)
    assert (rw / "file").read_text() == "hi\n"
    assert not (ro / "file").exists()
    assert result.out == "from host\nRO-DENIED\n127.0.0.1 localhost special\n"


def test_missing_bind_source_is_a_start_error(make_spec, tmp_path):
    spec = make_spec(["true"], mounts=[BindMount(str(tmp_path / "absent"), "/x")])
    with pytest.raises(ContainerStartError, match="bind source path does not exist"):
        run(spec)


# ---------------------------------------------------------------- users and commands


@pytest.mark.parametrize("user, expected", [
    ("app", "uid=1000(app) gid=1000(app) groups=50(staff)"),
    ("1000:1000", "uid=1000(app) gid=1000(app) groups=1000(app)"),
    ("1234", "uid=1234 gid=0(root) groups=0(root)"),
    ("", "uid=0(root) gid=0(root) groups=0(root)"),
])
def test_user_resolution(make_spec, user, expected):
    result = run(make_spec(["sh", "-c", "id; echo $HOME"], user=user))
    assert result.code == 0, result.err
    id_line, home = result.out.splitlines()
    assert id_line.startswith(expected.split(" groups=")[0]), id_line
    assert home == {"app": "/home/app", "1000:1000": "/home/app", "1234": "/", "": "/root"}[user]


def test_unknown_user_is_a_clear_error(make_spec):
    with pytest.raises(ContainerStartError) as info:
        run(make_spec(["true"], user="nosuch"))
    assert str(info.value) == "unable to find user nosuch: no matching entries in passwd file"


def test_missing_command_exits_127(make_spec):
    spec = make_spec(["no-such-program"])
    with pytest.raises(ContainerStartError) as info:
        run(spec)
    assert info.value.exit_code == 127
    assert str(info.value) == 'exec: "no-such-program": executable file not found in $PATH'
    assert not any(d.exists() for d in cgroups.container_cgroup(spec.id).dirs)


def test_engine_fds_do_not_leak_into_the_container(make_spec, tmp_path):
    leaked = os.open(tmp_path / "engine-file", os.O_WRONLY | os.O_CREAT)
    os.set_inheritable(leaked, True)
    try:
        result = run(make_spec(["sh", "-c", "ls /proc/self/fd; true"]))
    finally:
        os.close(leaked)
    assert sorted(int(fd) for fd in result.out.split()) == [0, 1, 2, 3]   # 3: ls's own directory


def test_non_executable_file_exits_126(make_spec):
    with pytest.raises(ContainerStartError) as info:
        run(make_spec(["/etc/passwd"]))
    assert info.value.exit_code == 126
    assert "permission denied" in str(info.value)


def test_working_directory_is_created(make_spec):
    result = run(make_spec(["pwd"], cwd="/srv/app/work"))
    assert result.out == "/srv/app/work\n"


def test_env_reaches_the_process(make_spec):
    result = run(make_spec(["sh", "-c", "echo $GREETING"], env=[PATH_ENV, "GREETING=hello there"]))
    assert result.out == "hello there\n"


# ---------------------------------------------------------------- signals, exec, tty


def test_killed_container_reports_137(make_spec):
    proc, out_r, err_r = start(make_spec(["sleep", "100"]))
    assert proc.signal(signal.SIGKILL)
    assert finish(proc, out_r, err_r).code == 137
    assert not proc.signal(signal.SIGTERM)     # already gone


def test_exec_joins_the_container(make_spec):
    spec = make_spec(["sleep", "100"], hostname="execbox")
    container, out_r, err_r = start(spec)
    try:
        result = run_exec(container, spec, ProcessSpec(
            args=["sh", "-c", "ps -o pid,args; hostname; id -u; cat /proc/self/status"],
            env=[PATH_ENV], user="app"))
        assert result.code == 0, result.err
        assert "    1 sleep 100" in result.out
        assert "execbox" in result.out
        assert "\n1000\n" in result.out
        assert status_field(result.out, "CapEff") == "0000000000000000"
        assert status_field(result.out, "CapBnd") == DOCKER_DEFAULT_CAPS
        assert run_exec(container, spec, ProcessSpec(args=["sh", "-c", "exit 7"], env=[PATH_ENV])).code == 7
        assert container.pid in container_pids(spec)
        with pytest.raises(ContainerStartError) as info:
            run_exec(container, spec, ProcessSpec(args=["nothere"], env=[PATH_ENV]))
        assert info.value.exit_code == 127
    finally:
        container.signal(signal.SIGKILL)
        finish(container, out_r, err_r)


def test_tty_container_sees_a_terminal(make_spec):
    master, slave = os.openpty()
    spec = make_spec(["sh", "-c", "test -t 0 && echo IS-A-TTY; tty"], tty=True)
    try:
        proc = launch(spec, Stdio(slave, slave, slave))
    finally:
        os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:       # EIO: every slave holder closed
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert proc.wait() == 0
    text = output.decode().replace("\r", "")
    assert "IS-A-TTY\n/dev/" in text, text


def _read_until(master: int, output: bytearray, marker: bytes) -> None:
    """Read the pty until `marker` has appeared (EOF/EIO ends the wait too)."""
    while marker not in output:
        try:
            chunk = os.read(master, 4096)
        except OSError:       # EIO: every slave holder closed
            return
        if not chunk:
            return
        output += chunk


def test_tty_container_gets_a_pty_of_its_own_devpts(make_spec):
    # As under Docker (runc's console socket): the pty comes from the container's
    # devpts instance, so it is /dev/pts/0 there and /dev/console is the same terminal.
    script = ("tty; ls -l /proc/self/fd/0; stat -L -c DEV=%d /proc/self/fd/0 /dev/console /dev/pts/ptmx; "
              "stty size; echo READY; read line; stty size; echo DONE")
    spec = make_spec(["sh", "-c", script], tty=True)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        proc = launch(spec, Stdio(null, null, null), console=True, console_size=(33, 101))
    finally:
        os.close(null)
    master = proc.take_console()
    assert master is not None and proc.take_console() is None
    output = bytearray()
    try:
        st = os.fstat(master)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(5, 2)   # a ptmx...
        assert st.st_dev != os.stat("/dev/pts/ptmx").st_dev                   # ...not the host's
        _read_until(master, output, b"READY\r\n")
        # A resize through the master reaches the running process.
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 120, 0, 0))
        os.write(master, b"go\n")
        _read_until(master, output, b"DONE\r\n")
    finally:
        os.close(master)
    assert proc.wait() == 0
    lines = output.decode().replace("\r", "").splitlines()
    assert lines[0] == "/dev/pts/0", lines
    assert lines[1].endswith("/proc/self/fd/0 -> /dev/pts/0"), lines
    devs = [line for line in lines if line.startswith("DEV=")]
    assert len(devs) == 3 and len(set(devs)) == 1, lines      # its own devpts, also /dev/console
    assert lines[lines.index("READY") - 1] == "33 101", lines  # the initial size
    assert lines[lines.index("DONE") - 1] == "41 120", lines


def test_tty_console_start_failure_reports_and_leaks_nothing(make_spec):
    spec = make_spec(["nothere"], tty=True)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ContainerStartError) as info:
        launch(spec, Stdio(0, 1, 2), console=True)
    assert info.value.exit_code == 127
    assert set(os.listdir("/proc/self/fd")) == before


# ---------------------------------------------------------------- layers


def test_many_lower_layers(make_spec, tmp_path, rootfs):
    layers = [rootfs]
    for index in range(1, 150):
        layer = tmp_path / "layers" / f"layer-with-a-fairly-long-name-{index:04d}"
        layer.mkdir(parents=True)
        (layer / f"file-{index}").write_text(f"{index}\n")
        layers.append(layer)
    (layers[-1] / "file-1").write_text("top wins\n")
    result = run(make_spec(["sh", "-c", "cat /file-1 /file-77 /file-149"], lower_dirs=layers))
    assert result.code == 0, result.err
    assert result.out == "top wins\n77\n149\n"


# ---------------------------------------------------------------- cgroup limits


def test_memory_limit_oom_kills(make_spec):
    spec = make_spec(["tail", "/dev/zero"], limits=Limits(memory_bytes=32 * 1024 * 1024))
    result = run(spec)
    assert result.code == 137
    assert result.process.oom_killed()


def test_no_oom_reported_without_one(make_spec):
    result = run(make_spec(["true"], limits=Limits(memory_bytes=32 * 1024 * 1024)))
    assert result.code == 0
    assert not result.process.oom_killed()


def test_pids_limit_stops_forks(make_spec):
    spec = make_spec(["sh", "-c", "for i in $(seq 30); do sleep 100 & done; echo done"],
                     limits=Limits(pids_limit=10))
    result = run(spec)
    assert "can't fork" in result.err


def test_cpu_quota_written_and_pids_listed(make_spec):
    spec = make_spec(["sleep", "100"], limits=Limits(nano_cpus=500_000_000, cpu_shares=512))
    proc, out_r, err_r = start(spec)
    try:
        cg = cgroups.container_cgroup(spec.id)
        if cg.cpu_v2:
            assert (cg.cpu / "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            assert (cg.cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (cg.cpu / "cpu.shares").read_text().strip() == "512"
        assert container_pids(spec) == [proc.pid]
    finally:
        proc.signal(signal.SIGKILL)
        finish(proc, out_r, err_r)
    cleanup(spec)
    cleanup(spec)   # idempotent
    assert not any(d.exists() for d in cgroups.container_cgroup(spec.id).dirs)


def test_cleanup_kills_leftovers(make_spec):
    spec = make_spec(["sleep", "100"])
    proc, out_r, err_r = start(spec)
    cleanup(spec)
    assert finish(proc, out_r, err_r).code == 137


def test_launch_returns_after_exec(make_spec):
    # launch() only returns once the command has replaced the launcher:
    # /proc/<pid>/exe is then busybox, never python.
    spec = make_spec(["sleep", "100"])
    proc, out_r, err_r = start(spec)
    try:
        assert os.readlink(f"/proc/{proc.pid}/exe").endswith("busybox")
    finally:
        proc.signal(signal.SIGKILL)
        finish(proc, out_r, err_r)


# ---------------------------------------------------------------- engine-like use


def test_launch_from_worker_threads_concurrently(make_spec):
    # The engine launches from request threads; Python ignores SIGPIPE, which must
    # not leak into containers, and concurrent launches must not hold each other's pipes.
    specs = [make_spec(["sh", "-c", "grep -E '^(SigIgn|SigBlk)' /proc/self/status; echo $$"])
             for _ in range(6)]
    results: dict[int, Result] = {}

    def worker(index: int) -> None:
        results[index] = run(specs[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(specs)
    for result in results.values():
        assert result.code == 0, result.err
        assert status_field(result.out, "SigIgn") == "0000000000000000"
        assert status_field(result.out, "SigBlk") == "0000000000000000"
        assert result.out.splitlines()[-1] == "1"
    # The launching threads are back in the engine's own pid namespace.
    assert os.readlink("/proc/thread-self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")


def test_host_network_and_joined_network_namespace(make_spec):
    result = run(make_spec(["readlink", "/proc/self/ns/net"], host_network=True))
    assert result.out.strip() == os.readlink("/proc/self/ns/net")

    netns = f"dyt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        path = f"/run/netns/{netns}"
        result = run(make_spec(["readlink", "/proc/self/ns/net"], netns_path=path))
        assert result.out.strip() == f"net:[{os.stat(path).st_ino}]"
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=True)

    result = run(make_spec(["readlink", "/proc/self/ns/net"]))
    assert result.out.strip() != os.readlink("/proc/self/ns/net")


def test_exec_with_tty_and_working_directory(make_spec):
    spec = make_spec(["sleep", "100"])
    container, out_r, err_r = start(spec)
    master, slave = os.openpty()
    try:
        proc = exec_in(container.pid, spec, ProcessSpec(
            args=["sh", "-c", "test -t 0 && echo TTY; pwd"], env=[PATH_ENV], tty=True, cwd="/tmp/w"),
            Stdio(slave, slave, slave))
        os.close(slave)
        output = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait() == 0
        assert output.decode().replace("\r", "") == "TTY\n/tmp/w\n"
    finally:
        os.close(master)
        container.signal(signal.SIGKILL)
        finish(container, out_r, err_r)


def test_exec_into_a_stopped_container_is_a_conflict(make_spec):
    spec = make_spec(["true"])
    proc = run(spec).process
    with pytest.raises(Conflict):
        exec_in(proc, spec, ProcessSpec(args=["true"]), Stdio(0, 1, 2))
    with pytest.raises(Conflict):
        exec_in(proc.pid, spec, ProcessSpec(args=["true"]), Stdio(0, 1, 2))


# ---------------------------------------------------------------- /etc/passwd parsing


def test_resolve_user_rules(tmp_path):
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n"
                      "broken line\n")
    group.write_text("root:x:0:\nwww:x:33:\nextra:x:70:web,other\nlogs:x:71:web\n")

    def resolve(user: str):
        return resolve_user(user, str(passwd), str(group))

    web = resolve("web")
    assert (web.uid, web.gid, web.groups, web.home) == (33, 33, [70, 71], "/var/www")
    assert (resolve("web:logs").gid, resolve("web:logs").groups) == (71, [71])
    assert (resolve("33:500").uid, resolve("33:500").gid) == (33, 500)
    assert (resolve("4242").uid, resolve("4242").gid, resolve("4242").home) == (4242, 0, "/")
    assert resolve("").home == "/root"
    with pytest.raises(UserLookupError, match="unable to find user ghost: no matching entries in passwd file"):
        resolve("ghost")
    with pytest.raises(UserLookupError, match="unable to find group nogrp: no matching entries in group file"):
        resolve("web:nogrp")
    missing = resolve_user("7", str(tmp_path / "absent"), str(tmp_path / "absent"))
    assert (missing.uid, missing.gid) == (7, 0)


def test_cgroup_namespace_and_mount(make_spec, monkeypatch):
    # On a pure cgroup v2 host (our VM) each container gets its own cgroup namespace
    # with cgroup2 at /sys/fs/cgroup. This host is hybrid; its cgroup2 tree is real
    # enough to exercise the same calls, so force the choice.
    from runtime.containers.cgroup_mounts import CgroupView

    monkeypatch.setattr(container_process.cgroup_mounts, "plan",
                        lambda *args: CgroupView(namespace=True, fresh_v2=True))
    spec = make_spec(["sh", "-c", "grep '^0::' /proc/self/cgroup; grep ' /sys/fs/cgroup ' /proc/mounts; "
                                  "echo READY; sleep 100"])
    container, out_r, err_r = start(spec)
    seen = b""
    try:
        while b"READY\n" not in seen:          # the container reached its sleep
            chunk = os.read(out_r, 4096)
            assert chunk, seen
            seen += chunk
        result = run_exec(container, spec, ProcessSpec(args=["cat", "/proc/self/cgroup"], env=[PATH_ENV]))
        assert "0::/\n" in result.out
    finally:
        container.signal(signal.SIGKILL)
        finish(container, out_r, err_r)
    lines = seen.decode().splitlines()
    assert lines[0] == "0::/"
    assert lines[1].startswith("cgroup /sys/fs/cgroup cgroup2 ro,"), lines


def test_impossible_limit_is_a_clear_error_and_leaves_no_cgroup(make_spec):
    # Swap total below the memory limit: the kernel refuses it.
    spec = make_spec(["true"], limits=Limits(memory_bytes=64 << 20, memory_swap_bytes=32 << 20))
    with pytest.raises(RuntimeFailure, match="cgroup: cannot write"):
        run(spec)
    assert not any(d.exists() for d in cgroups.container_cgroup(spec.id).dirs)


def test_signals_ignored_in_the_engine_do_not_reach_the_container(make_spec):
    # glibc refuses sigaction on its internal signals (32, 33), yet a raw syscall in
    # the engine's process can still set them ignored, and ignored survives exec.
    import ctypes

    from runtime.linux import syscalls as linux_syscalls

    libc = ctypes.CDLL(None, use_errno=True)
    number = linux_syscalls._syscall_number("rt_sigaction")
    ignore = linux_syscalls._KernelSigaction(1, 0, 0, 0)  # SIG_IGN
    old = linux_syscalls._KernelSigaction()
    assert libc.syscall(ctypes.c_long(number), ctypes.c_int(32), ctypes.byref(ignore),
                        ctypes.byref(old), ctypes.c_size_t(8)) == 0
    try:
        result = run(make_spec(["grep", "-E", "^SigIgn", "/proc/self/status"]))
    finally:
        libc.syscall(ctypes.c_long(number), ctypes.c_int(32), ctypes.byref(old), None, ctypes.c_size_t(8))
    assert result.code == 0, result.err
    assert status_field(result.out, "SigIgn") == "0000000000000000"
