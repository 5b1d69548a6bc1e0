"""Health checks: Docker's `HEALTHCHECK` / `--health-*` settings and the scheduler that probes.

dockerd (daemon/health.go) runs a container's probe as an exec inside it every
Interval (StartInterval while the container is still "starting" within its
StartPeriod), keeps the last five results with at most 4 KiB of output each,
and moves State.Health between "starting", "healthy" and "unhealthy":

- a probe that exits 0 makes it healthy and clears the failing streak;
- any other result (a non-zero exit, a probe that could not start, a timeout)
  adds to the failing streak, except while it is still "starting" inside its
  start period; Retries failures in a row make it unhealthy.

Here one timer thread schedules every container's next probe (a heap of due
times, waits on a condition, never polls); the probes themselves run on a
small pool of worker threads, because one probe may take up to its timeout.
How a probe is run is the caller's business (`ProbeRunner`): the engine runs it
through its exec path.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..timestamps import now_rfc3339

log = logging.getLogger(__name__)

NANOSECOND = 1e-9
DEFAULT_INTERVAL = 30.0          # seconds, as dockerd's defaultProbeInterval
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5              # dockerd's maxLogEntries
MAX_OUTPUT_LEN = 4096            # dockerd's maxOutputLen (bytes of probe output kept)
MIN_DURATION_NS = 1_000_000      # container.MinimumDuration: 1ms
PROBE_WORKERS = 8

STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK = "starting", "healthy", "unhealthy", "none"
FILTER_VALUES = (STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK)


def validate(healthcheck: dict[str, Any] | None) -> None:
    """Docker's range checks of Config.Healthcheck (durations in nanoseconds), its messages."""
    if not healthcheck:
        return
    # dockerd's order: Interval, Timeout, Retries, StartPeriod, StartInterval.
    for name in ("Interval", "Timeout", "Retries", "StartPeriod", "StartInterval"):
        value = int(healthcheck.get(name) or 0)
        if name == "Retries":
            if value < 0:
                raise InvalidArgument("Retries in Healthcheck cannot be negative")
        elif value != 0 and value < MIN_DURATION_NS:
            raise InvalidArgument(f"{name} in Healthcheck cannot be less than 1ms")


def merge_image(user: dict[str, Any] | None, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """Config.Healthcheck with the image's HEALTHCHECK filling what the request left at zero."""
    if not user:
        return dict(image) if image else None
    merged = dict(user)
    if image:
        if not merged.get("Test"):
            merged["Test"] = image.get("Test")
        for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
            if not merged.get(key) and image.get(key):
                merged[key] = image[key]
    return merged


@dataclass(frozen=True)
class HealthSettings:
    """One container's probe: what it runs and how often, durations in seconds."""

    argv: list[str]
    interval: float
    timeout: float
    start_period: float
    start_interval: float
    retries: int

    @staticmethod
    def from_config(config: dict[str, Any]) -> HealthSettings | None:
        """The probe of a container's Config, None when it has none (no check, NONE, unknown type)."""
        hc = config.get("Healthcheck") or {}
        test = list(hc.get("Test") or [])
        if not test or test[0] not in ("CMD", "CMD-SHELL") or len(test) < 2:
            if test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                log.warning("unknown healthcheck type %r (expected CMD or CMD-SHELL)", test[0])
            return None
        if test[0] == "CMD-SHELL":
            shell = list(config.get("Shell") or []) or ["/bin/sh", "-c"]
            argv = shell + test[1:]
        else:
            argv = test[1:]

        def seconds(key: str, default: float) -> float:
            value = int(hc.get(key) or 0)
            return value * NANOSECOND if value > 0 else default

        retries = int(hc.get("Retries") or 0)
        interval = seconds("Interval", DEFAULT_INTERVAL)
        # Without a StartInterval the start period is probed every Interval, as dockerd
        # before API 1.44 (which has no StartInterval) does.
        return HealthSettings(argv=argv, interval=interval,
                              timeout=seconds("Timeout", DEFAULT_TIMEOUT),
                              start_period=seconds("StartPeriod", 0.0),
                              start_interval=seconds("StartInterval", interval),
                              retries=retries if retries > 0 else DEFAULT_RETRIES)


def has_health(config: dict[str, Any]) -> bool:
    """dockerd keeps a State.Health for every container whose Config has a Healthcheck at all."""
    return bool(config.get("Healthcheck"))


def go_duration(seconds: float) -> str:
    """Go's time.Duration String() for the durations a probe timeout takes ("30s", "1.5s", "500ms")."""
    ns = round(seconds * 1e9)
    if ns < 1_000_000_000:
        if ns % 1_000_000 == 0:
            return f"{ns // 1_000_000}ms"
        return f"{ns / 1e6:g}ms"
    out = ""
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    secs = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".")
    return out + f"{secs}s"


@dataclass
class ProbeResult:
    """One probe's result as State.Health.Log keeps it."""

    exit_code: int
    output: str
    start: str          # RFC 3339 with nanoseconds
    end: str

    def to_json(self) -> dict[str, Any]:
        return {"Start": self.start, "End": self.end, "ExitCode": self.exit_code, "Output": self.output}


# (container id, argv, timeout seconds) -> (exit code, output bytes); raises TimeoutError
# when the probe overran its timeout, OSError/DockyardError when it could not start.
ProbeRunner = Callable[[str, list[str], float], tuple[int, bytes]]
# (container id, new State.Health, new status or None when unchanged)
HealthReporter = Callable[[str, dict[str, Any], "str | None"], None]


def initial_health(previous: dict[str, Any] | None) -> dict[str, Any]:
    """State.Health at a (re)start: "starting", no streak, the earlier log kept (as dockerd)."""
    return {"Status": STARTING, "FailingStreak": 0, "Log": list((previous or {}).get("Log") or [])}


def apply_result(health: dict[str, Any], result: ProbeResult, settings: HealthSettings,
                 since_start: float) -> dict[str, Any]:
    """The next State.Health after one probe; `since_start` is seconds from the container's start
    to the probe's start (a failure inside the start period of a "starting" container is not counted)."""
    entries = (list(health.get("Log") or []) + [result.to_json()])[-MAX_LOG_ENTRIES:]
    status, streak = health.get("Status") or STARTING, int(health.get("FailingStreak") or 0)
    if result.exit_code == 0:
        status, streak = HEALTHY, 0
    elif not (status == STARTING and since_start < settings.start_period):
        streak += 1
        if streak >= settings.retries:
            status = UNHEALTHY
    return {"Status": status, "FailingStreak": streak, "Log": entries}


@dataclass
class _Watch:
    """A container being probed: its settings, its clock, its current health."""

    container_id: str
    settings: HealthSettings
    started_mono: float
    health: dict[str, Any]
    generation: int


class HealthMonitor:
    """Probes every monitored container on its own schedule from one timer thread."""

    def __init__(self, run_probe: ProbeRunner, report: HealthReporter) -> None:
        self._run_probe = run_probe
        self._report = report
        self._lock = threading.Condition()
        self._watches: dict[str, _Watch] = {}
        self._heap: list[tuple[float, int, str]] = []   # (due, generation, container id)
        self._generation = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def watch(self, container_id: str, settings: HealthSettings, health: dict[str, Any]) -> None:
        """Start (or restart) probing a container that has just started running."""
        with self._lock:
            if self._closed:
                return
            self._generation += 1
            w = _Watch(container_id, settings, time.monotonic(), health, self._generation)
            self._watches[container_id] = w
            self._schedule(w)
            if self._thread is None:
                self._pool = ThreadPoolExecutor(PROBE_WORKERS, thread_name_prefix="health-probe")
                self._thread = threading.Thread(target=self._run, name="health-timer", daemon=True)
                self._thread.start()
            self._lock.notify()

    def resume(self, container_id: str, settings: HealthSettings, health: dict[str, Any],
               started_mono: float) -> None:
        """Probe again after an unpause: the status is kept (dockerd does not reset it)."""
        with self._lock:
            if self._closed:
                return
            self._generation += 1
            w = _Watch(container_id, settings, started_mono, health, self._generation)
            self._watches[container_id] = w
            self._schedule(w)
            self._lock.notify()

    def unwatch(self, container_id: str) -> None:
        """Stop probing (the container stopped, paused or went away); a probe in flight is discarded."""
        with self._lock:
            self._watches.pop(container_id, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._watches.clear()
            self._lock.notify()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _interval(self, w: _Watch) -> float:
        s = w.settings
        if time.monotonic() - w.started_mono >= s.start_period:
            return s.interval
        return s.start_interval if w.health.get("Status") == STARTING else s.interval

    def _schedule(self, w: _Watch) -> None:
        heapq.heappush(self._heap, (time.monotonic() + self._interval(w), w.generation, w.container_id))

    def _current(self, container_id: str, generation: int) -> _Watch | None:
        w = self._watches.get(container_id)
        return w if w is not None and w.generation == generation else None

    def _run(self) -> None:
        with self._lock:
            while not self._closed:
                # Entries of unwatched or restarted containers are dropped as they come up.
                while self._heap and self._current(self._heap[0][2], self._heap[0][1]) is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._lock.wait()
                    continue
                due, generation, cid = self._heap[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._lock.wait(delay)
                    continue
                heapq.heappop(self._heap)
                w = self._current(cid, generation)
                if w is not None and self._pool is not None:
                    self._pool.submit(self._probe, w)

    def _probe(self, w: _Watch) -> None:
        s = w.settings
        start_mono, start = time.monotonic(), now_rfc3339()
        try:
            code, raw = self._run_probe(w.container_id, s.argv, s.timeout)
            output = raw[:MAX_OUTPUT_LEN].decode("utf-8", "replace")
        except TimeoutError:
            code, output = -1, f"Health check exceeded timeout ({go_duration(s.timeout)})"
        except Exception as err:   # noqa: BLE001 - a probe that cannot start is a failed probe
            code, output = -1, str(err)
        result = ProbeResult(code, output, start, now_rfc3339())
        with self._lock:
            if self._current(w.container_id, w.generation) is None:
                return   # stopped or restarted meanwhile: this result belongs to an old run
            old = w.health.get("Status")
            w.health = apply_result(w.health, result, s, start_mono - w.started_mono)
            new = w.health["Status"]
            health = w.health
        try:
            self._report(w.container_id, health, new if new != old else None)
        except Exception as err:   # noqa: BLE001 - the timer must survive a failed report
            log.warning("health report of %s failed: %s", w.container_id[:12], err)
        # The next probe is timed from the end of this one, as dockerd resets its timer.
        with self._lock:
            if self._current(w.container_id, w.generation) is not None:
                self._schedule(w)
                self._lock.notify()
