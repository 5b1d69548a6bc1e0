"""docker login / pull / logout against real registries that demand credentials (Basic and token)."""

from __future__ import annotations

import pytest

from tests.conftest import CACHE_DIR
from tests.support.registry import start_registry
from tests.support.test_images import push_test_images


@pytest.fixture(scope="module", params=["basic", "token"])
def auth_registry(request, tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp(f"registry-{request.param}"), auth=request.param)
    refs = push_test_images(reg, CACHE_DIR, names=["busybox"])
    yield reg, refs["busybox"]
    reg.stop()


def test_login_pull_logout(agent, auth_registry):
    reg, ref = auth_registry
    result = agent.docker("login", "-u", reg.username, "--password-stdin", reg.host,
                          input="wrong-password\n")
    assert result.returncode == 1
    assert "401" in result.stderr or "nauthorized" in result.stderr, result.stderr

    result = agent.docker("login", "-u", reg.username, "--password-stdin", reg.host,
                          input=reg.password + "\n")
    assert result.returncode == 0, result.stderr
    assert "Login Succeeded" in result.stdout
    result = agent.docker("pull", ref, timeout=180)
    assert result.returncode == 0, result.stderr
    assert agent.docker("run", "--rm", ref, "echo", "authed").stdout == "authed\n"

    assert agent.docker("rmi", ref).returncode == 0
    assert agent.docker("logout", reg.host).returncode == 0
    result = agent.docker("pull", ref, timeout=180)
    assert result.returncode == 1
    assert result.stderr.strip(), "the refused pull must say why"
