"""The typed create request: Go's types and messages, ranges, and fields refused by name."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.containers import schema as container_schema
from runtime.containers.config import build_config, merge_image_env, process_env
from runtime.containers.schema import HOST_CONFIG_FIELDS, check_create, unhonoured_fields
from runtime.errors import InvalidArgument

CID = "0123456789ab" + "c" * 52
IMAGE = {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]}


def build(config=None, host_config=None):
    return build_config(CID, {"Image": "x", **(config or {})}, host_config or {}, IMAGE, ncpu=2)


@pytest.mark.parametrize("config, host_config, message", [
    ({"Tty": "yes"}, {}, "string into Go struct field ContainerConfigWrapper.Tty of type bool"),
    ({"Env": ["A", 1]}, {}, "number into Go struct field ContainerConfigWrapper.Env of type string"),
    ({"ExposedPorts": {"80/tcp": 1}}, {}, "number into Go struct field ContainerConfigWrapper.ExposedPorts "
                                          "of type struct {}"),
    ({"Cmd": {"a": 1}}, {}, "object into Go struct field ContainerConfigWrapper.Cmd of type string"),
    ({"StopTimeout": 1.5}, {}, "number 1.5 into Go struct field ContainerConfigWrapper.StopTimeout of type int"),
    ({}, {"Memory": True}, "bool into Go struct field HostConfig.HostConfig.Memory of type int64"),
    ({}, {"Memory": -(2 ** 63) - 1}, "number -9223372036854775809 into Go struct field "
                                      "HostConfig.HostConfig.Memory of type int64"),
    ({}, {"BlkioWeight": 70000}, "number 70000 into Go struct field HostConfig.HostConfig.BlkioWeight "
                                 "of type uint16"),
    ({}, {"ConsoleSize": [-1, 2]}, "number -1 into Go struct field HostConfig.HostConfig.ConsoleSize of type uint"),
    ({}, {"Ulimits": ["nofile"]}, "string into Go struct field HostConfig.HostConfig.Ulimits of type units.Ulimit"),
    ({}, {"Mounts": [{"TmpfsOptions": {"SizeBytes": "1m"}}]},
     "string into Go struct field TmpfsOptions.HostConfig.Mounts.TmpfsOptions.SizeBytes of type int64"),
    ({}, {"RestartPolicy": {"MaximumRetryCount": "3"}},
     "string into Go struct field RestartPolicy.HostConfig.RestartPolicy.MaximumRetryCount of type int"),
    ({}, {"Sysctls": ["kernel.shmmax=1"]}, "array into Go struct field HostConfig.HostConfig.Sysctls "
                                          "of type map[string]string"),
])
def test_wrong_types_get_gos_message(config, host_config, message):
    with pytest.raises(InvalidArgument) as err:
        check_create(config, host_config)
    assert str(err.value) == "json: cannot unmarshal " + message


def test_null_is_the_zero_value_and_keys_match_as_in_go():
    cfg, hc = check_create({"image": "x", "Env": None, "Bogus": 1, "Labels": {"a": None}},
                           {"memory": 7 << 20, "ShmSize": None, "Binds": [None]})
    assert cfg == {"Image": "x", "Env": None, "Labels": {"a": ""}}   # unknown keys dropped, as Go's decoder does
    assert hc == {"Memory": 7 << 20, "ShmSize": None, "Binds": [""]}


@pytest.mark.parametrize("field, value", [
    ("KernelMemoryTCP", 1), ("KernelMemory", 1 << 20), ("BlkioWeight", 300),
    ("BlkioDeviceReadBps", [{"Path": "/dev/sda", "Rate": 1}]), ("CpuRealtimeRuntime", 950000),
    ("CpuRealtimePeriod", 1000000), ("OomKillDisable", True), ("MemorySwappiness", 10),
    ("CgroupParent", "x"), ("Cgroup", "x"), ("UTSMode", "host"), ("UsernsMode", "host"),
    ("StorageOpt", {"size": "1G"}), ("Runtime", "kata"), ("Isolation", "hyperv"),
    ("VolumeDriver", "nfs"), ("CpuCount", 1), ("CpuPercent", 50), ("IOMaximumIOps", 5),
    ("DeviceRequests", [{"Count": 1}]),
])
def test_unhonoured_fields_are_refused_by_name(field, value):
    with pytest.raises(InvalidArgument, match=f"HostConfig.{field} is not supported"):
        build({}, {field: value})


@pytest.mark.parametrize("field, value", [
    ("KernelMemoryTCP", 0), ("BlkioWeight", 0), ("MemorySwappiness", -1), ("MemorySwappiness", None),
    ("OomKillDisable", False), ("Runtime", "runc"), ("Isolation", "default"), ("VolumeDriver", ""),
    ("BlkioWeightDevice", []), ("CgroupParent", ""),
])
def test_unhonoured_fields_at_their_defaults_pass(field, value):
    build({}, {field: value})


def test_health_checks_are_kept_and_their_ranges_checked():
    cfg, _ = build({"Healthcheck": {"Test": ["CMD", "true"], "Interval": 1_000_000}})
    assert cfg["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 1_000_000}
    for key, value, message in [("Interval", 999_999, "Interval in Healthcheck cannot be less than 1ms"),
                                ("Timeout", -1, "Timeout in Healthcheck cannot be less than 1ms"),
                                ("Retries", -1, "Retries in Healthcheck cannot be negative"),
                                ("StartPeriod", 1, "StartPeriod in Healthcheck cannot be less than 1ms"),
                                ("StartInterval", 5, "StartInterval in Healthcheck cannot be less than 1ms")]:
        with pytest.raises(InvalidArgument, match=message):
            build({"Healthcheck": {"Test": ["CMD", "true"], key: value}})


def test_every_field_declares_whether_it_is_honoured():
    refused = unhonoured_fields()
    assert "HostConfig.KernelMemoryTCP" in refused and "HostConfig.Memory" not in refused
    # Fields other parts of the engine implement are typed and honoured here.
    for name in ("SecurityOpt", "Privileged", "PidMode", "IpcMode", "CgroupnsMode", "VolumesFrom",
                 "Devices", "DeviceCgroupRules", "Links", "Binds", "Mounts", "Tmpfs", "GroupAdd",
                 "Ulimits", "Sysctls", "Init", "ShmSize", "CpusetCpus", "CpusetMems", "OomScoreAdj"):
        assert HOST_CONFIG_FIELDS[name].honoured, name
    assert container_schema.CONFIG_FIELDS["MacAddress"].honoured


@pytest.mark.parametrize("host_config, message", [
    ({"ShmSize": -1}, "SHM size can not be less than 0"),
    ({"OomScoreAdj": 1001}, "Invalid value 1001, range for oom score adj is [-1000, 1000]"),
    ({"CpusetCpus": "1-0"}, "Invalid value 1-0 for cpuset cpus: invalid range format: 1-0"),
    ({"CpusetCpus": "a"}, "Invalid value a for cpuset cpus: invalid format: a"),
    ({"CpusetCpus": "4096"}, "Requested CPUs are not available - requested 4096"),
    ({"CpusetMems": "64"}, "Requested memory nodes are not available - requested 64"),
    ({"Memory": 10 << 20, "MemoryReservation": 20 << 20},
     "Minimum memory limit can not be less than memory reservation"),
    ({"Ulimits": [{"Name": "nofiles", "Soft": 1, "Hard": 1}]}, "invalid ulimit type: nofiles"),
    ({"Ulimits": [{"Name": "nofile", "Soft": 2, "Hard": 1}]},
     "ulimit soft limit must be less than or equal to hard limit: 2 > 1"),
    ({"Sysctls": {"kernel.core_pattern": "|/x"}}, "sysctl 'kernel.core_pattern=|/x' is not allowed"),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}, "NetworkMode": "host"}, "not allowed in host network namespace"),
    ({"Sysctls": {"kernel.shmmax": "1"}, "IpcMode": "host"}, "not allowed in host ipc namespace"),
    ({"Sysctls": {"net.ipv4/../../kernel/core_pattern": "1"}}, "is not allowed"),
    ({"LogConfig": {"Type": "syslog"}}, "logging driver"),
])
def test_out_of_range_values_get_dockers_message(host_config, message):
    with pytest.raises(InvalidArgument) as err:
        build({}, host_config)
    assert message in str(err.value)


def test_defaults_as_dockerd_stores_them():
    _, hc = build()
    assert hc["ShmSize"] == 64 << 20 and hc["Init"] is None
    _, hc = build({}, {"LogConfig": {"Type": "none"}})
    assert hc["LogConfig"] == {"Type": "none", "Config": {}}


def test_env_without_value_is_kept_as_dockerd_does():
    # dockerd stores the request's entries as given, then image entries it does not name.
    assert merge_image_env(["PATH=/bin", "A=1", "B=2"], ["B", "C=3"]) == ["B", "C=3", "PATH=/bin", "A=1"]
    cfg, _ = build({"Env": ["FOO", "BAR=1"]})
    assert cfg["Env"] == ["FOO", "BAR=1", "PATH=/usr/bin:/bin"]
    # The process never sees a bare name; a bare PATH removes the default PATH (as dockerd).
    env = process_env({"Env": ["FOO", "BAR=1"], "Hostname": "h"})
    assert "FOO" not in env and "BAR=1" in env
    assert not any(e.startswith("PATH=") for e in process_env({"Env": ["PATH"], "Hostname": "h"}))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
_config_keys = st.sampled_from(sorted(container_schema.CONFIG_FIELDS))
_host_keys = st.sampled_from(sorted(HOST_CONFIG_FIELDS))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.dictionaries(_config_keys, _json, max_size=4),
       host_config=st.dictionaries(_host_keys, _json, max_size=4))
def test_any_json_is_accepted_or_refused_with_invalid_argument(config, host_config):
    """Whatever the values, a create request is either valid or an InvalidArgument (a 400), never a crash."""
    try:
        build(config, host_config)
    except InvalidArgument:
        pass
