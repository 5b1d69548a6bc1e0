"""Typed fields of JSON request bodies, refused with Go's encoding/json wording.

dockerd decodes each body into a Go struct, so a field of the wrong JSON type is
a 400 such as "json: cannot unmarshal number into Go struct field ExecConfig.User
of type string". `BodyFields` reads one decoded object the same way: a missing
field or JSON null gives the Go zero value (or the default given), anything else
of the wrong type raises InvalidArgument with that message. The create body has
its own schema (runtime.containers.config); this serves the other endpoints.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import InvalidArgument
from runtime.go_json import json_kind

# Go's int64, the widest integer a Docker API field takes.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def top_level_object(body: Any, go_type: str) -> dict[str, Any]:
    """`body` if it is a JSON object (null or absent counts as empty), else Go's error."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidArgument(f"json: cannot unmarshal {json_kind(body)} into Go value of type {go_type}")
    return body


class BodyFields:
    """Reads the fields of one JSON object decoded from a request body, as Go would."""

    def __init__(self, body: dict[str, Any], struct: str) -> None:
        self.body = body
        self.struct = struct   # the Go struct's name, for messages ("ExecConfig")

    def get(self, key: str) -> Any:
        """The field's value, matched case-insensitively as Go's JSON decoding does
        (docker-py sends "detachKeys"); None when absent."""
        if key in self.body:
            return self.body[key]
        lowered = key.lower()
        return next((v for k, v in self.body.items() if k.lower() == lowered), None)

    def _error(self, key: str, value: Any, go_type: str, detail: str = "") -> InvalidArgument:
        kind = json_kind(value) + (f" {detail}" if detail else "")
        return InvalidArgument(f"json: cannot unmarshal {kind} into Go struct field "
                               f"{self.struct}.{key} of type {go_type}")

    def string(self, key: str, default: str = "") -> str:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._error(key, value, "string")
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._error(key, value, "bool")
        return value

    def integer(self, key: str, default: int = 0, go_type: str = "int64",
                minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
        value = self.get(key)
        if value is None:
            return default
        return self._int(key, value, go_type, minimum, maximum)

    def _int(self, key: str, value: Any, go_type: str, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(key, value, go_type)
        if isinstance(value, float) and not value.is_integer():
            raise self._error(key, value, go_type, repr(value))
        number = int(value)
        if not minimum <= number <= maximum:
            raise self._error(key, value, go_type, str(number))
        return number

    def string_list(self, key: str) -> list[str]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._error(key, value, "[]string")
        for item in value:
            if not isinstance(item, str):
                raise self._error(key, item, "string")
        return list(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._error(key, value, "map[string]string")
        for item in value.values():
            if not isinstance(item, str):
                raise self._error(key, item, "string")
        return dict(value)

    def uint_pair(self, key: str) -> tuple[int, int] | None:
        """A `*[2]uint` field such as ConsoleSize: None when absent."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._error(key, value, "[2]uint")
        # Go fills a fixed-size array from the first elements and zeroes the rest.
        pair = [self._int(key, item, "uint", 0, 65535) for item in value[:2]] + [0, 0]
        return pair[0], pair[1]

    def object(self, key: str, go_type: str) -> dict[str, Any] | None:
        """A nested struct or map field: None when absent or null."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._error(key, value, go_type)
        return value
