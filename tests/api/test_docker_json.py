"""Docker JSON shapes built from the runtime's dataclasses (pure functions, real models)."""

from __future__ import annotations

from datetime import UTC

from guest_agent import docker_json
from runtime.images.store import Image
from runtime.models import Container, ContainerState, Event, ExecInstance, NetworkAttachment, PortMapping, Volume

NOW = 1_700_000_000.0


def _stamp(t: float) -> str:
    from datetime import datetime
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def _container(**state) -> Container:
    return Container(
        id="a" * 64, name="web", created=_stamp(NOW - 100), image="busybox", image_id="sha256:" + "b" * 64,
        config={"Image": "busybox", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"],
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Labels": {"k": "v"}},
        host_config={"NetworkMode": "default"}, state=ContainerState(**state),
        network=NetworkAttachment(mode="bridge", ip_address="172.29.0.5", prefix_len=16,
                                  gateway="172.29.0.1", mac_address="02:42:ac:1d:00:05",
                                  ports=[PortMapping(80, "tcp", "127.0.0.1", 32768)]),
        log_path="/x/log.json")


def test_parse_rfc3339_nanoseconds_and_zero():
    assert docker_json.parse_rfc3339("2023-11-14T22:13:20.123456789Z") == 1700000000.123456789
    assert docker_json.parse_rfc3339("0001-01-01T00:00:00Z") == 0.0
    assert docker_json.parse_rfc3339("2023-11-14T23:13:20+01:00") == 1700000000.0


def test_human_duration_matches_go_units():
    cases = {0.5: "Less than a second", 1: "1 second", 3: "3 seconds", 59: "59 seconds",
             60: "About a minute", 150: "2 minutes", 3600: "About an hour", 3 * 3600: "3 hours",
             3 * 86400: "3 days", 20 * 86400: "2 weeks", 90 * 86400: "3 months",
             800 * 86400: "2 years"}
    for seconds, text in cases.items():
        assert docker_json.human_duration(seconds) == text, seconds


def test_status_text():
    up = _container(status="running", running=True, started_at=_stamp(NOW - 3.5))
    assert docker_json.container_status_text(up, NOW) == "Up 3 seconds"
    down = _container(status="exited", exit_code=2, finished_at=_stamp(NOW - 120.5))
    assert docker_json.container_status_text(down, NOW) == "Exited (2) 2 minutes ago"
    assert docker_json.container_status_text(_container(), NOW) == "Created"


def test_container_inspect_shape():
    c = _container(status="running", running=True, pid=42, started_at=_stamp(NOW))
    data = docker_json.container_inspect(c)
    assert data["Name"] == "/web"
    assert data["Path"] == "/bin/sh" and data["Args"] == ["-c", "echo hi"]
    assert data["State"]["Pid"] == 42 and data["State"]["Running"] is True
    ns = data["NetworkSettings"]
    assert ns["IPAddress"] == "172.29.0.5" and ns["Gateway"] == "172.29.0.1"
    assert ns["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}], "53/udp": None}
    assert ns["Networks"]["bridge"]["MacAddress"] == "02:42:ac:1d:00:05"
    stopped = docker_json.container_inspect(_container(status="exited"))
    assert stopped["NetworkSettings"]["IPAddress"] == ""
    assert stopped["NetworkSettings"]["Ports"] == {"80/tcp": None, "53/udp": None}


def test_container_summary_shape():
    c = _container(status="running", running=True, started_at=_stamp(NOW - 5.5))
    data = docker_json.container_summary(c, NOW)
    assert data["Names"] == ["/web"] and data["Command"] == "/bin/sh -c echo hi"
    assert data["Created"] == int(NOW - 100)
    assert {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"} in data["Ports"]
    assert {"PrivatePort": 53, "Type": "udp"} in data["Ports"]
    assert data["Status"] == "Up 5 seconds" and data["State"] == "running"
    assert data["Labels"] == {"k": "v"}


def test_image_volume_exec_event_shapes():
    image = Image(id="sha256:" + "c" * 64, config={
        "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": ["sha256:d"]}},
        repo_tags=["r/busybox:latest"], size=123, created="2024-01-01T00:00:00Z")
    summary = docker_json.image_summary(image, 2)
    assert summary["Created"] == 1704067200 and summary["Containers"] == 2
    info = docker_json.image_inspect(image)
    assert info["RootFS"] == {"Type": "layers", "Layers": ["sha256:d"]}
    assert info["Config"] == {"Cmd": ["sh"]} and info["Os"] == "linux"
    vol = docker_json.volume_json(Volume(name="v", mountpoint="/m", created_at="t"))
    assert vol == {"CreatedAt": "t", "Driver": "local", "Labels": {}, "Mountpoint": "/m",
                   "Name": "v", "Options": {}, "Scope": "local"}
    ex = docker_json.exec_inspect(ExecInstance(id="e", container_id="c", cmd=["ls", "-l"], exit_code=3))
    assert ex["ExitCode"] == 3 and ex["ProcessConfig"]["entrypoint"] == "ls"
    ev = docker_json.event_json(Event(type="container", action="start", actor_id="c",
                                      attributes={"image": "busybox", "name": "n"},
                                      time_nano=1_700_000_000_500_000_000))
    assert ev["time"] == 1_700_000_000 and ev["status"] == "start" and ev["from"] == "busybox"
    assert ev["Actor"] == {"ID": "c", "Attributes": {"image": "busybox", "name": "n"}}
