"""Crash-safe file writes: a reader sees the old content or the new, never half."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, rename.

    `durable=False` skips the fsync for state that cannot outlive a reboot anyway:
    a crash of the process still leaves the old content or the new, never half.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, obj: Any, mode: int = 0o644, durable: bool = True) -> None:
    """Serialise `obj` as JSON and write it atomically."""
    write_bytes_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode(), mode, durable)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file written by write_json_atomic; `default` if it is absent."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def read_json_not_durable(path: Path, default: Any = None) -> Any:
    """Read a file written with `durable=False`: `default` if it is absent or was torn.

    Without the fsync, a machine that loses power (a killed VM) can come back with
    the renamed file empty or cut short; such state is rebuilt, never a reason for
    the engine not to start.
    """
    try:
        return read_json(path, default)
    except ValueError:
        logging.getLogger(__name__).warning("%s was cut short by a crash: starting it afresh", path)
        return default
