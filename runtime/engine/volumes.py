"""The volumes service: named and anonymous volumes, with events and in-use checks."""

from __future__ import annotations

import builtins

from ..errors import DockyardError
from ..models import Volume
from ..volumes.store import VolumeStore
from .events import EventService
from .filters import label_ok
from .registry import ContainerRegistry


class VolumeService:
    """Create, inspect, list, remove and prune volumes; which containers use one.

    Lock discipline: the VolumeStore's own lock guards the volumes on disk and their
    mount owners; users are read from the container registry (its lock), never while
    holding the store's.
    """

    def __init__(self, store: VolumeStore, registry: ContainerRegistry, events: EventService) -> None:
        self.store = store
        self._registry = registry
        self._events = events

    def create(self, name: str | None = None, driver: str = "local",
               labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, anonymous: bool = False) -> Volume:
        vol, new = self.store.create(name, driver or "local", labels, options, anonymous=anonymous)
        if new:
            self._events.publish("volume", "create", vol.name, {"driver": vol.driver})
        return vol

    def created(self, name: str | None = None, driver: str = "local",
                labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
                anonymous: bool = False) -> tuple[Volume, bool]:
        """As `create`, and whether it is new (container create keeps a list to undo)."""
        vol, new = self.store.create(name, driver or "local", labels, options, anonymous=anonymous)
        if new:
            self._events.publish("volume", "create", vol.name, {"driver": "local"})
        return vol, new

    def get(self, name: str) -> Volume:
        return self.store.get(name)

    def is_anonymous(self, vol: Volume) -> bool:
        return self.store.is_anonymous(vol)

    def list(self, filters: dict[str, builtins.list[str]] | None = None) -> builtins.list[Volume]:
        filters = {k: v for k, v in (filters or {}).items() if v}
        result: builtins.list[Volume] = []
        for vol in self.store.list():
            if "name" in filters and not any(f in vol.name for f in filters["name"]):
                continue
            if "label" in filters and not all(label_ok(vol.labels, f) for f in filters["label"]):
                continue
            if "driver" in filters and vol.driver not in filters["driver"]:
                continue
            if "dangling" in filters:
                dangling = filters["dangling"][0].lower() in ("true", "1")
                if dangling != (not self.users(vol.name)):
                    continue
            result.append(vol)
        return result

    def remove(self, name: str, force: bool = False) -> None:
        """Conflict while a container uses it."""
        self.store.remove(name, in_use_by=self.users(name), force=force)
        self._events.publish("volume", "destroy", name, {"driver": "local"})

    def remove_anonymous(self, name: str) -> None:
        """With its container (`rm -v`): an anonymous volume nothing else uses goes."""
        try:
            vol = self.store.get(name)
        except DockyardError:
            return
        if self.store.is_anonymous(vol) and not self.users(vol.name):
            self.store.remove(vol.name)
            self._events.publish("volume", "destroy", vol.name, {"driver": "local"})

    def prune(self, filters: dict[str, builtins.list[str]] | None = None) -> tuple[builtins.list[str], int]:
        filters = {k: v for k, v in (filters or {}).items() if v}
        # Docker 23+: only anonymous volumes unless all=true.
        prune_all = (filters.pop("all", ["false"])[0].lower() in ("true", "1"))
        deleted: builtins.list[str] = []
        reclaimed = 0
        for vol in self.store.list():
            if self.users(vol.name):
                continue
            if not prune_all and not self.store.is_anonymous(vol):
                continue
            if not all(label_ok(vol.labels, f) for f in filters.get("label", [])):
                continue
            size = self.store.usage(vol.name)
            try:
                self.remove(vol.name)
            except DockyardError:
                continue
            deleted.append(vol.name)
            reclaimed += size
        return deleted, reclaimed

    def usage(self, name: str) -> int:
        """Bytes of the files in the volume (what `docker system df -v` shows); 0 once it is gone."""
        return self.store.usage(name)

    def users(self, name: str) -> builtins.list[str]:
        """Ids of containers that mount the volume."""
        return [live.c.id for live in self._registry.all()
                if any(m.get("Type") == "volume" and m.get("Name") == name for m in live.c.mounts)]
