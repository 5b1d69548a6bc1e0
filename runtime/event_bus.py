"""Engine events: a bounded in-memory history plus live subscribers with Docker's filters."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterator

from .models import Event

# dockerd keeps the last 256 events for `since`; we keep a little more, it is cheap.
HISTORY_SIZE = 1024


def event_matches(event: Event, filters: dict[str, list[str]] | None) -> bool:
    """Docker's /events filters: values of one key are OR-ed, keys are AND-ed."""
    if not filters:
        return True
    attrs = event.attributes
    for key, values in filters.items():
        if not values:
            continue
        if key == "type":
            ok = event.type in values
        elif key in ("event", "action"):
            ok = event.action in values or event.action.split(":")[0] in values
        elif key in ("container", "volume", "network"):
            ok = event.type == key and any(_names(event, v) for v in values)
        elif key == "image":
            ok = (any(_names(event, v) for v in values) if event.type == "image"
                  else attrs.get("image", "") in values)
        elif key == "label":
            ok = any(_label_match(attrs, v) for v in values)
        else:
            ok = True   # filters we do not know narrow nothing, as older daemons did
        if not ok:
            return False
    return True


def _names(event: Event, ref: str) -> bool:
    """The event's object is `ref`: its id, an id prefix, or its name."""
    name = event.attributes.get("name", "")
    return ref in (event.actor_id, name, "/" + name) or (len(ref) >= 3 and event.actor_id.startswith(ref))


def _label_match(attrs: dict[str, str], spec: str) -> bool:
    key, eq, value = spec.partition("=")
    if key not in attrs:
        return False
    return not eq or attrs[key] == value


class EventSubscription:
    """Iterate to receive events as they happen (past ones first when `since` was given)."""

    def __init__(self, bus: EventBus, backlog: list[Event], until_ns: int,
                 filters: dict[str, list[str]] | None) -> None:
        self._bus = bus
        self._backlog = backlog
        self._until_ns = until_ns
        self._filters = filters
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()   # None: closed
        self._closed = False

    def _offer(self, event: Event) -> None:
        if event_matches(event, self._filters):
            self._queue.put(event)

    def __iter__(self) -> Iterator[Event]:
        try:
            for event in self._backlog:
                if self._until_ns and event.time_nano > self._until_ns:
                    return
                yield event
            while not self._closed:
                timeout = None
                if self._until_ns:
                    timeout = (self._until_ns - time.time_ns()) / 1e9
                    if timeout <= 0:
                        return
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    return
                if item is None:
                    return
                if self._until_ns and item.time_nano > self._until_ns:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._unsubscribe(self)
            self._queue.put(None)


class EventBus:
    """Publishes events to every subscriber; thread-safe, never blocks the publisher."""

    def __init__(self, history_size: int = HISTORY_SIZE) -> None:
        self._lock = threading.Lock()
        self._history: collections.deque[Event] = collections.deque(maxlen=history_size)
        self._subscribers: list[EventSubscription] = []

    def publish(self, type_: str, action: str, actor_id: str,
                attributes: dict[str, str] | None = None) -> Event:
        """Record and deliver one event, stamped now."""
        event = Event(type=type_, action=action, actor_id=actor_id,
                      attributes=dict(attributes or {}), time_nano=time.time_ns())
        with self._lock:
            # Stamps must not go backwards for `since` to work; the clock can.
            if self._history and event.time_nano <= self._history[-1].time_nano:
                event.time_nano = self._history[-1].time_nano + 1
            self._history.append(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub._offer(event)
        return event

    def subscribe(self, since: float | None = None, until: float | None = None,
                  filters: dict[str, list[str]] | None = None) -> EventSubscription:
        """`since`/`until` in unix seconds; with only `since`, past events then live ones."""
        until_ns = int(until * 1e9) if until else 0
        with self._lock:
            backlog: list[Event] = []
            if since is not None:
                since_ns = int(since * 1e9)
                backlog = [e for e in self._history
                           if e.time_nano >= since_ns and event_matches(e, filters)]
            sub = EventSubscription(self, backlog, until_ns, filters)
            self._subscribers.append(sub)
        return sub

    def history(self) -> list[Event]:
        with self._lock:
            return list(self._history)

    def _unsubscribe(self, sub: EventSubscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
