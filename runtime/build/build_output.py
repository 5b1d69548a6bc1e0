"""The classic builder's output: the JSON messages `docker build` prints.

`{"stream": "Step 1/5 : FROM busybox\\n"}`, `{"stream": " ---> 1a2b3c4d5e6f\\n"}`,
`{"aux": {"ID": "sha256:..."}}`; an error ends the stream as
`{"errorDetail": {"message": ...}, "error": ...}` (written by the API layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgument


class StepFailed(InvalidArgument):
    """A RUN's command exited non-zero: the message is dockerd's, the code the command's."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def short(image_id: str) -> str:
    """The 12 hex digits Docker prints for an id."""
    return image_id.removeprefix("sha256:")[:12]


class Output:
    """Writes the build's messages to `emit`."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self.emit = emit

    def stream(self, text: str) -> None:
        if text:
            self.emit({"stream": text})

    def step(self, number: int, total: int, text: str) -> None:
        self.stream(f"Step {number}/{total} : {text}\n")

    def aux(self, image_id: str) -> None:
        self.emit({"aux": {"ID": image_id}})
