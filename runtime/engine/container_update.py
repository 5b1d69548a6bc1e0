"""`docker update`: resource limits and restart policy, live on a running container."""

from __future__ import annotations

from typing import Any

from ..containers import config as cc
from ..containers import update as container_update
from ..errors import Conflict, InvalidArgument, RuntimeFailure
from .container_context import ContainerContext
from .live import Live


class ContainerUpdater:
    """Changes a container's HostConfig limits and restart policy.

    Lock discipline: the merge, the cgroup write and the record's save happen under the
    container's `lock`, so a start or an inspect sees the old or the new config, whole.
    """

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx

    def update(self, live: Live, body: Any) -> list[str] | None:
        """Docker's warnings (null)."""
        request = container_update.parse_request(body)
        c = live.c
        with live.lock:
            try:
                hc = container_update.merged_host_config(c.host_config, request)
            except container_update.UpdateConflict as err:
                raise InvalidArgument(f"Cannot update container {c.id}: {err.message}") from None
            if c.state.running and not c.state.restarting:
                from ..linux import cgroups
                try:
                    cgroups.update(cgroups.container_cgroup(c.id), cc.limits(hc))
                except RuntimeFailure as err:
                    # Limits already written stay as they were asked; dockerd's answer is the same.
                    raise Conflict(f"Cannot update container {c.id}: {err.message}") from None
            c.host_config = hc
            self._ctx.store.save_config(c)
        self._ctx.events.container(c, "update")
        return None
