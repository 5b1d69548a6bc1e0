"""The images service: the image store as the engine exposes it, with events and in-use checks."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..images.layer_store import LayerRecord
from ..images.pull import ProgressCallback
from ..images.registry_credentials import RegistryCredentials
from ..images.store import Image, ImageStore
from .events import EventService
from .registry import ContainerRegistry

if TYPE_CHECKING:   # image_authoring imports tarfile & co., which only authoring needs
    from ..images.image_authoring import Readable


class ImageService:
    """Pull, tag, list, inspect, remove and prune images; publishes image events.

    Lock discipline: the ImageStore's own lock guards the index and blobs. `_use_lock`
    guards `_creating` (container id -> image id of each create in flight) and is held
    across every removal and prune, so "which images are in use" (the registry's
    containers plus creates in flight) cannot change while an image is being deleted.
    A create pins its image under `_use_lock` (resolving it then) and unpins it only
    after the container is in the registry: an rmi either comes first (the create then
    finds no image) or sees the user (refused, or untag only with force). Lock order:
    `_use_lock`, then the store's lock, then the registry's.
    """

    def __init__(self, store: ImageStore, registry: ContainerRegistry, events: EventService) -> None:
        self.store = store
        self._registry = registry
        self._events = events
        self._use_lock = threading.Lock()
        self._creating: dict[str, str] = {}

    @contextmanager
    def pinned(self, ref_or_id: str, container_id: str) -> Iterator[Image]:
        """The image, kept from removal until the block ends (container create)."""
        with self._use_lock:
            image = self.store.get(ref_or_id)   # NotFound("No such image: ...") if gone
            self._creating[container_id] = image.id
        try:
            yield image
        finally:
            with self._use_lock:
                self._creating.pop(container_id, None)

    # reads -------------------------------------------------------------------
    def get(self, ref_or_id: str) -> Image:
        return self.store.get(ref_or_id)

    def list(self) -> builtins.list[Image]:
        return self.store.list()

    def history(self, ref_or_id: str) -> builtins.list[dict[str, Any]]:
        return self.store.history(ref_or_id)

    def layer_dirs(self, image: Image) -> builtins.list[Path]:
        return list(self.store.layer_dirs(image))

    def chain_ids(self, image: Image) -> builtins.list[str]:
        """The image's layers by chain id, lowest first."""
        return self.store.chain_ids(image)

    def layer_blob(self, chain_id: str) -> tuple[str, int, str, Path]:
        """(digest, size, media type, path) of a layer's distributable blob (push, save)."""
        return self.store.layer_blob(chain_id)

    def manifest_for(self, image: Image) -> bytes:
        """The image's Docker schema2 manifest (push, save)."""
        return self.store.manifest_for(image)

    # writes ------------------------------------------------------------------
    def register_layer(self, tar_path: Path, parent_chain: str) -> LayerRecord:
        """A layer from a tar on top of `parent_chain` (see ImageStore.register_layer)."""
        return self.store.register_layer(tar_path, parent_chain)

    def create_image(self, config: dict[str, Any], chain_ids: builtins.list[str],
                     tags: builtins.list[str] | None = None, parent: str = "") -> Image:
        """A new image from a config and registered layers, tagged (see ImageStore.create_image).

        Publishes a "tag" event per tag; the operation's own event (commit, import, load,
        build) is the caller's, which knows which it is.
        """
        image = self.store.create_image(config, chain_ids, list(tags or []), parent)
        for tag in tags or []:
            self._events.publish("image", "tag", image.id, {"name": tag})
        return image

    def pull(self, reference: str, credentials: RegistryCredentials | None = None,
             progress: ProgressCallback | None = None) -> Image:
        image = self.store.pull(reference, credentials, progress)
        self._events.publish("image", "pull", reference, {"name": reference})
        return image

    def push(self, name: str, tag: str | None, credentials: RegistryCredentials | None = None,
             progress: ProgressCallback | None = None) -> None:
        """Push `name:tag`, or every tag of `name` when `tag` is empty, streaming progress."""
        from ..images.push import push_image  # http.client & co.: loaded on the first push
        pushed = push_image(self.store, name, tag, credentials, progress)
        for result in pushed:
            self._events.publish("image", "push", f"{name}:{result.tag}", {"name": f"{name}:{result.tag}"})

    def tag(self, ref_or_id: str, repo: str, tag: str = "latest") -> None:
        self.store.tag(ref_or_id, repo, tag)
        image = self.store.get(f"{repo}:{tag}")
        self._events.publish("image", "tag", image.id, {"name": f"{repo}:{tag}"})

    def remove(self, ref_or_id: str, force: bool = False, prune: bool = True) -> builtins.list[dict[str, str]]:
        """Conflict while a container, or a create in flight, uses it (unless `force`)."""
        with self._use_lock:
            records = self.store.remove(ref_or_id, force=force, prune=prune, in_use_by=self._users)
        self._publish_removals(records)
        return records

    def prune(self, dangling_only: bool = True) -> tuple[builtins.list[dict[str, str]], int]:
        """Unused images (dangling ones only by default); none a container or create uses."""
        with self._use_lock:
            in_use = {live.c.image_id for live in self._registry.all()} | set(self._creating.values())
            records, reclaimed = self.store.prune(dangling_only=dangling_only, in_use=in_use)
        self._publish_removals(records)
        return records, reclaimed

    def import_image(self, source: Readable | str, repo: str = "", tag: str = "", message: str = "",
                     changes: builtins.list[str] | None = None) -> Image:
        """`docker import` of the tar read from `source` (a stream or an http(s) URL)."""
        from .image_import import import_image  # tarfile & co.: only imports need them
        return import_image(self, source, repo, tag, message, changes)

    def save(self, names: builtins.list[str]) -> Iterator[bytes]:
        """`docker save`: the archive of the images `names` stand for, generated as it is read.

        Names are resolved and every layer's blob checked first, so a missing image is an
        error before the first byte; a "save" event per image, as dockerd.
        """
        from ..images.archive_save import check_layers, resolve_names, save_archive
        items = resolve_names(self.store, names)
        check_layers(self.store, items)
        for item in items:
            self.publish("save", item.image.id)
        return save_archive(self.store, items)

    def load(self, source: Readable, emit: ProgressCallback, quiet: bool = False) -> builtins.list[str]:
        """`docker load` of the archive read from `source` (all or nothing); the image ids.

        `emit` gets dockerd's messages: "Loading layer" progress unless `quiet`, then the
        "Loaded image" lines.
        """
        from ..images.archive_load import load_archive
        loaded = load_archive(self.store, source, emit, quiet)
        for image_id in loaded:
            self.publish("load", image_id)
        return loaded

    def publish(self, action: str, image_id: str, name: str = "") -> None:
        """An image event (import, load, save, push ...) from an operation outside this service."""
        self._events.publish("image", action, image_id, {"name": name or image_id})
    def discard_untagged(self, image_id: str) -> None:
        """Forget a builder's temporary image (no names, no container) but keep its layers,
        which the build cache holds: removed as an image whose layers something still uses."""
        with self._use_lock:
            if self._users(image_id) or not self.store.exists(image_id) or self.store.get(image_id).repo_tags:
                return
            self.store.remove(image_id, force=True, in_use_by=lambda _: ["the build cache"])

    def _users(self, image_id: str) -> builtins.list[str]:
        """Containers using the image, including creates in flight (caller holds _use_lock)."""
        creating = [cid for cid, iid in self._creating.items() if iid == image_id]
        # Newest first, as the API layer listed them: a conflict names the newest user.
        users = sorted((live.c for live in self._registry.all() if live.c.image_id == image_id),
                       key=lambda c: c.created, reverse=True)
        return creating + [c.id for c in users]

    def _publish_removals(self, records: builtins.list[dict[str, str]]) -> None:
        for rec in records:
            if "Untagged" in rec:
                self._events.publish("image", "untag", rec["Untagged"], {"name": rec["Untagged"]})
            if "Deleted" in rec:
                self._events.publish("image", "delete", rec["Deleted"], {"name": rec["Deleted"]})
