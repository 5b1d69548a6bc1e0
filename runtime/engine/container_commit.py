"""`docker commit`: a container's changes (its overlay upper dir) become a new image.

As dockerd: the container is paused while its files are read (unless `pause` is false),
the config is the container's (or the request's) with the `changes` applied and the
container's own config filling what is unset, the history gains one entry whose
created_by is the container's command, and an unchanged container gives an empty layer
(history entry marked empty_layer, no new layer). The new image records the container's
image as its parent (`docker history` and inspect's Parent show it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from ..containers.filesystem_changes import ENGINE_PATHS
from ..errors import Conflict, DockyardError, InvalidArgument, NotFound
from ..images.blob_store import file_digest
from ..images.layer_tar import write_layer_tar
from ..images.reference import parse_reference
from ..images.store import Image
from ..timestamps import now_rfc3339
from ..version import SERVER_VERSION
from .container_context import ContainerContext
from .container_stop import ContainerStopper
from .image_changes import apply_changes, go_container_config, history_entry, merge_container_config
from .live import Live

log = logging.getLogger(__name__)

# sha256 of the 1024 zero bytes of an empty tar: dockerd's "no layer" (layer.DigestSHA256EmptyTar).
EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


# dockerd keeps the paths a container gets from the engine (/etc/hosts, /proc, ...) in an
# "init" layer below the container's: commit, like diff and export, never sees them.
RUNTIME_MOUNT_TARGETS = frozenset(p.lstrip("/") for p in ENGINE_PATHS)


class ContainerCommitter:
    """Makes images from containers.

    Lock discipline: the container's state is read under its `lock`; pausing goes through
    the stopper (which takes the lock itself); the layer is written and registered with no
    container lock held, and the image store takes its own.
    """

    def __init__(self, ctx: ContainerContext, stopper: ContainerStopper) -> None:
        self._ctx = ctx
        self._stopper = stopper

    def commit(self, live: Live, repo: str = "", tag: str = "", message: str = "",
               author: str = "", changes: list[str] | None = None, pause: bool = True,
               config: dict[str, Any] | None = None) -> Image:
        ctx = self._ctx
        c = live.c
        tags = [_target(repo, tag)] if repo else []
        with live.lock:
            if live.removed:
                raise NotFound(f"No such container: {c.id}")
            if c.state.dead:
                raise Conflict(f"You cannot commit container {c.id} which is Dead")
            if live.removing:
                raise Conflict(f"You cannot commit container {c.id} which is being removed")
            container_config = go_container_config(c.config)
            image_id = c.image_id
        # Checked before the container is paused or a byte is read, as dockerd does.
        new_config = apply_changes(go_container_config(config) if config else container_config,
                                   changes or [])
        merge_container_config(new_config, container_config)
        parent = ctx.images.get(image_id)
        chains = ctx.images.chain_ids(parent)
        # As dockerd: the image is made and the event sent before the container is unpaused.
        with self._paused(live, pause):
            layer = self._register_diff(c.id, chains[-1] if chains else "")
            now = now_rfc3339()
            history = [*(parent.config.get("history") or []),
                       history_entry(now, " ".join(c.config.get("Cmd") or []), author, message,
                                     empty=layer is None)]
            image_config: dict[str, Any] = {
                "architecture": parent.config.get("architecture", "amd64"),
                "config": go_container_config(new_config),
                "container": c.id,
                "container_config": container_config,
                "created": now,
                "docker_version": SERVER_VERSION,
                "history": history,
                "os": parent.config.get("os", "linux"),
            }
            if author:
                image_config["author"] = author
            if parent.config.get("variant"):
                image_config["variant"] = parent.config["variant"]
            image = ctx.images.create_image(image_config, chains + ([layer] if layer else []), tags,
                                            parent=parent.id)
            ctx.events.container(c, "commit", comment=message, imageID=image.id,
                                 imageRef=tags[0] if tags else "")
        return image

    @contextlib.contextmanager
    def _paused(self, live: Live, pause: bool) -> Iterator[None]:
        """Freeze a running container's processes while its files are read (dockerd's --pause)."""
        with live.lock:
            freeze = pause and live.c.state.running and not live.c.state.paused
        if not freeze:
            yield
            return
        self._stopper.pause(live)
        try:
            yield
        finally:
            try:
                self._stopper.unpause(live)
            except DockyardError as err:   # it exited meanwhile: nothing left to thaw
                log.debug("unpause after commit of %s: %s", live.c.id[:12], err)

    def _register_diff(self, container_id: str, parent_chain: str) -> str | None:
        """The container's changes as a layer on `parent_chain`; None when there are none."""
        images = self._ctx.images
        diff = self._ctx.store.dir(container_id) / "diff"
        if not diff.is_dir():
            return None   # created but never started: nothing changed yet
        tmp = images.store.blobs.new_temp()
        try:
            with open(tmp, "wb") as out:
                write_layer_tar(diff, out, exclude=RUNTIME_MOUNT_TARGETS)
            if file_digest(tmp) == EMPTY_TAR_DIFF_ID:
                return None
            return images.register_layer(tmp, parent_chain).chain_id
        finally:
            tmp.unlink(missing_ok=True)


def _target(repo: str, tag: str) -> str:
    """dockerd's RepoTagReference: "repo" or "repo:tag" (latest by default); a 400 if malformed."""
    ref = parse_reference(f"{repo}:{tag}" if tag else repo)
    if ref.digest:
        raise InvalidArgument("refusing to create a tag with a digest reference")
    return ref.familiar()
