"""Smaller behaviours where Dockyard must match dockerd, each run on both engines.

Every scenario is driven through a real client (the docker CLI, with a pty where a
terminal matters, or docker-py where that is the client in question) against our agent
and against Debian's dockerd (`dockerd` fixture: no bridge, so its containers run with
`--network none`), and the two answers are compared in the same test.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from tests.api.test_docker_cli import _run_in_pty
from tests.support.agent import DOCKER_CLI
from tests.support.waiting import poll

# How long a hijacked stream may take to end once the client detached (a deadline, not a pause).
STREAM_END_DEADLINE = 20.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"docker failed ({result.returncode}): {result.args}\n{result.stderr}"
    return result.stdout


@dataclass
class Engine:
    """One engine under comparison: how to run the CLI and docker-py against it."""

    name: str                # "dockyard" or "dockerd"
    target: Any              # RunningAgent or Dockerd
    run_args: tuple[str, ...]  # extra `docker run` options (dockerd has no bridge)
    image: str

    def docker(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return self.target.docker(*args, input=input)

    def env(self) -> dict[str, str]:
        return self.target.docker_env()

    def api(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.target.host if self.name == "dockerd"
                                else self.target.docker_host, timeout=60)

    def run(self, *args: str) -> str:
        """`docker run -d` with the engine's network options; the container's id."""
        return ok(self.docker("run", "-d", *self.run_args, *args)).strip()

    def inspect(self, ref: str) -> dict:
        return json.loads(ok(self.docker("inspect", ref)))[0]


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images) -> list[Engine]:
    ref = test_images["busybox"]
    ok(agent.docker("pull", ref))
    ok(dockerd.docker("pull", ref))
    return [Engine("dockyard", agent, (), ref), Engine("dockerd", dockerd, ("--network", "none"), ref)]


@pytest.fixture
def cleanup(engines):
    """Names to `docker rm -f` on every engine after the test."""
    names: list[str] = []
    yield names
    for engine in engines:
        if names:
            engine.docker("rm", "-f", *names)


# --------------------------------------------------------------------------- detach keys


def _read_until(sock: socket.socket, want: bytes) -> bytes:
    """Read a hijacked stream until `want` shows up (AssertionError at the deadline)."""
    data = b""
    sock.settimeout(STREAM_END_DEADLINE)
    while want not in data:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"{want!r} never came; got {data!r}") from None
        if not chunk:
            raise AssertionError(f"stream ended before {want!r}; got {data!r}")
        data += chunk
    return data


def _ends(sock: socket.socket) -> bytes:
    """Everything until the engine closes the stream; AssertionError if it stays open."""
    data = b""
    sock.settimeout(STREAM_END_DEADLINE)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the stream stayed open; got {data!r}") from None
        if not chunk:
            return data
        data += chunk


def _raw(hijacked: Any) -> socket.socket:
    """The socket under docker-py's hijacked response (a SocketIO over a unix socket)."""
    return hijacked._sock


def _attach(api: docker.APIClient, cid: str, **params: str) -> socket.socket:
    return _raw(api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                               "stream": 1, **params}))


def test_detach_keys_end_an_attach_and_the_container_runs_on(engines, cleanup):
    """docker-py's attach socket: Ctrl-P Ctrl-Q (or `detachKeys`) ends the session only."""
    for engine in engines:
        name = unique("detach")
        cleanup.append(name)
        engine.run("-it", "--name", name, engine.image, "cat")
        api = engine.api()
        sock = _attach(api, name)
        # A broken sequence reaches the process as typed (the pty echoes Ctrl-P as ^P).
        sock.sendall(b"one\x10x\r")
        _read_until(sock, b"one^Px")
        sock.sendall(b"\x10\x11")
        _ends(sock)
        sock.close()
        assert engine.inspect(name)["State"]["Running"], engine.name
        # The same container, a custom sequence (a plain character and a control key).
        sock = _attach(api, name, detachKeys="x,ctrl-a")
        sock.sendall(b"two\r")
        _read_until(sock, b"two")
        sock.sendall(b"x\x01")
        _ends(sock)
        sock.close()
        assert engine.inspect(name)["State"]["Running"], engine.name
        # Stdin was left open: a new session still talks to the same process.
        sock = _attach(api, name)
        sock.sendall(b"three\r")
        _read_until(sock, b"three\r\nthree")
        sock.close()
        with pytest.raises(docker.errors.APIError) as bad:
            _attach(api, name, detachKeys="ctrl-ab")
        assert bad.value.status_code == 400, engine.name
        assert "Invalid detach keys (ctrl-ab) provided" in str(bad.value), engine.name
        api.close()


def test_detach_keys_end_an_exec_session(engines, cleanup):
    """docker-py's exec socket with DetachKeys: the session ends, the exec process runs on.

    Both engines end the stream. Debian's dockerd 20.10 then also ends the exec (it reports
    "exec attach failed: ... read escape sequence" and exit code 126: its wrapped escape
    error is not recognised as a detach, fixed in later Docker versions, where the exec runs
    on as after `docker attach`). So that part is checked on ours only.
    """
    for engine in engines:
        keeps_running = engine.name == "dockyard"
        name = unique("detachexec")
        cleanup.append(name)
        engine.run("--name", name, engine.image, "sleep", "300")
        api = engine.api()
        exec_id = api.exec_create(name, ["sh", "-c", "echo started; exec cat"], stdin=True,
                                  tty=True, detach_keys="ctrl-x,ctrl-y")["Id"]
        assert api.exec_inspect(exec_id)["DetachKeys"] == "GBk=", engine.name   # base64 of ^X^Y
        sock = _raw(api.exec_start(exec_id, tty=True, socket=True))
        _read_until(sock, b"started")
        sock.sendall(b"\x18\x19")
        _ends(sock)
        sock.close()
        assert api.exec_inspect(exec_id)["Running"] == keeps_running, engine.name
        # The default sequence, on an exec created without one.
        exec_id = api.exec_create(name, ["sh", "-c", "echo started; exec cat"], stdin=True,
                                  tty=True)["Id"]
        sock = _raw(api.exec_start(exec_id, tty=True, socket=True))
        _read_until(sock, b"started")
        sock.sendall(b"\x10\x11")
        _ends(sock)
        sock.close()
        assert api.exec_inspect(exec_id)["Running"] == keeps_running, engine.name
        # dockerd answers 500 here; a client's mistake is a 400 for us, with the same words.
        with pytest.raises(docker.errors.APIError) as bad:
            api.exec_create(name, ["true"], tty=True, detach_keys="nonsense")
        assert "Invalid escape keys (nonsense) provided" in str(bad.value), engine.name
        api.close()


def test_cli_detach_from_run_attach_and_exec(engines, cleanup):
    """The docker CLI in a real terminal: `run -it`, `attach` and `exec -it` detach alike."""
    outcomes = {}
    for engine in engines:
        name = unique("clidetach")
        cleanup.append(name)
        run = [DOCKER_CLI, "run", "-it", *engine.run_args, "--name", name, engine.image, "sh"]
        code, _ = _run_in_pty(run, engine.env(), [b"echo hi\r", b"\x10\x11"], rows=24, cols=80)
        running_after_run = engine.inspect(name)["State"]["Running"]
        attach = [DOCKER_CLI, "attach", "--detach-keys", "ctrl-a,ctrl-b", name]
        attach_code, attach_out = _run_in_pty(attach, engine.env(), [b"\x01\x02"], rows=24, cols=80)
        exec_ = [DOCKER_CLI, "exec", "-it", name, "sh"]
        exec_code, exec_out = _run_in_pty(exec_, engine.env(), [b"echo in-exec\r", b"\x10\x11"],
                                          rows=24, cols=80)
        processes = ok(engine.docker("exec", name, "ps", "-o", "args"))
        outcomes[engine.name] = (code, running_after_run, attach_code,
                                 b"read escape sequence" in attach_out, exec_code,
                                 b"read escape sequence" in exec_out, processes.count("sh"))
    assert outcomes["dockyard"] == outcomes["dockerd"], outcomes
    assert outcomes["dockerd"][:2] == (0, True), outcomes


# --------------------------------------------------------------------------- exec details


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a multiplexed stream; AssertionError if it is not one."""
    frames = []
    while data:
        assert len(data) >= 8 and data[1:4] == b"\0\0\0", f"not a frame: {data[:16]!r}"
        stream, size = data[0], struct.unpack(">I", data[4:8])[0]
        frames.append((stream, data[8:8 + size]))
        data = data[8 + size:]
    return frames


def test_tty_exec_started_without_tty_sends_frames(engines, cleanup):
    """docker-py's exec_start(tty=False) of an exec created with tty=True: multiplexed."""
    for engine in engines:
        name = unique("ttyframes")
        cleanup.append(name)
        engine.run("--name", name, engine.image, "sleep", "300")
        api = engine.api()
        exec_id = api.exec_create(name, ["sh", "-c", "echo out; echo err >&2; tty"], tty=True)["Id"]
        data = _ends(_raw(api.exec_start(exec_id, tty=False, socket=True)))
        frames = _frames(data)
        text = b"".join(payload for _, payload in frames)
        # The process still has its pty: everything is stdout, with the pty's line endings.
        assert {stream for stream, _ in frames} == {1}, (engine.name, frames)
        assert b"out\r\nerr\r\n/dev/pts/" in text, (engine.name, text)
        # And the converse: a plain exec started with tty=True is sent raw.
        exec_id = api.exec_create(name, ["echo", "plain"], tty=False)["Id"]
        assert _ends(_raw(api.exec_start(exec_id, tty=True, socket=True))) == b"plain\n", engine.name
        api.close()


def test_exec_of_a_missing_or_unexecutable_binary(engines, cleanup):
    """The exec runs and fails with dockerd's exit code and message, not a 500."""
    seen = {}
    for engine in engines:
        name = unique("execmissing")
        cleanup.append(name)
        engine.run("--name", name, engine.image, "sleep", "300")
        results = []
        for options, command in (([], "nosuchbinary"), ([], "/etc"), (["-t"], "/no/such/file")):
            r = engine.docker("exec", *options, name, command)
            results.append((r.returncode, r.stdout.strip()))
        seen[engine.name] = results
    assert seen["dockyard"] == seen["dockerd"], seen
    assert 'exec: "nosuchbinary": executable file not found in $PATH' in seen["dockerd"][0][1]


def test_exec_tty_sets_term(engines, cleanup):
    """TERM=xterm follows the exec's own TTY, as dockerd's exec environment does."""
    seen = {}
    for engine in engines:
        plain, tty = unique("noterm"), unique("term")
        cleanup += [plain, tty]
        engine.run("--name", plain, engine.image, "sleep", "300")
        engine.run("-t", "--name", tty, engine.image, "sleep", "300")
        seen[engine.name] = [
            "TERM=xterm" in ok(engine.docker("exec", "-t", plain, "env")),
            "TERM=xterm" in ok(engine.docker("exec", plain, "env")),
            "TERM=xterm" in ok(engine.docker("exec", tty, "env")),
            "TERM=vt100" in ok(engine.docker("exec", "-t", "-e", "TERM=vt100", plain, "env")),
        ]
    assert seen["dockyard"] == seen["dockerd"] == [True, False, False, True], seen


# --------------------------------------------------------------------------- volumes


@pytest.fixture
def volumes(engines):
    """Volume names to `docker volume rm -f` on every engine after the test."""
    names: list[str] = []
    yield names
    for engine in engines:
        if names:
            engine.docker("volume", "rm", "-f", *names)


def test_local_volume_tmpfs_and_bind_options(engines, cleanup, volumes, tmp_path):
    """`docker volume create -o type=... -o device=... -o o=...` mounts as dockerd's local driver."""
    seen = {}
    for engine in engines:
        tmpfs_vol, bind_vol = unique("tmpfsvol"), unique("bindvol")
        volumes += [tmpfs_vol, bind_vol]
        ok(engine.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs",
                         "-o", "o=size=10m,mode=0750", tmpfs_vol))
        options = engine.inspect(tmpfs_vol)["Options"]
        first = ok(engine.docker("run", "--rm", *engine.run_args, "-v", f"{tmpfs_vol}:/d",
                                 engine.image, "sh", "-c",
                                 "df -k /d | tail -1; stat -c %a /d; echo x > /d/f; ls /d"))
        # Unmounted when its last user stopped: the next container starts on an empty tmpfs.
        second = ok(engine.docker("run", "--rm", *engine.run_args, "-v", f"{tmpfs_vol}:/d",
                                  engine.image, "ls", "/d"))
        host_dir = tmp_path / engine.name
        host_dir.mkdir()
        (host_dir / "from-host").write_text("hello\n")
        ok(engine.docker("volume", "create", "-o", "type=none", "-o", "o=bind",
                         "-o", f"device={host_dir}", bind_vol))
        bound = ok(engine.docker("run", "--rm", *engine.run_args, "-v", f"{bind_vol}:/d",
                                 engine.image, "sh", "-c", "cat /d/from-host; echo back > /d/from-c"))
        ok(engine.docker("volume", "rm", bind_vol))
        # Removing the volume leaves the host directory and what the container wrote there.
        kept = sorted(p.name for p in host_dir.iterdir())
        seen[engine.name] = (options, first, second, bound, kept)
    assert seen["dockyard"] == seen["dockerd"], seen
    assert seen["dockerd"][1] == "tmpfs                    10240         0     10240   0% /d\n750\nf\n"


def test_local_volume_options_refused_by_name(engines, volumes):
    seen = {}
    for engine in engines:
        answers = []
        for options in (["-o", "foo=bar"], ["-o", "size=10m"]):
            name = unique("badvol")
            volumes.append(name)
            r = engine.docker("volume", "create", *options, name)
            answers.append((r.returncode, r.stderr.replace(name, "NAME")))
        # A mount option the kernel refuses shows up when a container first uses the volume.
        name = unique("badsize")
        volumes.append(name)
        ok(engine.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs",
                         "-o", "o=size=bogus", name))
        r = engine.docker("run", "--rm", *engine.run_args, "-v", f"{name}:/d", engine.image, "true")
        answers.append((r.returncode, "failed to mount local volume" in r.stderr,
                        "data: size=bogus: invalid argument" in r.stderr))
        seen[engine.name] = answers
    assert seen["dockyard"] == seen["dockerd"], seen
    assert 'invalid option: "foo"' in seen["dockerd"][0][1]


def test_mount_flag_volume_opt_and_label(engines, cleanup, volumes):
    """`--mount type=volume,volume-opt=...,volume-label=...` creates the volume with them."""
    seen = {}
    for engine in engines:
        name, container = unique("mountvol"), unique("mountopt")
        volumes.append(name)
        cleanup.append(container)
        out = ok(engine.docker(
            "run", "--name", container, *engine.run_args, "--mount",
            f"type=volume,src={name},dst=/d,volume-opt=type=tmpfs,volume-opt=device=tmpfs,"
            "volume-opt=o=size=5m,volume-label=team=blue,volume-label=tier=db",
            engine.image, "sh", "-c", "df -k /d | tail -1"))
        vol = engine.inspect(name)
        # An anonymous volume takes the labels too (beside Docker's own anonymous label).
        anon = unique("anonopt")
        cleanup.append(anon)
        ok(engine.docker("create", "--name", anon, *engine.run_args, "--mount",
                         "type=volume,dst=/d,volume-label=team=green", engine.image))
        anon_name = engine.inspect(anon)["Mounts"][0]["Name"]
        volumes.append(anon_name)
        anon_labels = engine.inspect(anon_name)["Labels"]
        # Docker 23+ (and we) mark it anonymous; Debian's dockerd 20.10 predates that label.
        anon_labels.pop("com.docker.volume.anonymous", None)
        seen[engine.name] = (out, vol["Options"], vol["Labels"], anon_labels)
    assert seen["dockyard"] == seen["dockerd"], seen
    assert seen["dockerd"][2] == {"team": "blue", "tier": "db"}


# --------------------------------------------------------------------------- links


@pytest.fixture(scope="module")
def bridged_dockerd(tmp_path_factory, test_images):
    """A dockerd with a bridge for the link tests (the session's has none).

    Its bridge is one we make here, with its own name and a 10.213.x.0/24 subnet, so it
    clashes neither with ours (dockyard0, 172.29.0.0/16) nor with a benchmark's docker0;
    `--iptables=false` leaves the host's NAT rules alone (links need no NAT).
    """
    from tests.support.dockerd import Dockerd

    bridge = "dyl" + uuid.uuid4().hex[:8]
    subnet = f"10.213.{uuid.uuid4().int % 200 + 20}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        daemon = Dockerd(tmp_path_factory.mktemp("dockerd-bridge"),
                         ["--bridge", bridge, "--iptables=false", "--ip-masq=false"])
        try:
            ok(daemon.docker("pull", test_images["busybox"]))
            yield Engine("dockerd", daemon, (), test_images["busybox"])
        finally:
            leftovers = daemon.docker("ps", "-aq").stdout.split()
            if leftovers:
                daemon.docker("rm", "-f", *leftovers)
            daemon.stop()
    finally:
        subprocess.run(["ip", "link", "delete", bridge], check=False)


def test_legacy_links_hosts_and_environment(engines, bridged_dockerd, cleanup):
    """`--link NAME:ALIAS` and `--link NAME` on the default bridge (dockerd with a bridge)."""
    seen = {}
    for engine in (engines[0], bridged_dockerd):
        web = unique("web")
        cleanup.append(web)
        engine.run("--name", web, "-e", "SECRET=s1", "-e", "WITH=eq=x", "--expose", "80",
                   "--expose", "8080", "--expose", "8081/udp", engine.image, "sleep", "300")
        info = engine.inspect(web)
        web_ip = info["NetworkSettings"]["IPAddress"]
        out = ok(engine.docker("run", "--rm", "--link", f"{web}:db", "--link", web, engine.image,
                               "sh", "-c", "cat /etc/hosts; echo ---; env | sort"))
        out = out.replace(web_ip, "WEB_IP").replace(info["Id"][:12], "WEB_ID")
        out = out.replace(web, "WEB").replace(web.upper().replace("-", "_"), "WEB")
        hosts, _, env = out.partition("---\n")
        # dockerd writes the link lines in Go map order (random between runs): compare them sorted.
        link_hosts = sorted(line for line in hosts.splitlines() if "WEB_IP" in line)
        link_env = [line for line in env.splitlines() if line.startswith(("DB_", "WEB_"))]
        # The linking container's own name is in *_NAME (a generated one): keep its shape.
        link_env = [line.split("=/")[0] + "=/PARENT/" + line.rsplit("/", 1)[1]
                    if "_NAME=/" in line else line for line in link_env]
        # Errors: a missing target at create, host networking, a target that is not running.
        stopped = unique("stopped")
        cleanup.append(stopped)
        ok(engine.docker("create", "--name", stopped, engine.image))
        errors = [
            engine.docker("create", "--link", "no-such-container:x", engine.image).stderr,
            engine.docker("create", "--network", "host", "--link", f"{web}:db", engine.image).stderr,
            engine.docker("run", "--rm", "--name", "linker-" + stopped, "--link", f"{stopped}:s",
                          engine.image, "true").stderr.replace(stopped, "STOPPED"),
        ]
        seen[engine.name] = (link_hosts, link_env, [e.strip().splitlines()[0] for e in errors])
    assert seen["dockyard"] == seen["dockerd"], seen
    assert "DB_PORT_80_TCP_ADDR=WEB_IP" in seen["dockerd"][1] and "DB_ENV_SECRET=s1" in seen["dockerd"][1]


# --------------------------------------------------------------------------- stats


def test_stats_networks(engines, bridged_dockerd, cleanup):
    """The `networks` key of stats (and the CLI's NET I/O): eth0 on a bridge, none without."""
    seen = {}
    cases = [(engines[0], ()), (bridged_dockerd, ()), (engines[1], ()),
             (engines[0], ("--network", "none"))]
    for engine, options in cases:
        name = unique("netstats")
        cleanup.append(name)
        engine.run("--name", name, *options, engine.image, "sleep", "300")
        gateway = engine.inspect(name)["NetworkSettings"]["Gateway"]
        if gateway:
            # Known traffic: 5 pings of 1000 bytes to the bridge, each way.
            ok(engine.docker("exec", name, "ping", "-c", "5", "-s", "1000", gateway))
        api = engine.api()
        stats = api.stats(name, stream=False, one_shot=True)
        api.close()
        networks = stats.get("networks")
        net_io = ok(engine.docker("stats", "--no-stream", "--format", "{{.NetIO}}", name)).strip()
        if networks is None:
            seen[engine.name + ("-bridge" if gateway else "")] = (None, net_io)
            continue
        eth0 = networks["eth0"]
        seen[engine.name + "-bridge"] = (sorted(networks), sorted(eth0),
                                         eth0["tx_packets"] >= 5 and eth0["rx_packets"] >= 5,
                                         eth0["tx_bytes"] >= 5000 and eth0["rx_bytes"] >= 5000,
                                         net_io != "0B / 0B")
    assert seen["dockyard-bridge"] == seen["dockerd-bridge"], seen
    assert seen["dockerd-bridge"][2:] == (True, True, True), seen
    assert seen["dockyard"] == seen["dockerd"] == (None, "0B / 0B"), seen


# --------------------------------------------------------------------------- MAC address


def test_mac_address(engines, bridged_dockerd, cleanup):
    """Config.MacAddress: eth0 takes it; bad values are refused.

    docker-py's create(mac_address=) on both engines. The docker CLI 28 sends the address
    per endpoint (API 1.44+), which dockerd 20.10 (API 1.41) cannot take, so the CLI's
    `--mac-address` is checked on ours only.
    """
    seen = {}
    for engine in (engines[0], bridged_dockerd):
        name = unique("mac")
        cleanup.append(name)
        api = engine.api()
        api.create_container(engine.image, ["sleep", "300"], name=name,
                             mac_address="02:42:ac:11:00:99")
        api.start(name)
        inside = ok(engine.docker("exec", name, "cat", "/sys/class/net/eth0/address")).strip()
        shown = engine.inspect(name)["NetworkSettings"]["MacAddress"]
        errors = []
        for mac, mode in (("zz", None), ("02:42:ac:11:00:99", "host")):
            host_config = api.create_host_config(network_mode=mode) if mode else None
            try:
                # dockerd 20.10 takes a malformed address at create and fails the start (500).
                created = api.create_container(engine.image, "true", mac_address=mac,
                                               host_config=host_config)
                cleanup.append(created["Id"])
                api.start(created)
                errors.append(None)
            except docker.errors.APIError as err:
                errors.append(str(err.explanation))
        api.close()
        seen[engine.name] = (inside, shown, errors)
    assert seen["dockyard"][:2] == seen["dockerd"][:2] == ("02:42:ac:11:00:99",) * 2, seen
    for ours, theirs in zip(seen["dockyard"][2], seen["dockerd"][2], strict=True):
        assert ours is not None and theirs is not None and ours in theirs, seen
    ours = engines[0]
    name = unique("climac")
    cleanup.append(name)
    ours.run("--name", name, "--mac-address", "02:42:ac:11:00:9a", ours.image, "sleep", "300")
    assert ok(ours.docker("exec", name, "cat", "/sys/class/net/eth0/address")) == "02:42:ac:11:00:9a\n"


def test_mac_address_refused_at_create_with_a_400(engines):
    api = engines[0].api()
    for bad in ("zz", "02:42:ac:11:00", "01:00:5e:00:00:01"):
        with pytest.raises(docker.errors.APIError) as err:
            api.create_container(engines[0].image, "true", mac_address=bad)
        assert err.value.status_code == 400 and "invalid MAC address" in str(err.value), bad
    api.close()


# --------------------------------------------------------------------------- remove


def test_remove_without_force_refuses_live_containers(engines, cleanup):
    """Running, paused, and restarting (`--restart always` between two runs) need -f."""
    seen = {}
    for engine in engines:
        running, paused, flapping = unique("rmrun"), unique("rmpause"), unique("rmflap")
        cleanup += [running, paused, flapping]
        engine.run("--name", running, "--restart", "always", engine.image, "sleep", "300")
        engine.run("--name", paused, engine.image, "sleep", "300")
        ok(engine.docker("pause", paused))
        engine.run("--name", flapping, "--restart", "always", engine.image, "sh", "-c", "exit 1")
        # After a few restarts the back-off (0.1 s doubling) leaves a wide "restarting" window.
        poll(lambda engine=engine, flapping=flapping: engine.inspect(flapping)["RestartCount"] >= 3,
             what="three restarts")
        poll(lambda engine=engine, flapping=flapping: engine.inspect(flapping)["State"]["Status"] == "restarting",
             what="restarting")
        answers = []
        for name in (running, paused, flapping):
            cid = engine.inspect(name)["Id"]
            r = engine.docker("rm", name)
            still_there = engine.docker("inspect", name).returncode == 0
            answers.append((r.returncode, r.stderr.strip().replace(cid, "ID"), still_there))
        engine.docker("unpause", paused)
        engine.docker("rm", "-f", running, paused, flapping)
        seen[engine.name] = answers
    assert seen["dockyard"] == seen["dockerd"], seen
    assert seen["dockerd"][2] == (1, "Error response from daemon: You cannot remove a restarting "
                                     "container ID. Stop the container before attempting removal "
                                     "or force remove", True), seen


# --------------------------------------------------------------------------- network filters


def test_network_list_filters(engines, bridged_dockerd, cleanup):
    """`docker network ls --filter` and `docker ps --filter network=` (dockerd with a bridge)."""
    seen = {}
    for engine in (engines[0], bridged_dockerd):
        host_id = ok(engine.docker("network", "inspect", "-f", "{{.Id}}", "host")).strip()
        listed = {}
        for spec in ("name=bridge", "name=o", "name=^no", "driver=null", "driver=bridge",
                     f"id={host_id[:12]}", "type=builtin", "type=custom", "scope=local",
                     "dangling=false", "dangling=true", "label=a=b"):
            out = ok(engine.docker("network", "ls", "--filter", spec, "--format", "{{.Name}}"))
            listed[spec.replace(host_id[:12], "HOST_ID")] = sorted(out.split())
        bad = [engine.docker("network", "ls", "--filter", spec).stderr.strip()
               for spec in ("foo=bar", "type=other")]
        on_bridge, on_none = unique("onbridge"), unique("onnone")
        cleanup += [on_bridge, on_none]
        engine.run("--name", on_bridge, engine.image, "sleep", "300")
        engine.run("--name", on_none, "--network", "none", engine.image, "sleep", "300")
        in_ps = {}
        for network in ("bridge", "none", "host"):
            names = ok(engine.docker("ps", "-a", "--filter", f"network={network}",
                                     "--format", "{{.Names}}")).split()
            in_ps[network] = (on_bridge in names, on_none in names)
        seen[engine.name] = (listed, bad, in_ps)
    assert seen["dockyard"] == seen["dockerd"], seen
    assert seen["dockerd"][0]["name=o"] == ["host", "none"], seen
