"""Create-request parsing and merging with the image config, as dockerd does it."""

from __future__ import annotations

import signal

import pytest

from runtime.containers.config import (
    build_config,
    capabilities,
    limits,
    merge_env,
    parse_signal,
    port_mappings,
    process_env,
)
from runtime.containers.mounts import parse_bind, parse_mounts
from runtime.containers.names import generate_name, validate_container_name
from runtime.containers.spec import DEFAULT_CAPABILITIES
from runtime.errors import InvalidArgument

CID = "0123456789ab" + "c" * 52
IMAGE = {"Env": ["PATH=/usr/bin:/bin", "A=1"], "Entrypoint": ["/entry"], "Cmd": ["serve", "--x"],
         "WorkingDir": "/app", "User": "app", "Labels": {"img": "yes", "both": "img"},
         "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGQUIT"}


def build(config=None, host_config=None, image=IMAGE):
    return build_config(CID, config or {}, host_config or {}, image, ncpu=2)


def test_image_defaults_fill_the_config():
    cfg, hc = build({"Labels": {"both": "req"}, "Env": ["A=2", "B=3"]})
    assert cfg["Entrypoint"] == ["/entry"] and cfg["Cmd"] == ["serve", "--x"]
    assert cfg["Env"] == ["A=2", "B=3", "PATH=/usr/bin:/bin"]   # as dockerd stores it
    assert cfg["WorkingDir"] == "/app" and cfg["User"] == "app" and cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Labels"] == {"img": "yes", "both": "req"}
    assert cfg["Hostname"] == CID[:12]
    assert hc["NetworkMode"] == "bridge"
    assert hc["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert hc["LogConfig"]["Type"] == "json-file"


def test_cmd_replaces_image_cmd_but_keeps_entrypoint():
    cfg, _ = build({"Cmd": ["other"]})
    assert cfg["Entrypoint"] == ["/entry"] and cfg["Cmd"] == ["other"]


def test_explicit_entrypoint_resets_image_cmd():
    cfg, _ = build({"Entrypoint": ["/bin/sh"]})
    assert cfg["Entrypoint"] == ["/bin/sh"] and cfg["Cmd"] is None
    cfg, _ = build({"Entrypoint": [""], "Cmd": ["echo", "hi"]})
    assert cfg["Entrypoint"] is None and cfg["Cmd"] == ["echo", "hi"]


def test_no_command_is_refused():
    with pytest.raises(InvalidArgument, match="No command specified"):
        build({}, image={})


def test_env_merge_and_unset():
    assert merge_env(["A=1", "B=2"], ["B=3", "C=4", "A"]) == ["B=3", "C=4"]
    env = process_env({"Env": ["X=1"], "Hostname": "h", "Tty": True})
    assert "X=1" in env and "HOSTNAME=h" in env and "TERM=xterm" in env
    assert any(e.startswith("PATH=") for e in env)


@pytest.mark.parametrize("host_config, message", [
    ({"NetworkMode": "not a name!"}, "network mode"),   # a valid name may be a user network
    ({"RestartPolicy": {"Name": "sometimes"}}, "invalid restart policy"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}, "only be used with 'on-failure'"),
    ({"AutoRemove": True, "RestartPolicy": {"Name": "always"}}, "--restart and --rm"),
    ({"Binds": ["relative/x:/y"]}, "includes invalid characters"),
    ({"Binds": ["/a:rel"]}, "absolute path"),
    ({"Binds": ["/a:/b:rw,bogus"]}, "invalid mode"),
    ({"Binds": ["/a:/b", "vol:/b"]}, "Duplicate mount point: /b"),
    ({"Mounts": [{"Type": "nfs", "Target": "/x"}]}, "mount type unknown"),
    ({"Memory": 1024}, "Minimum memory limit"),
    ({"NanoCpus": 500_000_000, "CpuQuota": 50000}, "Conflicting options"),
    ({"NanoCpus": 64_000_000_000}, "Range of CPUs"),
    ({"CapAdd": ["NOT_A_CAP"]}, "unknown capability"),
    ({"ExtraHosts": ["db:not-an-ip"]}, "invalid IP address"),
    ({"PortBindings": {"http/tcp": [{"HostPort": "80"}]}}, "invalid port"),
    ({"LogConfig": {"Type": "syslog"}}, "logging driver"),
])
def test_invalid_host_config(host_config, message):
    with pytest.raises(InvalidArgument, match=message):
        build({}, host_config)


def test_binds_and_mounts():
    mounts = parse_mounts({"Volumes": {"/data": {}, "/cache": {}}}, {
        "Binds": ["/host/dir:/in:ro", "named:/data", "/anon"],
        "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024, "Mode": 0o1777}},
                   {"Type": "bind", "Source": "/src", "Target": "/dst", "ReadOnly": True}],
        "Tmpfs": {"/run": "rw,size=1m"},
    })
    by_target = {m.target: m for m in mounts}
    assert by_target["/in"].type == "bind" and by_target["/in"].readonly and by_target["/in"].source == "/host/dir"
    assert by_target["/data"].type == "volume" and by_target["/data"].source == "named"
    assert by_target["/anon"].type == "volume" and by_target["/anon"].source == ""
    assert by_target["/t"].options == "size=1024,mode=1777"
    assert by_target["/dst"].readonly
    assert by_target["/run"].type == "tmpfs" and by_target["/run"].options == "rw,size=1m"
    assert by_target["/cache"].type == "volume" and by_target["/cache"].source == ""
    assert len(mounts) == 7   # image volume /data is covered by the named volume
    assert parse_bind("vol:/x:ro,nocopy").nocopy


def test_ports():
    maps = port_mappings({"ExposedPorts": {"80/tcp": {}, "53/udp": {}}},
                         {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                          "PublishAllPorts": True})
    assert [(m.container_port, m.protocol, m.host_ip, m.host_port) for m in maps] == [
        (80, "tcp", "127.0.0.1", 8080), (53, "udp", "0.0.0.0", 0)]


def test_limits():
    lim = limits({"Memory": 64 << 20, "CpuQuota": 50000, "CpuPeriod": 100000, "PidsLimit": 10,
                  "CpuShares": 512}, ncpu=2)
    assert (lim.memory_bytes, lim.nano_cpus, lim.pids_limit, lim.cpu_shares) == (64 << 20, 500_000_000, 10, 512)
    assert limits({"PidsLimit": -1}).pids_limit is None


def test_capabilities():
    caps = capabilities({"CapAdd": ["NET_ADMIN"], "CapDrop": ["CHOWN", "cap_kill"]})
    assert "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps and "CAP_KILL" not in caps
    assert capabilities({}) == DEFAULT_CAPABILITIES
    assert capabilities({"CapDrop": ["ALL"], "CapAdd": ["CHOWN"]}) == ("CAP_CHOWN",)
    assert "CAP_SYS_ADMIN" in capabilities({"Privileged": True})


def test_signals():
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("9") == signal.SIGKILL
    assert parse_signal("sighup") == signal.SIGHUP
    assert parse_signal(None) == signal.SIGTERM
    # "²" passes str.isdigit() but not int(): it must be a client error, not a ValueError.
    for bad in ("SIGNOPE", "²", "SIGRTMIN+²"):
        with pytest.raises(InvalidArgument):
            parse_signal(bad)


def test_names():
    assert validate_container_name("/web_1.a-b") == "web_1.a-b"
    for bad in ("", "-x", "a b", "a/b"):
        with pytest.raises(InvalidArgument, match="Invalid container name"):
            validate_container_name(bad)
    name = generate_name(lambda n: False)
    adjective, surname = name.split("_")
    assert adjective.isalpha() and surname.isalpha()
    with pytest.raises(InvalidArgument):
        generate_name(lambda n: True)


def test_log_options():
    from runtime.containers.config import log_rotation, parse_size
    assert parse_size("10m") == 10 << 20 and parse_size("512k") == 512 << 10 and parse_size("100") == 100
    json_file = {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "3"}}
    assert log_rotation({"LogConfig": json_file}) == (1 << 20, 3)
    assert log_rotation({}) == (0, 1)
    # As dockerd's json-file: max-file alone is accepted and rotates nothing.
    assert log_rotation({"LogConfig": {"Type": "json-file", "Config": {"max-file": "3"}}}) == (0, 1)
    for opts, message in (({"max-size": "lots"}, "invalid size"), ({"bogus": "1"}, "unknown log opt"),
                          ({"max-file": "0"}, "less than 1")):
        with pytest.raises(InvalidArgument, match=message):
            build({}, {"LogConfig": {"Type": "json-file", "Config": opts}})
