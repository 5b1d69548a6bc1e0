"""The containers service: one entry point per container operation, each in its own module.

Size: one delegating method per operation of the Docker API (commit made it 31); the work is
in the container_<operation> modules, and splitting this facade would split the API, not it.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from typing import Any

from ..containers.archive import PathStat
from ..containers.archive_extract import Readable
from ..containers.log_store import LogRecord
from ..containers.stdio import AttachSession
from ..errors import InvalidArgument, NotModified
from ..images.store import Image
from ..models import Container
from .container_archive import ContainerArchiver
from .container_context import ContainerContext
from .container_create import ContainerCreator
from .container_export import ContainerExporter
from .container_query import ContainerQueries
from .container_remove import ContainerRemover
from .container_run import ContainerRunner
from .container_stop import ContainerStopper
from .container_update import ContainerUpdater
from .live import Live, WaitHandle


class ContainerService:
    """Create, start, stop, kill, pause, remove, rename, prune, wait, attach, logs, top ...

    Each operation lives in its own module (`container_create`, `_run`, `_stop`,
    `_remove`, `_query`) and documents its locking; the shared rule is that a container's
    own `lock` guards its record and run state, the registry's lock only the table, and
    no lock is held while waiting for a process. `inspect` and `list` return snapshots.
    """

    def __init__(self, ctx: ContainerContext) -> None:
        self.ctx = ctx
        self._creator = ContainerCreator(ctx)
        self._stopper = ContainerStopper(ctx)
        self._remover = ContainerRemover(ctx, self._stopper)
        self._runner = ContainerRunner(ctx, self._remover.auto_remove)
        self._queries = ContainerQueries(ctx)
        self._updater = ContainerUpdater(ctx)
        self._archiver = ContainerArchiver(ctx)
        self._exporter = ContainerExporter(ctx)

    # reads -----------------------------------------------------------------
    def inspect(self, ref: str) -> Container:
        """A snapshot of the container (by id, unique id prefix or name); NotFound otherwise."""
        return self._queries.inspect(ref)

    def list(self, all: bool = False, filters: dict[str, builtins.list[str]] | None = None,
             limit: int = -1) -> builtins.list[Container]:
        """Snapshots, newest first."""
        return self._queries.list(all, filters, limit)

    def size(self, ref: str) -> tuple[int, int]:
        return self._queries.size(ref)

    def top(self, ref: str, ps_args: str = "") -> tuple[builtins.list[str], builtins.list[builtins.list[str]]]:
        return self._queries.top(ref, ps_args)

    def pids(self, ref: str) -> builtins.list[int]:
        return self._queries.pids(ref)

    def logs(self, ref: str, stdout: bool = True, stderr: bool = True, follow: bool = False,
             since: float = 0, until: float = 0, tail: int | None = None,
             cancel: threading.Event | None = None) -> Iterator[LogRecord]:
        return self._queries.logs(ref, stdout, stderr, follow, since, until, tail, cancel)

    def cancel_logs(self, ref: str, cancel: threading.Event) -> None:
        self._queries.cancel_logs(ref, cancel)

    # files ---------------------------------------------------------------------
    def archive(self, ref: str, path: str,
                content: bool = True) -> tuple[PathStat, Iterator[bytes] | None]:
        """`docker cp` out: the stat of a path in the container and (unless only the stat is
        asked for, HEAD) its tar stream, which keeps the container's view open until it ends."""
        if not content:
            return self._archiver.stat(ref, path), None
        return self._archiver.get(ref, path)

    def extract(self, ref: str, path: str, body: Readable, no_overwrite_dir_non_dir: bool = False,
                copy_uid_gid: bool = False) -> None:
        """Unpack a tar at a directory of the container (PUT archive)."""
        self._archiver.put(ref, path, body, no_overwrite_dir_non_dir, copy_uid_gid)

    def export(self, ref: str) -> Iterator[bytes]:
        """A tar stream of the container's filesystem, without volumes."""
        return self._exporter.export(ref)

    def changes(self, ref: str) -> builtins.list[tuple[int, str]]:
        """`docker diff`: (kind, path), kind 0 modified, 1 added, 2 deleted."""
        return self._exporter.changes(ref)

    # lifecycle ---------------------------------------------------------------
    def create(self, name: str | None, config: dict[str, Any], host_config: dict[str, Any],
               networking_config: dict[str, Any] | None = None) -> Container:
        return self._creator.create(name, config, host_config, networking_config)

    def start(self, ref: str) -> None:
        self._runner.start(ref)

    def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        """StopSignal (default SIGTERM), wait `timeout` (default StopTimeout or 10 s), then SIGKILL."""
        live = self.ctx.registry.lookup(ref)
        self._stopper.stop(live, self._stopper.stop_timeout(live, timeout), signal, by_user=True)

    def restart(self, ref: str, timeout: int | None = None) -> None:
        live = self.ctx.registry.lookup(ref)
        try:
            self._stopper.stop(live, self._stopper.stop_timeout(live, timeout), None, by_user=True)
        except NotModified:
            pass
        self._runner.run(live, manual=True)
        self.ctx.events.container(live.c, "restart")

    def kill(self, ref: str, signal: str = "SIGKILL") -> None:
        self._stopper.kill(self.ctx.registry.lookup(ref), signal)

    def pause(self, ref: str) -> None:
        self._stopper.pause(self.ctx.registry.lookup(ref))

    def unpause(self, ref: str) -> None:
        self._stopper.unpause(self.ctx.registry.lookup(ref))

    def commit(self, ref: str, repo: str = "", tag: str = "", message: str = "", author: str = "",
               changes: builtins.list[str] | None = None, pause: bool = True,
               config: dict[str, Any] | None = None) -> Image:
        """`docker commit`: the container's changes and config (with `changes` applied) as a new image."""
        from .container_commit import ContainerCommitter  # tarfile & co.: only commits need them
        return ContainerCommitter(self.ctx, self._stopper).commit(
            self.ctx.registry.lookup(ref), repo, tag, message, author, changes, pause, config)

    def remove(self, ref: str, force: bool = False, remove_volumes: bool = False) -> None:
        self._remover.remove(self.ctx.registry.lookup(ref), force, remove_volumes)

    def rename(self, ref: str, new_name: str) -> None:
        self._remover.rename(self.ctx.registry.lookup(ref), new_name)

    def update(self, ref: str, body: Any) -> builtins.list[str] | None:
        """`docker update`: limits and restart policy, live on a running container."""
        return self._updater.update(self.ctx.registry.lookup(ref), body)

    def prune(self, filters: dict[str, builtins.list[str]] | None = None) -> tuple[builtins.list[str], int]:
        return self._remover.prune(filters)

    # stdio and waits -----------------------------------------------------------
    def wait(self, ref: str, condition: str = "not-running") -> WaitHandle:
        """condition: "not-running" | "next-exit" | "removed"."""
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: \"{condition}\"")
        return WaitHandle(self.ctx.registry.lookup(ref), condition)

    def attach(self, ref: str, stdin: bool, stdout: bool, stderr: bool,
               logs: bool = False) -> AttachSession:
        live = self.ctx.registry.lookup(ref)
        session = live.hub.attach(stdin, stdout, stderr, logs)
        self.ctx.events.container(live.c, "attach")
        return session

    def resize_tty(self, ref: str, height: int, width: int) -> None:
        live = self.ctx.registry.lookup(ref)
        if not live.c.config.get("Tty"):
            return   # dockerd accepts and ignores a resize without a TTY
        live.hub.resize(height, width)

    # engine life -----------------------------------------------------------------
    def run_at_boot(self, live: Live) -> None:
        """Start a recovered container whose restart policy says so (engine start)."""
        self._runner.run(live, manual=False)

    def auto_remove(self, live: Live) -> None:
        self._remover.auto_remove(live)

    def stop_for_shutdown(self, live: Live, cap: float) -> None:
        self._stopper.stop(live, min(self._stopper.stop_timeout(live, None), cap), None, by_user=False)

    def cancel_restart(self, live: Live) -> bool:
        """Cancel a pending policy restart (caller holds live.lock)."""
        return self._stopper.cancel_restart(live)
