"""The host socket in front of the real dockyard-agent, driven by the real docker CLI.

Here the agent runs natively behind the local sshd (same OpenSSH as the
guest); the VM tests cover the same path with the agent inside the guest.
"""

from __future__ import annotations

import pytest

from desktop.host_socket import HostSocket


@pytest.fixture
def agent_socket(link, agent, tmp_path):
    hs = HostSocket(tmp_path / "dy" / "docker.sock", link, remote_socket=str(agent.socket))
    hs.start()
    yield hs
    hs.stop()



def _docker(agent, hs: HostSocket, *args: str, **kwargs):
    return agent.docker_through(hs.socket_path, *args, **kwargs)


def test_docker_version_through_the_link(agent, agent_socket):
    out = _docker(agent, agent_socket, "version", "--format", "{{.Server.APIVersion}}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("1.")


def test_interactive_run_with_stdin_eof(agent, agent_socket, test_images):
    # `-i` attaches stdin through the hijacked connection; `cat` only exits
    # when the CLI's half-close reaches the container as EOF.
    out = _docker(agent, agent_socket, "run", "--rm", "-i", test_images["busybox"], "sh", "-c",
                  "cat; echo done", input="line one\nline two\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "line one\nline two\ndone\n"


def test_exit_code_and_stderr_through_the_link(agent, agent_socket, test_images):
    out = _docker(agent, agent_socket, "run", "--rm", test_images["busybox"], "sh", "-c",
                  "echo to-out; echo to-err >&2; exit 7")
    assert out.returncode == 7
    assert out.stdout == "to-out\n" and out.stderr == "to-err\n"


def test_docker_py_through_the_link(agent, agent_socket, test_images):
    import docker

    client = docker.DockerClient(base_url=f"unix://{agent_socket.socket_path}", timeout=120)
    try:
        assert client.ping()
        output = client.containers.run(test_images["busybox"], ["echo", "via docker-py"], remove=True)
        assert output == b"via docker-py\n"
    finally:
        client.close()
