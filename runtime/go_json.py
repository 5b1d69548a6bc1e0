"""Go's encoding/json vocabulary, for error messages that read as dockerd's do."""

from __future__ import annotations

from typing import Any


def json_kind(value: Any) -> str:
    """The JSON type name Go's decoding errors use for `value` ("cannot unmarshal string …")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
