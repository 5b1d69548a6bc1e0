"""Fixtures for the API tests: an in-process server for framework tests, the real agent for the rest."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from guest_agent.http_server import Router, UnixHTTPServer


@pytest.fixture
def serve_router(tmp_path: Path) -> Iterator[Callable[[Router], Path]]:
    """Start a UnixHTTPServer for a router in this process; returns its socket path."""
    servers: list[tuple[UnixHTTPServer, threading.Thread]] = []

    def start(router: Router) -> Path:
        path = tmp_path / f"api{len(servers)}.sock"
        server = UnixHTTPServer(str(path), router)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return path

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
