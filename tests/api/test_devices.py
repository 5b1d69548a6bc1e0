"""--device and --device-cgroup-rule through the real docker CLI,
each compared with Debian's dockerd on the same host."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.side_by_side import Engines


@pytest.fixture(scope="module")
def engines(agent, dockerd, test_images) -> Engines:
    return Engines(agent, dockerd, test_images["busybox"])


def run(engines: Engines, *args: str) -> tuple[str, ...]:
    return ("run", "--rm", "--network", "none", *args[:-1], engines.image, "sh", "-c", args[-1])


# /dev/fuse (10:229) is not among Docker's default devices, so only --device or a rule opens it.
OPEN_FUSE = "ls -ln {0} | cut -c1-10,30-; (: < {0}) 2>&1 && echo read-ok; (: > {0}) 2>&1 && echo write-ok; true"


def test_device_appears_with_its_cgroup_access(engines):
    assert os.path.exists("/dev/fuse")
    full = engines.compare(*run(engines, "--device", "/dev/fuse", OPEN_FUSE.format("/dev/fuse")))
    assert "read-ok" in full.out and "write-ok" in full.out
    read_only = engines.compare(*run(engines, "--device", "/dev/fuse:/dev/myfuse:r", OPEN_FUSE.format("/dev/myfuse")))
    assert "read-ok" in read_only.out and "write-ok" not in read_only.out


def test_device_is_placed_at_the_container_path(engines):
    outcome = engines.compare(*run(engines, "--device", "/dev/null:/dev/mynull:rwm",
                                   "ls -ln /dev/mynull | cut -c1-10,30-; echo x > /dev/mynull && echo written"))
    assert outcome.out.startswith("crw-rw-rw-") and "written" in outcome.out


def test_device_cgroup_rule_allows_a_node_made_inside(engines):
    make = "mknod /tmp/fuse c 10 229 && (: < /tmp/fuse) 2>&1 && echo opened; true"
    denied = engines.compare(*run(engines, make))
    assert "opened" not in denied.out
    allowed = engines.compare(*run(engines, "--device-cgroup-rule", "c 10:229 rwm", make))
    assert "opened" in allowed.out


def test_missing_host_device_is_dockerds_error(engines):
    outcome = engines.compare(*run(engines, "--device", "/dev/dockyard-no-such-device", "true"))
    assert outcome.code == 127
    assert outcome.error == ('error gathering device information while adding custom device '
                             '"/dev/dockyard-no-such-device": no such file or directory')


def test_bad_device_values_get_a_400(engines):
    for host_config, message in (
            ({"DeviceCgroupRules": ["c 1:3 rwx"]}, "invalid device cgroup rule format: 'c 1:3 rwx'"),
            ({"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x",
                           "CgroupPermissions": "rwz"}]}, "invalid device mode: rwz"),
            ({"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "dev/x"}]},
             "invalid device path in container: 'dev/x': it must be absolute")):
        body = json.dumps({"Image": engines.image, "Cmd": ["true"],
                           "HostConfig": {**host_config, "NetworkMode": "none"}}).encode()
        status, _, reply = engines.ours.request("POST", "/v1.41/containers/create", body,
                                                {"Content-Type": "application/json"})
        assert (status, json.loads(reply)["message"]) == (400, message)
