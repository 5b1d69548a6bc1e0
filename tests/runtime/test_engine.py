"""Engine container lifecycle against the real launcher and images from the test registry."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from runtime.errors import Conflict, ContainerStartError, InvalidArgument, NotFound, NotModified
from tests.runtime.engine_helpers import collect, run, start_background
from tests.support.waiting import poll as poll_until


def test_run_collects_exit_code_and_both_streams(engine, busybox):
    cid, code, out, err = run(engine, busybox, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, b"out\n", b"err\n")
    c = engine.containers.inspect(cid)
    assert c.state.status == "exited" and not c.state.running and c.state.exit_code == 3
    assert c.state.finished_at > c.state.started_at > "0001"
    assert c.config["Hostname"] == cid[:12]


def test_attach_gets_all_output_of_a_chatty_process(engine, busybox):
    # Output written right before exit must still reach the session (docker run prints it all).
    _, code, out, _ = run(engine, busybox, ["sh", "-c", "seq 1 20000"])
    assert code == 0
    assert out.splitlines()[-1] == b"20000" and len(out.splitlines()) == 20000


def test_logs_tail_streams_and_since(engine, busybox):
    cid, code, _, _ = run(engine, busybox, ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; echo e >&2"])
    assert code == 0
    records = list(engine.containers.logs(cid))
    assert [r.data for r in records] == [b"line1\n", b"line2\n", b"line3\n", b"line4\n", b"line5\n", b"e\n"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", r.time) for r in records)
    assert [r.data for r in engine.containers.logs(cid, stderr=False, tail=2)] == [b"line4\n", b"line5\n"]
    assert [r.stream for r in engine.containers.logs(cid, stdout=False)] == ["stderr"]
    assert list(engine.containers.logs(cid, since=4102444800)) == []    # year 2100
    log_file = engine.store.dir(cid) / f"{cid}-json.log"
    assert log_file.read_text().count('"stream": "stdout"') == 5


def test_logs_follow_until_the_container_stops(engine, busybox):
    c = engine.containers.create(None, {"Image": busybox, "Cmd": ["cat"], "OpenStdin": True,
                                       "StdinOnce": True}, {"NetworkMode": "none"})
    session = engine.containers.attach(c.id, True, False, False)
    engine.containers.start(c.id)
    got: list = []
    done = threading.Event()
    collect(engine.containers.logs(c.id, follow=True), got, done)
    session.write_stdin(b"one\n")
    poll_until(lambda: len(got) == 1, what="first followed line")
    session.write_stdin(b"two\n")
    session.close_stdin()
    assert done.wait(15)
    assert [r.data for r in got] == [b"one\n", b"two\n"]


def test_stdin_is_forwarded_and_closed(engine, busybox):
    _, code, out, _ = run(engine, busybox, ["sh", "-c", "cat; echo end"], stdin=b"hello\nworld\n")
    assert (code, out) == (0, b"hello\nworld\nend\n")


def test_stdin_without_open_stdin_is_dev_null(engine, busybox):
    _, code, out, _ = run(engine, busybox, ["sh", "-c", "cat; echo done"])
    assert (code, out) == (0, b"done\n")


def test_tty_with_resize_before_start(engine, busybox):
    c = engine.containers.create(None, {"Image": busybox, "Cmd": ["sh", "-c", "tty; stty size"],
                                       "Tty": True}, {"NetworkMode": "none"})
    engine.containers.resize_tty(c.id, 40, 100)
    session = engine.containers.attach(c.id, False, True, True)
    waiter = engine.containers.wait(c.id, "next-exit")
    engine.containers.start(c.id)
    output = b"".join(data for stream, data in session.output() if stream == 1)
    assert waiter.result(30) == (0, "")
    assert output.replace(b"\r\n", b"\n") == b"/dev/console\n40 100\n" or \
        re.fullmatch(rb"/dev/pts/\d+\n40 100\n", output.replace(b"\r\n", b"\n"))


def test_stop_waits_timeout_then_kills(engine, busybox):
    # pid 1 ignores SIGTERM unless it handles it, so sleep only dies from SIGKILL.
    cid = start_background(engine, busybox, ["sleep", "1000"])
    waiter = engine.containers.wait(cid, "not-running")
    engine.containers.stop(cid, timeout=0)
    assert waiter.result(10) == (137, "")
    with pytest.raises(NotModified):
        engine.containers.stop(cid)
    with pytest.raises(Conflict, match=f"Container {cid} is not running"):
        engine.containers.kill(cid, "KILL")


def test_stop_signal_is_delivered_and_handled(engine, busybox):
    cid = start_background(engine, busybox, ["sh", "-c", "trap 'echo got-usr1; exit 42' USR1; "
                                             "echo ready; sleep 1000 & wait"], StopSignal="SIGUSR1")
    poll_until(lambda: any(r.data == b"ready\n" for r in engine.containers.logs(cid)), what="ready")
    engine.containers.stop(cid, timeout=30)
    c = engine.containers.inspect(cid)
    assert c.state.exit_code == 42
    assert [r.data for r in engine.containers.logs(cid)][-1] == b"got-usr1\n"


@pytest.mark.parametrize("sig", ["HUP", "SIGHUP", "1"])
def test_kill_accepts_signal_names_and_numbers(engine, busybox, sig):
    cid = start_background(engine, busybox, ["sh", "-c", "trap 'exit 11' HUP; echo ready; sleep 1000 & wait"])
    poll_until(lambda: any(r.data == b"ready\n" for r in engine.containers.logs(cid)), what="ready")
    waiter = engine.containers.wait(cid, "next-exit")
    engine.containers.kill(cid, sig)
    assert waiter.result(10) == (11, "")
    with pytest.raises(InvalidArgument):
        engine.containers.kill(cid, "SIGNOPE")


def test_restart_container(engine, busybox):
    cid = start_background(engine, busybox, ["sleep", "1000"])
    first_pid = engine.containers.inspect(cid).state.pid
    engine.containers.restart(cid, timeout=0)
    c = engine.containers.inspect(cid)
    assert c.state.running and c.state.pid != first_pid
    engine.containers.kill(cid)
    assert not engine.containers.inspect(cid).state.running


def test_remove_running_needs_force(engine, busybox):
    cid = start_background(engine, busybox, ["sleep", "1000"])
    with pytest.raises(Conflict, match="You cannot remove a running container"):
        engine.containers.remove(cid)
    waiter = engine.containers.wait(cid, "removed")
    engine.containers.remove(cid, force=True)
    assert waiter.result(10)[0] == 137
    with pytest.raises(NotFound, match="No such container"):
        engine.containers.inspect(cid)
    assert not engine.store.dir(cid).exists()


def test_names_conflict_rename_and_lookup(engine, busybox):
    a = engine.containers.create("web", {"Image": busybox, "Cmd": ["true"]}, {})
    with pytest.raises(Conflict, match=r'The container name "/web" is already in use by container "' + a.id):
        engine.containers.create("web", {"Image": busybox, "Cmd": ["true"]}, {})
    assert engine.containers.inspect("/web").id == a.id
    assert engine.containers.inspect(a.id[:10]).id == a.id
    engine.containers.rename("web", "web2")
    assert engine.containers.inspect("web2").id == a.id
    with pytest.raises(NotFound):
        engine.containers.inspect("web")
    b = engine.containers.create("web", {"Image": busybox, "Cmd": ["true"]}, {})   # name free again
    generated = engine.containers.create(None, {"Image": busybox, "Cmd": ["true"]}, {})
    assert re.fullmatch(r"[a-z]+_[a-z]+\d?", generated.name)
    for c in (a, b, generated):
        engine.containers.remove(c.id)


def test_create_errors(engine, busybox):
    with pytest.raises(NotFound, match="No such image: nosuchimage:latest"):
        engine.containers.create(None, {"Image": "nosuchimage:latest"}, {})
    with pytest.raises(NotFound, match="network macvlan0 not found"):   # could be a user network
        engine.containers.create(None, {"Image": busybox}, {"NetworkMode": "macvlan0"})
    with pytest.raises(InvalidArgument, match="Invalid container name"):
        engine.containers.create("bad name", {"Image": busybox}, {})
    with pytest.raises(InvalidArgument, match="bind source path does not exist: /nonexistent/src"):
        engine.containers.create(None, {"Image": busybox}, {"Mounts": [
            {"Type": "bind", "Source": "/nonexistent/src", "Target": "/x"}]})


def test_start_failure_is_recorded(engine, busybox):
    c = engine.containers.create(None, {"Image": busybox, "Cmd": ["/no/such/binary"]}, {"NetworkMode": "none"})
    waiter = engine.containers.wait(c.id, "next-exit")
    with pytest.raises(ContainerStartError) as err:
        engine.containers.start(c.id)
    assert err.value.exit_code == 127
    st = engine.containers.inspect(c.id).state
    assert st.status == "exited" and st.exit_code == 127 and st.error
    assert waiter.result(5)[0] == 127


def test_wait_conditions(engine, busybox):
    c = engine.containers.create(None, {"Image": busybox, "Cmd": ["true"]}, {"NetworkMode": "none"})
    assert engine.containers.wait(c.id, "not-running").result(1) == (0, "")   # created: at once
    next_exit = engine.containers.wait(c.id, "next-exit")
    removed = engine.containers.wait(c.id, "removed")
    with pytest.raises(TimeoutError):
        next_exit.result(0)
    engine.containers.start(c.id)
    assert next_exit.result(10) == (0, "")
    with pytest.raises(TimeoutError):
        removed.result(0)
    engine.containers.remove(c.id)
    assert removed.result(10) == (0, "")
    with pytest.raises(InvalidArgument):
        engine.containers.wait(busybox, "sometime")


def test_auto_remove_takes_anonymous_volumes_with_it(engine, busybox):
    named = "keepme"
    cid, code, out, _ = run(engine, busybox, ["sh", "-c", "echo x > /anon/f; echo y > /named/f; echo ok"],
                            host_config={"AutoRemove": True, "Binds": ["/anon", f"{named}:/named"]})
    assert (code, out) == (0, b"ok\n")
    with pytest.raises(NotFound):
        engine.containers.inspect(cid)
    anonymous = [v for v in engine.volumes.list() if engine.volumes.is_anonymous(v)]
    assert not [v for v in anonymous if not engine.volumes.users(v.name)]
    assert Path(engine.volumes.get(named).mountpoint, "f").read_text() == "y\n"


def test_named_volume_outlives_its_container(engine, busybox):
    cid, code, _, _ = run(engine, busybox, ["sh", "-c", "echo persisted > /data/file"],
                          host_config={"Binds": ["shared-data:/data"]})
    assert code == 0
    with pytest.raises(Conflict, match="volume is in use"):
        engine.volumes.remove("shared-data")
    engine.containers.remove(cid, remove_volumes=True)     # named volumes are kept
    _, code, out, _ = run(engine, busybox, ["cat", "/data/file"], host_config={"Binds": ["shared-data:/data:ro"],
                                                                                "AutoRemove": True})
    assert (code, out) == (0, b"persisted\n")
    engine.volumes.remove("shared-data")
    with pytest.raises(NotFound):
        engine.volumes.get("shared-data")


def test_bind_mount_read_only_and_tmpfs(engine, busybox, tmp_path):
    (tmp_path / "in.txt").write_text("from host\n")
    _, code, out, err = run(engine, busybox, ["sh", "-c", "cat /h/in.txt; touch /h/x || echo ro; "
                                              "grep ' /t ' /proc/mounts | cut -d' ' -f3"],
                            host_config={"Binds": [f"{tmp_path}:/h:ro"], "Tmpfs": {"/t": "size=1m"},
                                         "AutoRemove": True})
    assert code == 0 and out == b"from host\nro\ntmpfs\n", err
    assert not (tmp_path / "x").exists()


def test_env_workdir_user_and_entrypoint(engine, busybox):
    _, code, out, _ = run(engine, busybox, ["-c", "echo $FOO $HOSTNAME; pwd; id -u"], Env=["FOO=bar"],
                          Entrypoint=["sh"], WorkingDir="/tmp", User="1000", Hostname="myhost",
                          host_config={"AutoRemove": True})
    assert (code, out) == (0, b"bar myhost\n/tmp\n1000\n")


def test_list_and_filters(engine, busybox):
    a = engine.containers.create("lister-a", {"Image": busybox, "Cmd": ["true"], "Labels": {"team": "x"}}, {})
    b_id = start_background(engine, busybox, ["sleep", "1000"], Labels={"team": "y"})
    running = [c.id for c in engine.containers.list()]
    assert b_id in running and a.id not in running
    assert [c.id for c in engine.containers.list(all=True, filters={"label": ["team=x"]})] == [a.id]
    assert [c.id for c in engine.containers.list(all=True, filters={"name": ["lister-a"]})] == [a.id]
    assert a.id in [c.id for c in engine.containers.list(all=True, filters={"status": ["created"]})]
    assert engine.containers.list(all=True, limit=1)[0].id == b_id      # newest first
    titles, procs = engine.containers.top(b_id)
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [p[7] for p in procs] == ["sleep 1000"] and procs[0][0] == "root"
    engine.containers.remove(b_id, force=True)
    deleted, _ = engine.containers.prune(filters={"label": ["team=x"]})
    assert deleted == [a.id]


def test_bridge_network_and_etc_files(engine, busybox):
    _, code, out, err = run(engine, busybox, ["sh", "-c", "cat /etc/hostname; grep -c $(hostname) /etc/hosts; "
                                              "ip -4 addr show eth0 | grep -c inet; "
                                              "grep -c nameserver /etc/resolv.conf"],
                            host_config={"NetworkMode": "bridge", "ExtraHosts": ["db:10.1.2.3"]})
    lines = out.decode().split()
    assert code == 0, err
    assert len(lines[0]) == 12 and lines[1:3] == ["1", "1"] and int(lines[3]) >= 1


def test_info_counts(engine):
    info = engine.system.info()
    assert info["Containers"] == len(engine.containers.list(all=True))
    assert info["Driver"] == "overlay2" and info["OSType"] == "linux" and info["Images"] >= 1
    assert info["CgroupVersion"] in ("1", "2") and info["NCPU"] >= 1 and info["MemTotal"] > 0


def test_ten_containers_started_from_threads(engine, busybox):
    results: dict[int, tuple] = {}

    def one(i: int) -> None:
        results[i] = run(engine, busybox, ["sh", "-c", f"echo n{i}"], host_config={"AutoRemove": True})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(10))
    for i, (_, code, out, _) in results.items():
        assert (code, out) == (0, f"n{i}\n".encode())


def test_new_volume_is_filled_from_the_image(engine, test_images):
    layered = test_images["layered"]
    engine.images.pull(layered)
    _, code, out, err = run(engine, layered, ["sh", "-c", "ls /data /opaque; cat /data/changed.txt"],
                            host_config={"Binds": ["/data", "layered-opaque:/opaque", "/home/app"],
                                         "AutoRemove": True})
    assert code == 0, err
    assert out == b"/data:\nchanged.txt\nkeep.txt\n\n/opaque:\nnew.txt\nv2\n"
    vol = engine.volumes.get("layered-opaque")
    assert sorted(os.listdir(vol.mountpoint)) == ["new.txt"]
    # nocopy, and volumes that already have content, are left alone.
    (open(os.path.join(vol.mountpoint, "mine.txt"), "w")).close()
    _, code, out, _ = run(engine, layered, ["ls", "/opaque", "/data"],
                          host_config={"Binds": ["layered-opaque:/opaque", "empty-nocopy:/data:nocopy"],
                                       "AutoRemove": True})
    assert (code, out) == (0, b"/data:\n\n/opaque:\nmine.txt\nnew.txt\n")
    engine.volumes.remove("layered-opaque")
    engine.volumes.remove("empty-nocopy")


def test_pause_and_unpause(engine, busybox):
    cid = start_background(engine, busybox, ["sh", "-c", "cat"], OpenStdin=True)
    session = engine.containers.attach(cid, True, True, False)
    engine.containers.pause(cid)
    assert engine.containers.inspect(cid).state.status == "paused"
    with pytest.raises(Conflict, match="already paused"):
        engine.containers.pause(cid)
    with pytest.raises(Conflict, match="paused"):
        engine.execs.create(cid, ["true"])
    session.write_stdin(b"while frozen\n")     # cat reads it only once thawed
    engine.containers.unpause(cid)
    assert engine.containers.inspect(cid).state.status == "running"
    first = next(iter(session.output()))
    assert first == (1, b"while frozen\n")
    engine.containers.pause(cid)
    engine.containers.remove(cid, force=True)     # a paused container can still be killed
    with pytest.raises(NotFound):
        engine.containers.inspect(cid)


def test_memory_limit_oom_kill_is_reported(engine, busybox):
    _, code, _, _ = run(engine, busybox, ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
                        host_config={"Memory": 16 * 1024 * 1024, "MemorySwap": 16 * 1024 * 1024})
    assert code == 137
    oom = [c for c in engine.containers.list(all=True) if c.state.oom_killed]
    assert oom and oom[0].state.exit_code == 137


def test_published_port_reaches_the_container(engine, busybox):
    import socket
    c = engine.containers.create(None, {"Image": busybox, "Cmd": ["sh", "-c", "echo hello | nc -l -p 8080"],
                                       "ExposedPorts": {"8080/tcp": {}}},
                                {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}})
    waiter = engine.containers.wait(c.id, "next-exit")
    engine.containers.start(c.id)
    ports = engine.containers.inspect(c.id).network.ports
    assert len(ports) == 1 and ports[0].host_port > 0

    def fetch():
        try:
            with socket.create_connection(("127.0.0.1", ports[0].host_port), timeout=5) as s:
                return s.recv(100)
        except OSError:
            return b""
    # nc may not be listening yet right after start: retry until it answers.
    assert poll_until(fetch, what="answer through the published port") == b"hello\n"
    assert waiter.result(10)[0] == 0
    assert engine.containers.inspect(c.id).network is None
    engine.containers.remove(c.id)


def test_dns_options_reach_resolv_conf(engine, busybox):
    _, code, out, _ = run(engine, busybox, ["cat", "/etc/resolv.conf"],
                          host_config={"NetworkMode": "bridge", "Dns": ["192.0.2.53"],
                                       "DnsSearch": ["example.test"], "DnsOptions": ["ndots:2"],
                                       "AutoRemove": True})
    lines = out.decode().splitlines()
    assert code == 0
    assert [line for line in lines if line.startswith("nameserver")] == ["nameserver 192.0.2.53"]
    assert "search example.test" in lines and "options ndots:2" in lines


def test_log_rotation_options(engine, busybox):
    cid, code, _, _ = run(engine, busybox, ["seq", "1", "5000"],
                          host_config={"LogConfig": {"Type": "json-file",
                                                     "Config": {"max-size": "10k", "max-file": "2"}}})
    assert code == 0
    logs = sorted(p.name for p in engine.store.dir(cid).iterdir() if "-json.log" in p.name)
    assert logs == [f"{cid}-json.log", f"{cid}-json.log.1"]
    records = [r.data for r in engine.containers.logs(cid)]
    assert records[-1] == b"5000\n" and 0 < len(records) < 5000
    assert [r.data for r in engine.containers.logs(cid, tail=2)] == [b"4999\n", b"5000\n"]
    engine.containers.remove(cid)


def test_readonly_rootfs_and_capabilities(engine, busybox):
    _, code, out, _ = run(engine, busybox, ["sh", "-c", "touch /x 2>/dev/null || echo ro; "
                                            "touch /t/ok && echo tmpfs-rw; grep CapEff /proc/self/status"],
                          host_config={"ReadonlyRootfs": True, "Tmpfs": {"/t": ""}, "CapDrop": ["ALL"],
                                       "CapAdd": ["CHOWN"], "AutoRemove": True})
    lines = out.decode().splitlines()
    assert code == 0 and lines[:2] == ["ro", "tmpfs-rw"]
    assert int(lines[2].split()[1], 16) == 1     # CAP_CHOWN is bit 0, nothing else
