"""What the desktop app shows of an engine, and what it can ask of it, with no UI in it.

`EngineModel` turns docker-py (desktop.engine_client) answers into plain rows
(`ContainerRow`, `ImageRow`, `VolumeRow`) and runs the actions the dashboard
and tray offer: start/stop/restart/remove, logs, inspect, one-shot stats, pull
with the engine's progress stream, run, prune with the space reclaimed.
Every method blocks on the engine: the UI calls them from worker threads.
Live changes come from desktop.engine_events, not from calling these again
on a timer.

Engine errors reach callers as `EngineError`, whose message says what went
wrong and what to do next, in words (never a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"


class EngineError(Exception):
    """An engine call failed; `message` is for the user and says what to do next."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def readable_error(err: BaseException, socket_path: Path | None = None) -> EngineError:
    """One user-facing sentence (and a next step) for an exception from docker-py or the socket."""
    if isinstance(err, EngineError):
        return err
    import docker.errors
    import requests.exceptions

    where = f" at {socket_path}" if socket_path else ""
    chain = _chain(err)
    if any(isinstance(e, (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError)) for e in chain) \
            or "Connection aborted" in str(err) or "Connection refused" in str(err):
        return EngineError(f"The engine is not running{where}. Start the machine from the tray menu "
                           "(Start), or with `dockyard machine start`.")
    if isinstance(err, (requests.exceptions.Timeout, TimeoutError)):
        return EngineError("The engine did not answer in time. It may be busy; try again, or restart the "
                           "machine from Troubleshoot.")
    if isinstance(err, docker.errors.ImageNotFound):
        return EngineError(f"No such image: {_explanation(err)}. Pull it first (Images → Pull).")
    if isinstance(err, docker.errors.NotFound):
        return EngineError(f"It is gone: {_explanation(err)}. The list has been refreshed.")
    if isinstance(err, docker.errors.APIError):
        status = err.status_code or 0
        text = _explanation(err)
        if status == 409:
            return EngineError(f"Not possible right now: {text}.")
        if 400 <= status < 500:
            return EngineError(f"The engine refused this: {text}. Check what you entered.")
        return EngineError(f"The engine failed: {text}. See Troubleshoot for the engine's logs.")
    return EngineError(f"{type(err).__name__}: {err}")


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from (docker-py wraps socket errors)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _explanation(err: Any) -> str:
    text = getattr(err, "explanation", None) or str(err)
    return str(text).strip().rstrip(".")


@dataclass(frozen=True)
class PortLink:
    """One published port: `url` is http://localhost:PORT for TCP ports bound on the host."""

    host_port: int
    container_port: int
    proto: str

    @property
    def url(self) -> str:
        return f"http://localhost:{self.host_port}"

    @property
    def text(self) -> str:
        return f"{self.host_port}→{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class ContainerRow:
    """One container as the dashboard lists it."""

    id: str
    name: str
    image: str
    state: str                  # created, running, paused, restarting, exited, dead
    status: str                 # the engine's "Up 3 minutes" / "Exited (0) 2 seconds ago"
    ports: tuple[PortLink, ...] = ()
    project: str = ""           # the compose project, "" for a lone container
    service: str = ""
    created: float = 0.0

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting", "paused")


@dataclass(frozen=True)
class ImageRow:
    """One image: its tags (or its short id when untagged), size and how many containers use it."""

    id: str
    tags: tuple[str, ...]
    size: int
    created: float
    in_use: int = 0

    @property
    def name(self) -> str:
        return self.tags[0] if self.tags else self.id.split(":")[-1][:12]


@dataclass(frozen=True)
class VolumeRow:
    """One volume: size (-1 when the engine did not say) and the containers that mount it."""

    name: str
    driver: str
    size: int
    used_by: tuple[str, ...] = ()
    mountpoint: str = ""


@dataclass(frozen=True)
class Stats:
    """One sample of a container's use: CPU percent (of one CPU's time × CPUs) and memory bytes."""

    cpu_percent: float
    memory: int
    memory_limit: int


@dataclass
class PullProgress:
    """The state of a pull, from the engine's JSON progress stream, layer by layer.

    Each layer counts twice, downloading then extracting, so the bar keeps moving
    through both halves of a pull as `docker pull`'s per-layer bars do.
    """

    reference: str
    status: str = ""
    # layer id -> [downloaded, extracted, total]
    layers: dict[str, list[int]] = field(default_factory=dict)
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        """0..1 over the bytes of the layers seen so far; None before any size is known."""
        total = sum(t for _, _, t in self.layers.values())
        if total <= 0:
            return 1.0 if self.finished else None
        done = sum(min(d, t) + min(e, t) for d, e, t in self.layers.values())
        return min(1.0, done / (2 * total))

    def feed(self, message: dict[str, Any]) -> None:
        """Take one progress message ({"status", "id", "progressDetail"} or {"error"})."""
        if message.get("error"):
            raise EngineError(f"The pull of {self.reference} failed: {message['error']}.")
        status = str(message.get("status") or "")
        layer = str(message.get("id") or "")
        detail = message.get("progressDetail") or {}
        entry = self.layers.get(layer)
        if layer and detail.get("total") and status in ("Downloading", "Extracting"):
            entry = self.layers.setdefault(layer, [0, 0, int(detail["total"])])
            entry[0 if status == "Downloading" else 1] = int(detail.get("current") or 0)
            if status == "Extracting":
                entry[0] = entry[2]
        elif entry is not None and status == "Download complete":
            entry[0] = entry[2]
        elif entry is not None and status in ("Pull complete", "Already exists"):
            entry[0] = entry[1] = entry[2]
        if status.startswith("Status:") or status.startswith("Digest:"):
            self.finished = True
            for entry in self.layers.values():
                entry[0] = entry[1] = entry[2]
        self.status = f"{layer}: {status}" if layer and layer != self.reference.rsplit(":", 1)[-1] else status


@dataclass(frozen=True)
class CleanupEstimate:
    """What "Clean up" would remove and the bytes it would give back (as the engine reports them)."""

    containers: int
    images: int
    volumes: int
    reclaimable: int


def human_size(n: int) -> str:
    """1536 -> "1.5 kB" (decimal units, as the docker CLI prints them)."""
    if n < 0:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _ports(raw: list[dict[str, Any]] | None) -> tuple[PortLink, ...]:
    seen: dict[tuple[int, int, str], PortLink] = {}
    for port in raw or []:
        public = port.get("PublicPort")
        if public:
            link = PortLink(int(public), int(port.get("PrivatePort") or 0), str(port.get("Type") or "tcp"))
            seen.setdefault((link.host_port, link.container_port, link.proto), link)  # IPv4 and IPv6 twins
    return tuple(sorted(seen.values(), key=lambda p: (p.host_port, p.proto)))


def container_row(raw: dict[str, Any]) -> ContainerRow:
    """A row from one entry of GET /containers/json."""
    labels = raw.get("Labels") or {}
    names = raw.get("Names") or [raw.get("Id", "")[:12]]
    return ContainerRow(
        id=str(raw.get("Id", "")), name=str(names[0]).lstrip("/"), image=str(raw.get("Image", "")),
        state=str(raw.get("State", "")), status=str(raw.get("Status", "")), ports=_ports(raw.get("Ports")),
        project=str(labels.get(COMPOSE_PROJECT_LABEL, "")), service=str(labels.get(COMPOSE_SERVICE_LABEL, "")),
        created=float(raw.get("Created") or 0),
    )


class EngineModel:
    """The engine behind one socket, as rows and actions (blocking calls: use from workers)."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        """docker-py on the socket, made on first use (importing docker-py costs ~0.4 s)."""
        if self._client is None:
            from desktop.engine_client import client_for_socket

            self._client = client_for_socket(self.socket_path, self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            self.client  # noqa: B018 - made here so that an engine that is down is an EngineError too
            return fn()
        except Exception as err:  # noqa: BLE001 - every failure becomes one readable EngineError
            raise readable_error(err, self.socket_path) from err

    # -- engine -----------------------------------------------------------
    def ping(self) -> None:
        """Raises EngineError when the engine does not answer."""
        self._call(lambda: self.client.api.ping())

    def version(self) -> dict[str, Any]:
        return self._call(lambda: self.client.api.version())

    # -- containers -------------------------------------------------------
    def containers(self) -> list[ContainerRow]:
        raw = self._call(lambda: self.client.api.containers(all=True))
        return sorted((container_row(c) for c in raw), key=lambda r: (r.project, r.name))

    def container(self, ident: str) -> ContainerRow | None:
        raw = self._call(lambda: self.client.api.containers(all=True, filters={"id": ident}))
        return container_row(raw[0]) if raw else None

    def start(self, ident: str) -> None:
        self._call(lambda: self.client.api.start(ident))

    def stop(self, ident: str, timeout: int = 10) -> None:
        self._call(lambda: self.client.api.stop(ident, timeout=timeout))

    def restart(self, ident: str, timeout: int = 10) -> None:
        self._call(lambda: self.client.api.restart(ident, timeout=timeout))

    def remove(self, ident: str, force: bool = True) -> None:
        self._call(lambda: self.client.api.remove_container(ident, force=force))

    def stop_all(self) -> list[str]:
        """Stop every running container; returns their names."""
        running = [c for c in self.containers() if c.state in ("running", "restarting", "paused")]
        for row in running:
            self.stop(row.id)
        return [row.name for row in running]

    def inspect(self, ident: str) -> dict[str, Any]:
        return self._call(lambda: self.client.api.inspect_container(ident))

    def logs(self, ident: str, follow: bool = False, timestamps: bool = False, tail: int | str = "all",
             opened: Callable[[Callable[[], None]], object] | None = None) -> Generator[str, None, None]:
        """The container's log as text lines; with `follow`, blocks for new lines until it stops
        or `close()` is called on the returned generator. `opened` is given a function that
        closes the stream from another thread: a follow blocked on a quiet container ends at once."""
        stream = self._call(lambda: self.client.api.logs(ident, stream=True, follow=follow,
                                                         timestamps=timestamps, tail=tail))
        if opened is not None:
            opened(getattr(stream, "close", lambda: None))
        pending = b""
        try:
            for chunk in stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        except Exception as err:  # noqa: BLE001 - an engine going away mid-stream is one message
            raise readable_error(err, self.socket_path) from err
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()

    def stats(self, ident: str) -> Stats:
        """One sample, computed as `docker stats` does from the engine's precpu/cpu pair."""
        raw = self._call(lambda: self.client.api.stats(ident, stream=False))
        cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
        cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0))
        sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
        cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
        percent = (cpu_delta / sys_delta) * cpus * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
        mem = raw.get("memory_stats") or {}
        usage = int(mem.get("usage") or 0) - int((mem.get("stats") or {}).get("inactive_file") or 0)
        return Stats(round(percent, 1), max(usage, 0), int(mem.get("limit") or 0))

    def run(self, image: str, name: str = "", ports: dict[str, int] | None = None,
            volumes: dict[str, str] | None = None, env: dict[str, str] | None = None) -> str:
        """Create and start a detached container; `ports` maps "80/tcp" -> host port, `volumes`
        maps a volume name or absolute host path -> container path. Returns the container id."""
        def go() -> str:
            api = self.client.api
            binds = {src: {"bind": dst, "mode": "rw"} for src, dst in (volumes or {}).items()}
            host_config = api.create_host_config(port_bindings=ports or None, binds=binds or None)
            created = api.create_container(image, name=name or None, detach=True,
                                           ports=list((ports or {}).keys()) or None,
                                           environment=env or None, host_config=host_config,
                                           volumes=list((volumes or {}).values()) or None)
            api.start(created["Id"])
            return str(created["Id"])
        return self._call(go)

    # -- images -----------------------------------------------------------
    def images(self) -> list[ImageRow]:
        raw = self._call(lambda: self.client.api.images())
        users: dict[str, int] = {}
        for c in self._call(lambda: self.client.api.containers(all=True)):
            users[str(c.get("ImageID", ""))] = users.get(str(c.get("ImageID", "")), 0) + 1
        rows = []
        for img in raw:
            tags = tuple(t for t in (img.get("RepoTags") or []) if t and t != "<none>:<none>")
            rows.append(ImageRow(str(img.get("Id", "")), tags, int(img.get("Size") or 0),
                                 float(img.get("Created") or 0), users.get(str(img.get("Id", "")), 0)))
        return sorted(rows, key=lambda r: r.name)

    def remove_image(self, ident: str, force: bool = False) -> None:
        self._call(lambda: self.client.api.remove_image(ident, force=force))

    def pull(self, reference: str, on_progress: Callable[[PullProgress], None] | None = None) -> PullProgress:
        """Pull `reference`, calling `on_progress` after each message of the engine's progress stream."""
        repo, tag = _split_reference(reference)
        progress = PullProgress(reference)
        stream = self._call(lambda: self.client.api.pull(repo, tag=tag, stream=True, decode=True))
        try:
            for message in stream:
                progress.feed(message)
                if on_progress is not None:
                    on_progress(progress)
        except EngineError:
            raise
        except Exception as err:  # noqa: BLE001 - one readable message
            raise readable_error(err, self.socket_path) from err
        return progress

    def prune_images(self) -> int:
        """Remove dangling images; returns the bytes reclaimed."""
        return int(self._call(lambda: self.client.api.prune_images(filters={"dangling": True}))
                   .get("SpaceReclaimed") or 0)

    # -- volumes ----------------------------------------------------------
    def volumes(self) -> list[VolumeRow]:
        listed = self._call(lambda: self.client.api.volumes()).get("Volumes") or []
        sizes: dict[str, int] = {}
        try:
            for vol in self._call(lambda: self.client.api.df()).get("Volumes") or []:
                sizes[vol.get("Name", "")] = int((vol.get("UsageData") or {}).get("Size", -1))
        except EngineError as err:
            log.info("no volume sizes: %s", err.message)
        users: dict[str, list[str]] = {}
        for c in self._call(lambda: self.client.api.containers(all=True)):
            for mount in c.get("Mounts") or []:
                if mount.get("Type") == "volume" and mount.get("Name"):
                    users.setdefault(mount["Name"], []).append(str((c.get("Names") or ["?"])[0]).lstrip("/"))
        rows = [VolumeRow(str(v.get("Name")), str(v.get("Driver", "local")), sizes.get(str(v.get("Name")), -1),
                          tuple(sorted(users.get(str(v.get("Name")), []))), str(v.get("Mountpoint", "")))
                for v in listed]
        return sorted(rows, key=lambda r: r.name)

    def remove_volume(self, name: str, force: bool = False) -> None:
        self._call(lambda: self.client.api.remove_volume(name, force=force))

    def prune_volumes(self) -> int:
        """Remove every volume no container uses, named ones too (API >= 1.42 prunes only anonymous
        volumes unless asked for all); returns the bytes reclaimed."""
        return int(self._call(lambda: self.client.api.prune_volumes(filters={"all": ["true"]}))
                   .get("SpaceReclaimed") or 0)

    # -- clean up ---------------------------------------------------------
    def cleanup_estimate(self) -> CleanupEstimate:
        """What Clean up would remove: stopped containers, dangling images, unused volumes."""
        df = self._call(lambda: self.client.api.df())
        stopped = [c for c in df.get("Containers") or [] if c.get("State") not in ("running", "paused",
                                                                                   "restarting")]
        dangling = [i for i in df.get("Images") or []
                    if not [t for t in (i.get("RepoTags") or []) if t != "<none>:<none>"]
                    and not i.get("Containers")]
        unused = [v for v in df.get("Volumes") or [] if not (v.get("UsageData") or {}).get("RefCount")]
        size = (sum(int(c.get("SizeRw") or 0) for c in stopped)
                + sum(int(i.get("Size") or 0) for i in dangling)
                + sum(max(0, int((v.get("UsageData") or {}).get("Size") or 0)) for v in unused))
        return CleanupEstimate(len(stopped), len(dangling), len(unused), size)

    def clean_up(self) -> int:
        """Prune stopped containers, dangling images and unused volumes; returns bytes reclaimed."""
        reclaimed = int(self._call(lambda: self.client.api.prune_containers()).get("SpaceReclaimed") or 0)
        reclaimed += self.prune_images()
        reclaimed += self.prune_volumes()
        return reclaimed


def _split_reference(reference: str) -> tuple[str, str | None]:
    """"host:5000/busybox:1" -> ("host:5000/busybox", "1"); digests stay in the repository part."""
    reference = reference.strip()
    if "@" in reference:
        return reference, None
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1:]
    return reference, "latest"


def uptime_text(status: str) -> str:
    """The "Up ..." part of the engine's status ("3 minutes"), or "" for a container not running."""
    return status[3:] if status.startswith("Up ") else ""
