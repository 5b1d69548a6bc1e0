"""Python's cyclic garbage collector, run on the UI thread only.

CPython collects cycles in whichever thread crosses the allocation threshold. In
the app that is often a pool worker (a pull, a log follow) or the events thread;
a cycle holding a widget or a timer-owning QObject is then destroyed off the UI
thread, and Qt aborts the process ("Fatal Python error: Aborted ... Garbage-
collecting"). So automatic collection is switched off and the UI thread
collects instead, each time its event loop is about to sleep and a generation
is over its threshold: no timer, so an idle app still wakes for nothing.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QAbstractEventDispatcher, QCoreApplication, QObject

_installed: MainThreadCollector | None = None


class MainThreadCollector(QObject):
    """Collects, on the UI thread, what the automatic collector would have collected."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        dispatcher = QAbstractEventDispatcher.instance(parent.thread())
        assert dispatcher is not None, "the UI thread has no event dispatcher"
        dispatcher.aboutToBlock.connect(self.collect_due)
        self.dispatcher = dispatcher
        gc.disable()

    def release(self) -> None:
        """Give collection back to CPython (tests: the rest of the session is not Qt's)."""
        global _installed
        self.dispatcher.aboutToBlock.disconnect(self.collect_due)
        gc.collect()
        gc.enable()
        _installed = None
        self.deleteLater()

    def collect_due(self) -> None:
        counts = gc.get_count()
        # The oldest generation over its threshold, as CPython's own collector picks it.
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                return


def pin_to_ui_thread() -> MainThreadCollector:
    """Switch automatic collection to the UI thread (once per process; the QApplication must exist)."""
    global _installed
    app = QCoreApplication.instance()
    assert app is not None, "create the QApplication first"
    if _installed is None:
        _installed = MainThreadCollector(app)
    return _installed
