"""The images service: the image store as the engine exposes it, with events and in-use checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..images.registry_credentials import RegistryCredentials
from ..images.store import Image, ImageStore, ProgressCallback
from .events import EventService
from .registry import ContainerRegistry


class ImageService:
    """Pull, tag, list, inspect, remove and prune images; publishes image events.

    Lock discipline: the ImageStore's own lock guards the index and blobs; removal and
    prune ask the container registry (its lock, taken inside the store's) which images
    containers use.
    """

    def __init__(self, store: ImageStore, registry: ContainerRegistry, events: EventService) -> None:
        self.store = store
        self._registry = registry
        self._events = events

    # reads -------------------------------------------------------------------
    def get(self, ref_or_id: str) -> Image:
        return self.store.get(ref_or_id)

    def list(self) -> list[Image]:
        return self.store.list()

    def history(self, ref_or_id: str) -> list[dict[str, Any]]:
        return self.store.history(ref_or_id)

    def layer_dirs(self, image: Image) -> list[Path]:
        return list(self.store.layer_dirs(image))

    # writes ------------------------------------------------------------------
    def pull(self, reference: str, credentials: RegistryCredentials | None = None,
             progress: ProgressCallback | None = None) -> Image:
        image = self.store.pull(reference, credentials, progress)
        self._events.publish("image", "pull", reference, {"name": reference})
        return image

    def tag(self, ref_or_id: str, repo: str, tag: str = "latest") -> None:
        self.store.tag(ref_or_id, repo, tag)
        image = self.store.get(f"{repo}:{tag}")
        self._events.publish("image", "tag", image.id, {"name": f"{repo}:{tag}"})

    def remove(self, ref_or_id: str, force: bool = False, prune: bool = True,
               in_use_by: Callable[[str], list[str]] | None = None) -> list[dict[str, str]]:
        records = self.store.remove(ref_or_id, force=force, prune=prune,
                                    in_use_by=in_use_by or self._users)
        self._publish_removals(records)
        return records

    def prune(self, dangling_only: bool = True,
              in_use: set[str] | None = None) -> tuple[list[dict[str, str]], int]:
        if in_use is None:
            in_use = {l.c.image_id for l in self._registry.all()}
        records, reclaimed = self.store.prune(dangling_only=dangling_only, in_use=in_use)
        self._publish_removals(records)
        return records, reclaimed

    def _users(self, image_id: str) -> list[str]:
        return self._registry.users_of_image(image_id)

    def _publish_removals(self, records: list[dict[str, str]]) -> None:
        for rec in records:
            if "Untagged" in rec:
                self._events.publish("image", "untag", rec["Untagged"], {"name": rec["Untagged"]})
            if "Deleted" in rec:
                self._events.publish("image", "delete", rec["Deleted"], {"name": rec["Deleted"]})
