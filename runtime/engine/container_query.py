"""Reads of containers: inspect and list (snapshots), size, top, logs."""

from __future__ import annotations

import builtins
import re
import threading
from collections.abc import Iterator

from ..containers import health as container_health
from ..containers.log_store import LogRecord
from ..errors import Conflict, DockyardError, InvalidArgument, NotFound
from ..models import Container
from .container_context import ContainerContext
from .filters import label_ok
from .proc_table import ps_from_proc, ps_with_args
from .processes import launcher


class ContainerQueries:
    """Inspect, list, size, top, pids and logs.

    Lock discipline: every record handed out is a snapshot taken under its container's
    `lock` (`Live.snapshot`), so a caller never sees a half-updated container nor one that
    changes under it. Filters run on those snapshots, outside every lock.
    """

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx

    def inspect(self, ref: str) -> Container:
        """A consistent, independent copy of the container's record."""
        return self._ctx.registry.lookup(ref).snapshot()

    def list(self, all: bool = False, filters: dict[str, builtins.list[str]] | None = None,
             limit: int = -1) -> builtins.list[Container]:
        containers = sorted((live.snapshot() for live in self._ctx.registry.all()),
                            key=lambda c: c.created, reverse=True)
        if limit is not None and limit > 0:
            all = True
        filters = {k: v for k, v in (filters or {}).items() if v}
        if not all and "status" not in filters:
            containers = [c for c in containers if c.state.running or c.state.restarting]
        for value in (filters or {}).get("health", []):
            if value not in container_health.FILTER_VALUES:
                raise InvalidArgument(f"Unrecognised filter value for health: {value}")
        if filters:
            containers = [c for c in containers if self._matches(c, filters)]
        if limit is not None and limit > 0:
            containers = containers[:limit]
        return containers

    def _matches(self, c: Container, filters: dict[str, builtins.list[str]]) -> bool:
        for key, values in filters.items():
            if key == "id":
                ok = any(c.id.startswith(v) for v in values)
            elif key == "name":
                try:
                    ok = any(re.search(v.lstrip("/"), c.name) for v in values)
                except re.error as err:
                    raise InvalidArgument(f"invalid name filter: {err}") from None
            elif key == "label":
                labels = c.config.get("Labels") or {}
                ok = all(label_ok(labels, v) for v in values)
            elif key == "status":
                ok = c.state.status in values
            elif key == "exited":
                ok = c.state.status == "exited" and str(c.state.exit_code) in values
            elif key == "ancestor":
                ok = any(self._is_ancestor(c, v) for v in values)
            elif key == "volume":
                ok = any(m.get("Name") in values or m.get("Destination") in values
                         or m.get("Source") in values for m in c.mounts)
            elif key == "network":
                ok = self._ctx.networks.on_network(c, values)
            elif key == "health":
                health = c.state.health
                ok = (health.get("Status") if health else container_health.NO_HEALTHCHECK) in values
            elif key in ("before", "since"):
                ok = True
                for v in values:
                    try:
                        other = self._ctx.registry.lookup(v).c
                    except NotFound:
                        return False
                    ok = ok and (c.created < other.created if key == "before" else c.created > other.created)
            else:
                raise InvalidArgument(f"invalid filter '{key}'")
            if not ok:
                return False
        return True

    def _is_ancestor(self, c: Container, ref: str) -> bool:
        if ref in (c.image, c.image_id) or c.image_id.startswith("sha256:" + ref):
            return True
        try:
            return self._ctx.images.get(ref).id == c.image_id
        except DockyardError:
            return False

    def size(self, ref: str) -> tuple[int, int]:
        """(SizeRw, SizeRootFs): bytes in the container's writable layer, and that plus its image.

        (0, 0) for a container removed meanwhile: listings ask for each entry in turn.
        """
        try:
            c = self._ctx.registry.lookup(ref).c
        except NotFound:
            return 0, 0
        rw = self._ctx.rw_size(c)
        try:
            image_size = self._ctx.images.get(c.image_id).size
        except NotFound:
            image_size = 0
        return rw, rw + image_size

    def top(self, ref: str, ps_args: str = "") -> tuple[builtins.list[str], builtins.list[builtins.list[str]]]:
        """(Titles, Processes) as `docker top` shows."""
        live = self._ctx.registry.lookup(ref)
        with live.lock:
            if not live.c.state.running or live.spec is None:
                raise Conflict(f"Container {live.c.id} is not running")
            spec = live.spec
        pids = set(launcher().container_pids(spec))
        if ps_args:
            return ps_with_args(pids, ps_args)
        return ps_from_proc(sorted(pids))

    def pids(self, ref: str) -> builtins.list[int]:
        """Host pids of the container's processes (empty when it is not running)."""
        live = self._ctx.registry.lookup(ref)
        with live.lock:
            spec = live.spec
            running = live.c.state.running
        if not running or spec is None:
            return []
        return list(launcher().container_pids(spec))

    def logs(self, ref: str, stdout: bool = True, stderr: bool = True, follow: bool = False,
             since: float = 0, until: float = 0, tail: int | None = None,
             cancel: threading.Event | None = None) -> Iterator[LogRecord]:
        """The container's log records; with `follow`, `cancel_logs(ref, cancel)` ends the wait."""
        live = self._ctx.registry.lookup(ref)
        records: Iterator[LogRecord] = live.log.read(stdout=stdout, stderr=stderr, since=since,
                                                     until=until, tail=tail, follow=follow,
                                                     cancel=cancel)
        return records

    def cancel_logs(self, ref: str, cancel: threading.Event) -> None:
        """Release a follower of `logs` (its client went away)."""
        try:
            live = self._ctx.registry.lookup(ref)
        except NotFound:
            cancel.set()   # removed: its log ended anyway
            return
        live.log.cancel_follow(cancel)
