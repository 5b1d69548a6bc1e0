"""Cycles holding Qt objects are collected on the UI thread, never on a worker.

A worker that allocates past the collector's threshold used to collect, on its
own thread, a cycle the UI thread had dropped: a widget destroyed there aborts
the app. The object here is a plain QObject, which Qt lets die anywhere, so the
test can see on which thread it died without crashing.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject


class _Cycle:
    def __init__(self) -> None:
        self.me = self
        self.qobject = QObject()


def test_a_worker_allocating_does_not_collect_qt_objects(qtbot, gc_on_ui_thread):
    died_on: list[int] = []
    cycle = _Cycle()
    cycle.qobject.destroyed.connect(lambda: died_on.append(threading.get_ident()))
    del cycle

    kept: list[list] = []

    def allocate() -> None:
        # Far past every generation's threshold: CPython would collect here, on this thread.
        kept.extend([] for _ in range(200_000))
    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    assert died_on == [], "the cycle was collected on the worker thread"

    qtbot.waitUntil(lambda: bool(died_on), timeout=10000)
    assert died_on == [threading.get_ident()]
    kept.clear()


def test_an_idle_app_collects_nothing(qtbot, gc_on_ui_thread):
    import gc

    before = gc.get_stats()
    qtbot.wait(50)  # the event loop blocks several times with no allocation to speak of
    assert [s["collections"] for s in gc.get_stats()] == [s["collections"] for s in before]
