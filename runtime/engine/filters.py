"""Filter predicates shared by the container and volume services (labels, `until`)."""

from __future__ import annotations

from ..timestamps import parse_time_ns


def label_ok(labels: dict[str, str], spec: str) -> bool:
    """Whether labels match a `label` filter value: "key" or "key=value"."""
    key, eq, value = spec.partition("=")
    if key not in labels:
        return False
    return not eq or labels[key] == value


def created_before(created: str, until: str) -> bool:
    """Whether an RFC 3339 creation time is before `until` (unix seconds or a timestamp)."""
    try:
        limit = float(until)
    except ValueError:
        limit = parse_time_ns(until) / 1e9
    return parse_time_ns(created) / 1e9 < limit
