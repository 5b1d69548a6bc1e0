"""Run blocking model calls off the UI thread and get their result back on it.

`run_async(fn, on_done, on_error, on_progress)` runs `fn` on the app's thread
pool; the callbacks are called on the UI thread through queued Qt signals.
`fn` may take a `progress` argument (a callable) to stream values back, as a
pull does with its progress or a log with its lines. Failures arrive as one
readable sentence (`readable`), never a traceback.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

# Machine starts, log follows and pulls each hold a thread for a long time: more
# than the pool's default (one per core, two here) so that none waits for another.
MAX_THREADS = 16
_pool: QThreadPool | None = None
# Signal objects of tasks still running: a queued signal of a collected QObject is lost.
_live: set[TaskSignals] = set()


def readable(err: BaseException) -> str:
    """The user's sentence for an exception: the model's own message when it has one."""
    message = getattr(err, "message", None)
    if message:
        return str(message)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class TaskSignals(QObject):
    """What a task reports back; connected with queued connections to UI-thread slots."""

    done = Signal(object)
    failed = Signal(str)
    progress = Signal(object)


class _Task(QRunnable):
    def __init__(self, fn: Callable[..., Any], signals: TaskSignals, wants_progress: bool) -> None:
        super().__init__()
        self.fn = fn
        self.signals = signals
        self.wants_progress = wants_progress
        self.cancelled = False

    def run(self) -> None:
        try:
            result = self.fn(progress=self.signals.progress.emit) if self.wants_progress else self.fn()
        except Exception as err:  # noqa: BLE001 - every failure is reported to the UI in words
            log.info("background task failed: %s", err, exc_info=True)
            self.signals.failed.emit(readable(err))
        else:
            self.signals.done.emit(result)


def pool() -> QThreadPool:
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setMaxThreadCount(MAX_THREADS)
    return _pool


def _guarded(callback: Callable[[Any], object], owner: QObject | None) -> Callable[[Any], None]:
    """`callback`, skipped once its widget is gone (a result may outlive the window that asked)."""
    owner = owner if owner is not None else getattr(callback, "__self__", None)

    def call(value: Any) -> None:
        if isinstance(owner, QObject) and not shiboken6.isValid(owner):
            return
        callback(value)
    return call


def run_async(fn: Callable[..., Any], on_done: Callable[[Any], object] | None = None,
              on_error: Callable[[str], object] | None = None,
              on_progress: Callable[[Any], object] | None = None, owner: QObject | None = None) -> TaskSignals:
    """Run `fn` in the pool; callbacks run on the UI thread. Returns the task's signals.

    The callbacks are dropped once `owner` (by default the object of a bound-method
    callback) has been deleted.
    """
    signals = TaskSignals()
    _live.add(signals)

    def finished(_: object = None) -> None:
        _live.discard(signals)

    if on_done is not None:
        signals.done.connect(_guarded(on_done, owner))
    if on_error is not None:
        signals.failed.connect(_guarded(on_error, owner))
    if on_progress is not None:
        signals.progress.connect(_guarded(on_progress, owner))
    signals.done.connect(finished)
    signals.failed.connect(finished)
    wants_progress = "progress" in inspect.signature(fn).parameters
    pool().start(_Task(fn, signals, wants_progress))
    return signals


def wait_for_all(msecs: int = 30000) -> bool:
    """Wait for running tasks (the app's quit path)."""
    return pool().waitForDone(msecs)
