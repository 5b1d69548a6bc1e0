"""Bind mounts of host paths outside the shared folders are refused at the host socket ("Mounts denied").

The real docker CLI and docker-py talk to the real agent through the host
socket and the SSH link (the agent runs natively behind the local sshd, as in
test_real_agent.py); the VM test in tests/machine/test_vm_rough_edges.py
covers the same through a booted machine.
"""

from __future__ import annotations

import json
import socket

import pytest

from desktop.host_socket import HostSocket
from desktop.mounts_policy import MountsPolicy

DENIED = "The path /etc is not shared from the host and is not known to Docker."


@pytest.fixture
def shared(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "note.txt").write_text("from the host\n")
    return folder


@pytest.fixture
def gated_socket(link, agent, tmp_path, shared):
    hs = HostSocket(tmp_path / "dy" / "docker.sock", link, remote_socket=str(agent.socket),
                    mounts_policy=MountsPolicy([str(shared)]))
    hs.start()
    yield hs
    hs.stop()



def _docker(agent, hs: HostSocket, *args: str, **kwargs):
    return agent.docker_through(hs.socket_path, *args, **kwargs)


def test_dash_v_outside_the_shares_is_denied(agent, gated_socket, test_images):
    out = _docker(agent, gated_socket, "run", "--rm", "-v", "/etc:/x", test_images["busybox"], "true")
    assert out.returncode == 125, out
    assert "Mounts denied:" in out.stderr and DENIED in out.stderr
    assert "dockyard machine init --mount" in out.stderr
    # Nothing reached the engine: no container was created.
    assert _docker(agent, gated_socket, "ps", "-aq").stdout.strip() == ""


def test_mount_type_bind_outside_the_shares_is_denied(agent, gated_socket, test_images):
    out = _docker(agent, gated_socket, "run", "--rm", "--mount", "type=bind,src=/etc,dst=/x",
                  test_images["busybox"], "true")
    assert out.returncode == 125, out
    assert DENIED in out.stderr


def test_a_path_that_climbs_out_of_a_share_is_denied(agent, gated_socket, shared, test_images):
    out = _docker(agent, gated_socket, "run", "--rm", "-v", f"{shared}/../../../etc:/x",
                  test_images["busybox"], "true")
    assert out.returncode == 125, out
    assert "Mounts denied:" in out.stderr


def test_shared_paths_and_named_volumes_pass(agent, gated_socket, shared, test_images):
    out = _docker(agent, gated_socket, "run", "--rm", "-v", f"{shared}:/data", "-v", "rough-vol:/vol",
                  "--mount", f"type=bind,src={shared / 'note.txt'},dst=/note", test_images["busybox"],
                  "sh", "-c", "cat /data/note.txt /note && touch /vol/ok")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from the host\nfrom the host\n"
    _docker(agent, gated_socket, "volume", "rm", "rough-vol")


def test_docker_py_binds_and_mounts_are_checked(agent, gated_socket, shared, test_images):
    import docker
    from docker.types import Mount

    client = docker.DockerClient(base_url=f"unix://{gated_socket.socket_path}", timeout=120)
    try:
        with pytest.raises(docker.errors.APIError) as denied:
            client.containers.create(test_images["busybox"], "true", volumes={"/etc": {"bind": "/x"}})
        assert denied.value.status_code == 400 and DENIED in str(denied.value.explanation)
        with pytest.raises(docker.errors.APIError):
            client.containers.create(test_images["busybox"], "true",
                                     mounts=[Mount("/x", "/etc", type="bind")])
        ok = client.containers.create(test_images["busybox"], "true",
                                      mounts=[Mount("/x", str(shared), type="bind")])
        ok.remove()
    finally:
        client.close()


def test_attach_stream_still_passes_through(agent, gated_socket, shared, test_images):
    # The hijacked stdin stream after the attach upgrade must not be parsed as requests.
    out = _docker(agent, gated_socket, "run", "--rm", "-i", "-v", f"{shared}:/data", test_images["busybox"],
                  "sh", "-c", "cat; echo done", input="POST /containers/create HTTP/1.1\r\n\r\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "POST /containers/create HTTP/1.1\n\ndone\n"   # text mode folds CRLF


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send one request on a kept-alive connection and read its whole (Content-Length) answer."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def _chunked(body: bytes, size: int) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_chunked_bodies_keep_the_requests_after_them_checked(gated_socket, test_images):
    create = json.dumps({"Image": test_images["busybox"], "Cmd": ["true"],
                         "HostConfig": {"Binds": ["/etc:/x"]}}).encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(gated_socket.socket_path))
        # A chunked body that is not a create (unknown route: the engine answers 404) ...
        junk = b'{"x": "POST /containers/create HTTP/1.1\\r\\n\\r\\n"}' * 50
        status, _ = _exchange(sock, b"POST /v1.44/nothing/here HTTP/1.1\r\nHost: d\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(junk, 7))
        assert status == 404
        # ... then, on the same connection, a chunked create binding /etc.
        status, body = _exchange(sock, b"POST /v1.44/containers/create HTTP/1.1\r\nHost: d\r\n"
                                       b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 + _chunked(create, 5))
    assert status == 400
    assert DENIED in json.loads(body)["message"]
