"""Assembles the Docker Engine API: every route module registered on one Router."""

from __future__ import annotations

from runtime.engine.facade import Engine

from .http_server import Router
from .routes_containers import ContainerRoutes
from .routes_exec import ExecRoutes
from .routes_images import ImageRoutes
from .routes_networks import NetworkRoutes
from .routes_system import SystemRoutes
from .routes_volumes import VolumeRoutes


def build_router(engine: Engine, root: str = "",
                 insecure_registries: list[str] | None = None) -> Router:
    """The full API on top of `engine`; `root` is shown as DockerRootDir in /info."""
    router = Router()
    # Specific paths first: /images/{name:path}/... would otherwise swallow them.
    SystemRoutes(engine, root, insecure_registries).register(router)
    ContainerRoutes(engine).register(router)
    ExecRoutes(engine).register(router)
    ImageRoutes(engine).register(router)
    VolumeRoutes(engine).register(router)
    NetworkRoutes(engine).register(router)
    return router
