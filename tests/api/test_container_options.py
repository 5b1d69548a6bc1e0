"""Everyday `docker run` options, through the real docker CLI, side by side with Debian's dockerd.

Each option's effect is read from inside the container (/proc, ulimit, df, id,
ps); where Docker defines the output or the error, the same command runs on
the reference dockerd (with `--network none`, as the fixture has no bridge)
and the two must agree.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid

import pytest

from tests.support.agent import http_request
from tests.support.waiting import poll


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"docker failed ({result.returncode}): {result.args}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def image(agent, dockerd, test_images) -> str:
    ref = test_images["busybox"]
    ok(agent.docker("pull", ref, timeout=180))
    ok(dockerd.docker("pull", ref, timeout=180))
    return ref


def run(engine, image: str, *args: str, cmd: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`docker run --rm --network none ARGS IMAGE CMD` on one engine."""
    return engine.docker("run", "--rm", "--network", "none", *args, image, *cmd)


def both(agent, dockerd, image: str, *args: str, cmd: tuple[str, ...] = ()) -> tuple[str, str]:
    """stdout of the same successful run on ours and on dockerd."""
    return ok(run(agent, image, *args, cmd=cmd)), ok(run(dockerd, image, *args, cmd=cmd))


def daemon_error(result: subprocess.CompletedProcess) -> str:
    """The daemon's message the CLI printed for a failed command."""
    assert result.returncode != 0, f"expected a failure: {result.args}\n{result.stdout}"
    match = re.search(r"Error response from daemon: (.*)", result.stderr)
    assert match, result.stderr
    return match.group(1).strip()


def create_raw(sock, image: str, body: dict) -> tuple[int, dict]:
    status, _, data = http_request(sock, "POST", "/v1.41/containers/create",
                                   json.dumps({"Image": image, **body}).encode(),
                                   {"Content-Type": "application/json"})
    return status, json.loads(data or b"{}")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("args", [
    ("--memory", "1b"),
    ("--cpus", "99"),
    ("--cpuset-cpus", "99"),
    ("--cpuset-cpus", "0-1,x"),
    ("--cpuset-mems", "7"),
    ("--oom-score-adj", "5000"),
])
def test_out_of_range_options_get_dockerds_message(agent, dockerd, image, args):
    ours = daemon_error(run(agent, image, *args, cmd=("true",)))
    theirs = daemon_error(run(dockerd, image, *args, cmd=("true",)))
    assert ours == theirs


@pytest.mark.parametrize("body", [
    {"HostConfig": {"ShmSize": -1}},
    {"ExposedPorts": ["80/tcp"]},
    {"HostConfig": {"Memory": "100m"}},
    {"HostConfig": {"Memory": 2 ** 70}},
    {"HostConfig": {"Memory": 1.5}},
    {"HostConfig": {"CpusetCpus": "99"}},
    {"HostConfig": {"Binds": [5]}},
    {"HostConfig": {"Ulimits": [{"Name": 5}]}},
    {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 80}]}}},
    {"HostConfig": {"Privileged": 1}},
    {"HostConfig": "x"},
    {"Env": "A=1"},
    {"Cmd": 5},
    {"Entrypoint": [5]},
    {"Labels": {"a": 5}},
    {"Volumes": ["/x"]},
    {"Healthcheck": {"Test": "x"}},
    {"StopTimeout": "x"},
    {"HostConfig": {"MemorySwappiness": 200}},
    {"HostConfig": {"Memory": 10_000_000, "MemoryReservation": 20_000_000}},
])
def test_wrong_types_and_ranges_through_the_api(agent, dockerd, image, body):
    ours = create_raw(agent.socket, image, body)
    theirs = create_raw(dockerd.socket, image, body)
    # dockerd 20.10 answers its JSON decoding errors with a 500 (newer ones with 400):
    # a client's mistake is a 400 here, with the same message.
    assert ours[0] == 400 and theirs[0] in (400, 500), (ours, theirs)
    assert ours[1]["message"] == theirs[1]["message"] or (
        # dockerd checks swappiness before knowing it cannot honour it; we refuse the field by name
        "MemorySwappiness" in ours[1]["message"])


@pytest.mark.parametrize("field, value", [
    ("KernelMemoryTCP", 1 << 20), ("BlkioWeight", 500), ("CpuRealtimeRuntime", 1000),
    ("OomKillDisable", True), ("UsernsMode", "host"), ("CgroupParent", "/elsewhere"),
    ("DeviceRequests", [{"Count": -1, "Capabilities": [["gpu"]]}]),
])
def test_fields_we_cannot_honour_are_refused_by_name(agent, image, field, value):
    status, reply = create_raw(agent.socket, image, {"HostConfig": {field: value}})
    assert status == 400 and f"HostConfig.{field}" in reply["message"], reply


def test_stored_host_config_as_dockerd_stores_it(agent, dockerd, image):
    """Defaults filled in as dockerd fills them; given values read back by inspect."""
    for options in ((), ("--ulimit", "nofile=100:200", "--init", "--shm-size", "2m", "--oom-score-adj", "7")):
        stored = []
        for engine in (agent, dockerd):
            name = unique("typed")
            ok(engine.docker("create", "--name", name, "--network", "none", *options, image, "true"))
            hc = json.loads(ok(engine.docker("inspect", name)))[0]["HostConfig"]
            ok(engine.docker("rm", name))
            stored.append({key: hc.get(key) for key in ("ShmSize", "Init", "Ulimits", "OomScoreAdj")})
        assert stored[0] == stored[1]


# --------------------------------------------------------------------------- cpuset


def test_cpuset_cpus_pins_the_container(agent, dockerd, image):
    cmd = ("grep", "Cpus_allowed_list", "/proc/self/status")
    ours, theirs = both(agent, dockerd, image, "--cpuset-cpus", "1", cmd=cmd)
    assert ours == theirs == "Cpus_allowed_list:\t1\n"
    ours, theirs = both(agent, dockerd, image, "--cpuset-mems", "0", cmd=("grep", "Mems_allowed_list",
                                                                           "/proc/self/status"))
    assert ours == theirs


def test_exec_joins_the_cpuset(agent, image):
    name = unique("cpuset")
    ok(agent.docker("run", "-d", "--name", name, "--network", "none", "--cpuset-cpus", "0", image,
                    "sleep", "300"))
    try:
        out = ok(agent.docker("exec", name, "grep", "Cpus_allowed_list", "/proc/self/status"))
        assert out == "Cpus_allowed_list:\t0\n"
    finally:
        agent.docker("rm", "-f", name)


# --------------------------------------------------------------------------- ulimits


def test_ulimit_sets_soft_and_hard_limits(agent, dockerd, image):
    cmd = ("sh", "-c", "ulimit -n; ulimit -Hn; ulimit -c; ulimit -u")
    args = ("--ulimit", "nofile=1024:2048", "--ulimit", "core=0:0", "--ulimit", "nproc=500:600")
    ours, theirs = both(agent, dockerd, image, *args, cmd=cmd)
    assert ours == theirs == "1024\n2048\n0\n500\n"


def test_default_nofile_is_inherited_as_dockerd_does(agent, dockerd, image):
    # Both daemons pass their own limits on; here both were started from the same session.
    ours, theirs = both(agent, dockerd, image, cmd=("sh", "-c", "ulimit -n; ulimit -Hn"))
    assert ours == theirs


def test_ulimit_on_exec_too(agent, image):
    name = unique("ulimit")
    ok(agent.docker("run", "-d", "--name", name, "--network", "none", "--ulimit", "nofile=321:654", image,
                    "sleep", "300"))
    try:
        assert ok(agent.docker("exec", name, "sh", "-c", "ulimit -n; ulimit -Hn")) == "321\n654\n"
    finally:
        agent.docker("rm", "-f", name)


def test_bad_ulimits_are_refused_at_create(agent, image):
    for ulimit, message in (({"Name": "foo", "Soft": 1, "Hard": 1}, "invalid ulimit type: foo"),
                            ({"Name": "nofile", "Soft": 10, "Hard": 1},
                             "soft limit must be less than or equal to hard limit")):
        status, reply = create_raw(agent.socket, image, {"HostConfig": {"Ulimits": [ulimit]}})
        assert status == 400 and message in reply["message"]


# --------------------------------------------------------------------------- sysctls


def test_namespaced_sysctls_are_set_in_the_container(agent, dockerd, image):
    cmd = ("cat", "/proc/sys/kernel/shmmax", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/fs/mqueue/msg_max")
    args = ("--sysctl", "kernel.shmmax=1000000", "--sysctl", "net.ipv4.ip_forward=1",
            "--sysctl", "fs.mqueue.msg_max=20")
    ours, theirs = both(agent, dockerd, image, *args, cmd=cmd)
    assert ours == theirs == "1000000\n1\n20\n"
    with open("/proc/sys/kernel/shmmax") as f:
        assert f.read().strip() != "1000000"      # the machine's own value is untouched


def test_net_sysctl_in_the_containers_bridge_namespace(agent, image):
    out = ok(agent.docker("run", "--rm", "--sysctl", "net.ipv4.ip_local_port_range=40000 40100", image,
                          "cat", "/proc/sys/net/ipv4/ip_local_port_range"))
    assert out.split() == ["40000", "40100"]
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert f.read().split() != ["40000", "40100"]


def test_init_with_a_read_only_root_and_exec(agent, image):
    name = unique("initro")
    ok(agent.docker("run", "-d", "--name", name, "--network", "none", "--init", "--read-only", image,
                    "sleep", "300"))
    try:
        out = ok(agent.docker("exec", name, "ps", "-o", "pid,args"))
        assert out.splitlines()[1].split()[:3] == ["1", "/sbin/docker-init", "--"]
    finally:
        agent.docker("rm", "-f", name)


@pytest.mark.parametrize("key", ["kernel.hostname", "vm.swappiness", "kernel.panic"])
def test_other_sysctls_are_refused(agent, image, key):
    status, reply = create_raw(agent.socket, image, {"HostConfig": {"Sysctls": {key: "1"}}})
    # The docker CLI's own message (dockerd itself only fails later, at start).
    assert status == 400 and reply["message"] == f"sysctl '{key}=1' is not allowed"


def test_net_sysctls_are_refused_with_the_host_network(agent, image):
    status, reply = create_raw(agent.socket, image, {"HostConfig": {
        "NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}}})
    assert status == 400 and "not allowed in host network namespace" in reply["message"]


# --------------------------------------------------------------------------- init, shm, oom, groups


def test_init_runs_tini_as_pid_1(agent, dockerd, image):
    cmd = ("ps", "-o", "pid,args")
    ours, theirs = both(agent, dockerd, image, "--init", cmd=cmd)
    assert ours.splitlines()[1].split() == theirs.splitlines()[1].split() == ["1", "/sbin/docker-init", "--",
                                                                                "ps", "-o", "pid,args"]
    # read-only, as Docker mounts docker-init
    result = run(agent, image, "--init", cmd=("sh", "-c", "echo x > /sbin/docker-init"))
    assert result.returncode != 0 and "Read-only file system" in result.stderr


def test_init_reaps_and_forwards_signals(agent, image):
    name = unique("init")
    ok(agent.docker("run", "-d", "--name", name, "--network", "none", "--init", image, "sleep", "300"))
    try:
        ok(agent.docker("stop", name))
        state = json.loads(ok(agent.docker("inspect", name)))[0]["State"]
        # tini passes SIGTERM on to sleep, which dies of it: 143, not a SIGKILL's 137
        assert state["ExitCode"] == 143
    finally:
        agent.docker("rm", "-f", name)


def test_shm_size(agent, dockerd, image):
    for args in ((), ("--shm-size", "1m"), ("--shm-size", "100m")):
        ours, theirs = both(agent, dockerd, image, *args, cmd=("df", "-k", "/dev/shm"))
        assert ours.splitlines()[1].split()[1] == theirs.splitlines()[1].split()[1]


def test_oom_score_adj(agent, dockerd, image):
    cmd = ("cat", "/proc/self/oom_score_adj")
    # (Lowering it below 0 needs CAP_SYS_RESOURCE, which a test machine may not grant the daemons.)
    for args in ((), ("--oom-score-adj", "500"), ("--oom-score-adj", "1000")):
        ours, theirs = both(agent, dockerd, image, *args, cmd=cmd)
        assert ours == theirs


def test_group_add(agent, dockerd, image):
    ours, theirs = both(agent, dockerd, image, "--group-add", "1234", "--group-add", "nogroup", cmd=("id",))
    assert ours == theirs and "1234" in ours and "65534(nogroup)" in ours
    ours, theirs = both(agent, dockerd, image, "--user", "app", "--group-add", "nogroup", cmd=("id",))
    assert ours == theirs and "65534(nogroup)" in ours


def test_group_add_unknown_name(agent, dockerd, image):
    ours = run(agent, image, "--group-add", "nosuch", cmd=("id",))
    theirs = run(dockerd, image, "--group-add", "nosuch", cmd=("id",))
    assert ours.returncode == theirs.returncode == 125
    assert "Unable to find group nosuch: no matching entries in group file" in ours.stderr
    assert "Unable to find group nosuch: no matching entries in group file" in theirs.stderr


# --------------------------------------------------------------------------- rootfs, stop, logs, env


def test_systempaths_unconfined_unmasks_proc(agent, dockerd, image):
    cmd = ("sh", "-c", "cat /proc/timer_list | head -c 10 | wc -c; grep ' /proc/sys ' /proc/self/mounts | wc -l")
    ours, theirs = both(agent, dockerd, image, "--security-opt", "systempaths=unconfined", cmd=cmd)
    assert ours == theirs
    ours, theirs = both(agent, dockerd, image, cmd=cmd)
    assert ours == theirs


def test_read_only_root_with_tmpfs(agent, dockerd, image):
    cmd = ("sh", "-c", "touch /tmp/ok && echo tmpfs-ok; touch /nope 2>&1 || echo root-ro")
    ours, theirs = both(agent, dockerd, image, "--read-only", "--tmpfs", "/tmp", cmd=cmd)
    assert ours == theirs
    assert "tmpfs-ok" in ours and "root-ro" in ours and "Read-only file system" in ours


def test_stop_signal_and_stop_timeout(agent, image):
    name = unique("stopsig")
    # USR1 ends the shell with 42; TERM is ignored, so only StopSignal can end it cleanly.
    script = "trap 'exit 42' USR1; trap '' TERM; echo ready; while true; do sleep 0.1; done"
    ok(agent.docker("run", "-d", "--name", name, "--network", "none", "--stop-signal", "USR1",
                    "--stop-timeout", "30", image, "sh", "-c", script))
    try:
        poll(lambda: "ready" in agent.docker("logs", name).stdout, timeout=30)
        ok(agent.docker("stop", name))
        state = json.loads(ok(agent.docker("inspect", name)))[0]
        assert state["State"]["ExitCode"] == 42
        assert state["Config"]["StopSignal"] == "USR1" and state["Config"]["StopTimeout"] == 30
    finally:
        agent.docker("rm", "-f", name)


def test_stop_timeout_zero_kills_at_once(agent, image):
    name = unique("stoptimeout")
    ok(agent.docker("run", "-d", "--name", name, "--network", "none", "--stop-timeout", "0", image,
                    "sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"))
    try:
        poll(lambda: "ready" in agent.docker("logs", name).stdout, timeout=30)
        # Without StopTimeout the default 10 s would pass first; the deadline of this
        # call is what fails the test if the container's value is ignored.
        ok(agent.docker("stop", name, timeout=8))
        assert json.loads(ok(agent.docker("inspect", name)))[0]["State"]["ExitCode"] == 137
    finally:
        agent.docker("rm", "-f", name)


def test_log_driver_none(agent, dockerd, image):
    names = []
    results = []
    for engine in (agent, dockerd):
        name = unique("nolog")
        names.append((engine, name))
        out = ok(engine.docker("run", "--name", name, "--network", "none", "--log-driver", "none", image,
                               "echo", "hello"))
        assert out == "hello\n"       # attached output still arrives
        logs = engine.docker("logs", name)
        inspect = json.loads(ok(engine.docker("inspect", name)))[0]
        results.append((logs.returncode, logs.stderr.strip(), inspect["HostConfig"]["LogConfig"],
                        inspect["LogPath"]))
    for engine, name in names:
        engine.docker("rm", "-f", name)
    assert results[0] == results[1]
    assert results[0][1] == "Error response from daemon: configured logging driver does not support reading"


def test_log_max_file_without_max_size(agent, dockerd, image):
    for args in (("--log-opt", "max-file=3"), ("--log-opt", "max-file=0")):
        ours, theirs = run(agent, image, *args, cmd=("true",)), run(dockerd, image, *args, cmd=("true",))
        assert ours.returncode == theirs.returncode
        if theirs.returncode:
            assert daemon_error(ours) == daemon_error(theirs)


def test_log_rotation(agent, image):
    name = unique("rotate")
    ok(agent.docker("run", "--name", name, "--network", "none", "--log-opt", "max-size=1k",
                    "--log-opt", "max-file=2", image, "sh", "-c", "seq 1 2000"))
    try:
        out = ok(agent.docker("logs", name)).split()
        assert out[-1] == "2000" and len(out) < 400     # old lines rotated away
        assert int(out[0]) > 1
    finally:
        agent.docker("rm", "-f", name)


def test_env_entries_without_value(agent, dockerd, image):
    body = {"Env": ["FOO", "BAR=1"], "Cmd": ["/bin/env"], "HostConfig": {"NetworkMode": "none"}}
    outputs = []
    for engine in (agent, dockerd):
        status, reply = create_raw(engine.socket, image, body)
        assert status == 201, reply
        out = ok(engine.docker("start", "-a", reply["Id"]))
        env = json.loads(ok(engine.docker("inspect", reply["Id"])))[0]["Config"]["Env"]
        engine.docker("rm", "-f", reply["Id"])
        outputs.append((env, sorted(line for line in out.splitlines() if not line.startswith("HOSTNAME="))))
    assert outputs[0] == outputs[1]
    assert outputs[0][0][:2] == ["FOO", "BAR=1"]
