"""`docker export` and `docker diff`: a container's whole filesystem, and what it changed.

Export streams a tar of the merged overlay (image layers and upper dir,
mounted read-only in a helper's private namespace, `container_archive.open_view`)
without volumes or binds and without whiteouts, as dockerd's export of the
container's layer mount. Diff reads the upper dir against the image layers
(`containers.filesystem_changes`), running or not.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..containers import archive, filesystem_changes
from ..errors import Conflict, NotFound
from .container_archive import ClosingStream, open_view
from .container_context import ContainerContext


class ContainerExporter:
    """GET /containers/{id}/export and /containers/{id}/changes."""

    def __init__(self, ctx: ContainerContext) -> None:
        self._ctx = ctx

    def export(self, ref: str) -> Iterator[bytes]:
        """The tar stream; the read-only view stays mounted until it ends (or is closed)."""
        live = self._ctx.registry.lookup(ref)
        root = open_view(self._ctx, live, with_mounts=False)

        try:
            owners = archive.OwnerNames(root.fd)
        except BaseException:
            root.close()
            raise
        self._ctx.events.container(live.c, "export")
        return ClosingStream(archive.tar_stream(root.fd, ".", "", owners, include_top=False), root.close)

    def changes(self, ref: str) -> list[tuple[int, str]]:
        """(kind, path) pairs: 0 modified, 1 added, 2 deleted."""
        ctx = self._ctx
        live = ctx.registry.lookup(ref)
        with live.lock:
            c = live.c
            image_id, cid = c.image_id, c.id
        try:
            image = ctx.images.get(image_id)
        except NotFound:
            raise Conflict(f"image {image_id} of container {cid} was removed") from None
        upper = ctx.store.dir(cid) / "diff"
        if not upper.is_dir():
            return []   # never started: nothing changed yet
        return filesystem_changes.changes(upper, ctx.images.layer_dirs(image))
