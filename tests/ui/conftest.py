"""Fixtures for the desktop app's tests: the real app on the offscreen Qt platform.

`desktop_app` is the whole app (controller, dashboard, tray) shown against the
session's native engine (`agent`), in a DOCKYARD_HOME of its own so that the
real machine manager sees a machine that was never created. `answers` stands in
for the user at the app's questions (desktop.ui.dialogs.ask): it records each
question and gives the answer the test queued.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

# Before any QApplication exists (pytest-qt makes it on first use of qtbot).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@dataclass
class Answers:
    """The user at the app's questions: queued answers, and the questions asked."""

    queued: list[str] = field(default_factory=list)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, parent, title: str, text: str, choices=("OK", "Cancel")) -> str:
        self.asked.append((title, text))
        answer = self.queued.pop(0) if self.queued else "Cancel"
        assert answer in choices, f"{answer!r} is not one of the buttons {choices} of {title!r}"
        return answer


@pytest.fixture(autouse=True)
def gc_on_ui_thread(qapp):
    """Every UI test runs as the app does: cycles collected on the UI thread only."""
    from desktop.ui.gc_pinning import pin_to_ui_thread

    collector = pin_to_ui_thread()
    yield collector
    collector.release()


@pytest.fixture
def answers(monkeypatch):
    from desktop.ui import dialogs

    recorder = Answers()
    monkeypatch.setattr(dialogs, "ask", recorder)
    dialogs.shown_errors.clear()
    return recorder


@pytest.fixture
def dockyard_home(tmp_path, monkeypatch):
    from desktop.settings import SETTINGS

    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("DOCKYARD_HOME", str(home))
    return home


def make_app(qtbot, socket):
    from desktop.ui.app import DesktopApp

    app = DesktopApp("default", socket)
    qtbot.addWidget(app.dashboard)
    app.begin(start_machine=False)
    return app


@pytest.fixture
def desktop_app(qtbot, agent, dockyard_home, answers):
    app = make_app(qtbot, agent.socket)
    qtbot.waitUntil(lambda: app.controller.engine_up and app.controller.feed.connected.is_set(), timeout=30000)
    yield app
    app.close()
