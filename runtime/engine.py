"""The engine: containers, execs, volumes and events on top of images, processes and networks.

CONTRACT STUB — owned by the engine work; the guest agent's API layer relies on
the names and signatures below. Inputs that mirror the Docker Engine API take
Docker's own JSON shapes (dicts), because that is the domain model of a
Docker-compatible runtime; outputs are the dataclasses in `runtime.models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .image_store import ImageStore
from .models import Container, Event, ExecInstance, Volume


@dataclass
class LogRecord:
    """One line (or chunk) of container output."""

    stream: str        # "stdout" | "stderr"
    data: bytes        # with its trailing newline, if it had one
    time: str          # RFC 3339 nanoseconds UTC


class AttachSession:
    """A live connection to a container's (or exec's) stdio.

    `output()` yields (stream, bytes) with stream 1 = stdout, 2 = stderr (TTY: all 1)
    until the process exits and every byte it wrote has been yielded, then stops.
    """

    def output(self) -> Iterator[tuple[int, bytes]]:
        raise NotImplementedError

    def write_stdin(self, data: bytes) -> None:
        raise NotImplementedError

    def close_stdin(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Detach (client went away); the process keeps running."""
        raise NotImplementedError


class WaitHandle:
    """Registered before the container starts (the docker CLI waits before it starts)."""

    def result(self, timeout: float | None = None) -> tuple[int, str]:
        """Block until the condition is met: (exit code, error message or "")."""
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class EventSubscription:
    """Iterate to receive events as they happen (past ones first when `since` was given)."""

    def __iter__(self) -> Iterator[Event]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Engine:
    """One engine per root directory: <root>/images, containers, volumes, network."""

    images: ImageStore

    def __init__(self, root: Path, insecure_registries: list[str] | None = None) -> None:
        raise NotImplementedError

    # lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Load state; mark containers that were running as exited; apply restart policies."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop running containers (state kept on disk); called on SIGTERM/SIGINT."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Counts and host facts for `GET /info` (Containers, ContainersRunning, Images, NCPU, MemTotal, ...)."""
        raise NotImplementedError

    # containers ----------------------------------------------------------
    def create_container(self, name: str | None, config: dict[str, Any], host_config: dict[str, Any],
                         networking_config: dict[str, Any] | None = None) -> Container:
        """Raises NotFound("No such image: X") so the CLI pulls, Conflict on a taken name."""
        raise NotImplementedError

    def get_container(self, ref: str) -> Container:
        """By full id, unique id prefix, or name (with or without "/"). NotFound otherwise."""
        raise NotImplementedError

    def list_containers(self, all: bool = False, filters: dict[str, list[str]] | None = None,
                        limit: int = -1) -> list[Container]:
        raise NotImplementedError

    def start_container(self, ref: str) -> None:
        """NotModified if running; ContainerStartError if the process cannot start."""
        raise NotImplementedError

    def stop_container(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        """StopSignal (default SIGTERM), wait `timeout` (default StopTimeout or 10 s), then SIGKILL."""
        raise NotImplementedError

    def kill_container(self, ref: str, signal: str = "SIGKILL") -> None:
        raise NotImplementedError

    def restart_container(self, ref: str, timeout: int | None = None) -> None:
        raise NotImplementedError

    def remove_container(self, ref: str, force: bool = False, remove_volumes: bool = False) -> None:
        raise NotImplementedError

    def rename_container(self, ref: str, new_name: str) -> None:
        raise NotImplementedError

    def prune_containers(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        raise NotImplementedError

    def wait_container(self, ref: str, condition: str = "not-running") -> WaitHandle:
        """condition: "not-running" | "next-exit" | "removed"."""
        raise NotImplementedError

    def attach_container(self, ref: str, stdin: bool, stdout: bool, stderr: bool,
                         logs: bool = False) -> AttachSession:
        raise NotImplementedError

    def container_logs(self, ref: str, stdout: bool = True, stderr: bool = True, follow: bool = False,
                       since: float = 0, until: float = 0, tail: int | None = None) -> Iterator[LogRecord]:
        raise NotImplementedError

    def resize_container_tty(self, ref: str, height: int, width: int) -> None:
        raise NotImplementedError

    def top_container(self, ref: str, ps_args: str = "") -> tuple[list[str], list[list[str]]]:
        """(Titles, Processes) as `docker top` shows."""
        raise NotImplementedError

    # exec ----------------------------------------------------------------
    def create_exec(self, ref: str, cmd: list[str], env: list[str] | None = None, user: str = "",
                    working_dir: str = "", tty: bool = False, attach_stdin: bool = False,
                    attach_stdout: bool = True, attach_stderr: bool = True,
                    privileged: bool = False) -> ExecInstance:
        """Conflict if the container is not running."""
        raise NotImplementedError

    def get_exec(self, exec_id: str) -> ExecInstance:
        raise NotImplementedError

    def start_exec(self, exec_id: str, detach: bool = False) -> AttachSession | None:
        raise NotImplementedError

    def resize_exec_tty(self, exec_id: str, height: int, width: int) -> None:
        raise NotImplementedError

    # volumes -------------------------------------------------------------
    def create_volume(self, name: str | None = None, driver: str = "local",
                      labels: dict[str, str] | None = None,
                      options: dict[str, str] | None = None) -> Volume:
        raise NotImplementedError

    def get_volume(self, name: str) -> Volume:
        raise NotImplementedError

    def list_volumes(self, filters: dict[str, list[str]] | None = None) -> list[Volume]:
        raise NotImplementedError

    def remove_volume(self, name: str, force: bool = False) -> None:
        """Conflict while a container uses it."""
        raise NotImplementedError

    def prune_volumes(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        raise NotImplementedError

    def volume_users(self, name: str) -> list[str]:
        """Ids of containers that mount the volume."""
        raise NotImplementedError

    # events --------------------------------------------------------------
    def subscribe_events(self, since: float | None = None, until: float | None = None,
                         filters: dict[str, list[str]] | None = None) -> EventSubscription:
        raise NotImplementedError
