"""docker-py 7.x against `dockyard-agent serve` (it takes different paths than the CLI:
unversioned /version, logs?follow=1 instead of attach, exec through a hijacked socket)."""

from __future__ import annotations

import uuid

import docker
import pytest


@pytest.fixture(scope="module")
def client(agent):
    c = agent.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def busybox(client, test_images) -> str:
    repo, _, tag = test_images["busybox"].rpartition(":")
    client.images.pull(repo, tag=tag)
    return test_images["busybox"]


def test_ping_and_version(client):
    assert client.ping() is True
    version = client.version()
    assert version["ApiVersion"] == "1.45" and version["Os"] == "linux"


def test_images_pull_and_get(client, test_images):
    repo, _, tag = test_images["busybox"].rpartition(":")
    image = client.images.pull(repo, tag=tag)
    assert test_images["busybox"] in image.tags
    assert client.images.get(test_images["busybox"]).id == image.id
    assert any(test_images["busybox"] in i.tags for i in client.images.list())
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("nosuch-image:latest")


def test_containers_run_returns_output(client, busybox):
    out = client.containers.run(busybox, ["sh", "-c", "echo from-py; echo err >&2"], remove=True,
                                stderr=True)
    assert b"from-py\n" in out
    with pytest.raises(docker.errors.ContainerError) as info:
        client.containers.run(busybox, ["sh", "-c", "exit 9"], remove=True)
    assert info.value.exit_status == 9


def test_container_object_lifecycle(client, busybox):
    name = f"py-{uuid.uuid4().hex[:8]}"
    c = client.containers.run(busybox, ["sleep", "300"], name=name, detach=True,
                              labels={"via": "docker-py"})
    try:
        c.reload()
        assert c.status == "running" and c.name == name and c.labels == {"via": "docker-py"}
        assert [x.name for x in client.containers.list(filters={"label": "via=docker-py"})] == [name]
        c.stop(timeout=1)
        assert c.wait()["StatusCode"] == 137
        c.reload()
        assert c.status == "exited"
    finally:
        c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(name)


def test_exec_run_40_times_loses_no_output(client, busybox):
    c = client.containers.run(busybox, ["sleep", "300"], detach=True)
    try:
        for i in range(40):
            result = c.exec_run(["sh", "-c", f"echo out-{i}; echo err-{i} >&2; exit {i % 4}"])
            assert result.exit_code == i % 4
            assert b"out-%d\n" % i in result.output and b"err-%d\n" % i in result.output, (i, result)
        code, (out, err) = c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
        assert (code, out, err) == (0, b"o\n", b"e\n")
    finally:
        c.remove(force=True)


def test_volumes(client, busybox):
    name = f"pyvol-{uuid.uuid4().hex[:8]}"
    vol = client.volumes.create(name, labels={"a": "b"})
    assert vol.name == name and client.volumes.get(name).attrs["Labels"] == {"a": "b"}
    assert name in [v.name for v in client.volumes.list()]
    out = client.containers.run(busybox, ["sh", "-c", "echo x > /v/f && cat /v/f"],
                                volumes={name: {"bind": "/v", "mode": "rw"}}, remove=True)
    assert out == b"x\n"
    vol.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)
