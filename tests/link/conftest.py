"""Fixtures for the SSH link tests: a real sshd on 127.0.0.1 and a far-end socket."""

from __future__ import annotations

import pytest

from desktop.ssh_link import SshLink
from tests.link.far_end import FarEnd
from tests.link.sshd_env import start_link_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    running = start_link_sshd(tmp_path_factory.mktemp("sshd"))
    yield running
    running.stop()


@pytest.fixture
def far_end(tmp_path_factory):
    server = FarEnd(tmp_path_factory.mktemp("far") / "agent.sock")
    yield server
    server.stop()


@pytest.fixture
def link(sshd):
    lk = SshLink(sshd.host, sshd.port, "root", sshd.client_key_path, sshd.host_key_line)
    lk.connect(timeout=10)
    yield lk
    lk.close()
