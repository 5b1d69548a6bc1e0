"""The events service: publishing and subscribing to Docker-style events."""

from __future__ import annotations

from typing import Any

from ..event_bus import EventBus, EventSubscription
from ..models import Container, Event


class EventService:
    """Publishes engine events and hands out subscriptions.

    Lock discipline: none of its own; the EventBus has its lock, and publish never blocks,
    so callers may publish while holding a container's lock (events then go out before
    anyone can observe the new state).
    """

    def __init__(self) -> None:
        self.bus = EventBus()

    def publish(self, kind: str, action: str, actor_id: str, attributes: dict[str, str]) -> None:
        self.bus.publish(kind, action, actor_id, attributes)

    def container(self, c: Container, action: str, **extra: Any) -> None:
        """A container event, with its labels, name and image as attributes (as dockerd)."""
        attrs = {k: str(v) for k, v in (c.config.get("Labels") or {}).items()}
        attrs.update({"name": c.name, "image": c.image})
        attrs.update({k: str(v) for k, v in extra.items()})
        self.bus.publish("container", action, c.id, attrs)

    def subscribe(self, since: float | None = None, until: float | None = None,
                  filters: dict[str, list[str]] | None = None) -> EventSubscription:
        return self.bus.subscribe(since, until, filters)

    def history(self) -> list[Event]:
        return self.bus.history()
