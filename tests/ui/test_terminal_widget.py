"""The dashboard's terminal against a real native engine: busybox `sh` through an exec with a TTY.

Everything is asserted on what the user sees: the lines of the rendered pyte screen.
"""

from __future__ import annotations

import math
import os
import socket

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import docker
import pytest
from docker.models.containers import Container
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from desktop.exec_session import READ_SIZE
from desktop.ui.terminal_widget import MAX_PENDING, TerminalWidget, open_terminal

PROMPT = "/ #"      # busybox sh as root
WAIT_MS = 30_000


@pytest.fixture
def terminal(qtbot, busybox_container):
    widget = open_terminal(busybox_container)
    qtbot.addWidget(widget)
    widget.resize(widget.sizeHint())
    widget.show()
    qtbot.waitUntil(lambda: any(line.endswith(PROMPT) for line in lines(widget)), timeout=WAIT_MS)
    yield widget
    widget.close_session()
    assert widget.session.join(10), "the session's threads did not end after close"


def lines(widget: TerminalWidget) -> list[str]:
    return widget.term.text_lines()


def cursor_line(widget: TerminalWidget) -> str:
    return lines(widget)[widget.term.cursor.y]


def type_line(qtbot, widget: TerminalWidget, text: str) -> None:
    qtbot.keyClicks(widget, text)
    qtbot.keyClick(widget, Qt.Key.Key_Return)


def test_typing_echo_hi_shows_hi(qtbot, terminal):
    type_line(qtbot, terminal, "echo hi")
    qtbot.waitUntil(lambda: "hi" in lines(terminal), timeout=WAIT_MS)
    assert f"{PROMPT} echo hi" in lines(terminal)


def test_arrow_up_recalls_the_previous_command(qtbot, terminal):
    type_line(qtbot, terminal, "echo $((6*7))")
    qtbot.waitUntil(lambda: lines(terminal).count("42") == 1, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: cursor_line(terminal) == PROMPT, timeout=WAIT_MS)
    qtbot.keyClick(terminal, Qt.Key.Key_Up)
    qtbot.waitUntil(lambda: cursor_line(terminal) == f"{PROMPT} echo $((6*7))", timeout=WAIT_MS)
    # Left and Home move inside the recalled line: a digit goes after the 7, a space at the start.
    qtbot.keyClick(terminal, Qt.Key.Key_Left)
    qtbot.keyClick(terminal, Qt.Key.Key_Left)
    qtbot.keyClicks(terminal, "1")
    qtbot.keyClick(terminal, Qt.Key.Key_Home)
    qtbot.keyClicks(terminal, " ")
    qtbot.keyClick(terminal, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: f"{PROMPT}  echo $((6*71))" in lines(terminal), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "426" in lines(terminal), timeout=WAIT_MS)


def test_resizing_the_widget_resizes_the_tty(qtbot, terminal):
    type_line(qtbot, terminal, "stty size")
    first = f"{terminal.term.lines} {terminal.term.columns}"
    qtbot.waitUntil(lambda: first in lines(terminal), timeout=WAIT_MS)

    cell = terminal.cell_size()
    terminal.resize(math.ceil(52 * cell.width()) + 8, math.ceil(15 * cell.height()) + 8)
    assert (terminal.term.lines, terminal.term.columns) == (15, 52)
    qtbot.waitUntil(lambda: cursor_line(terminal).endswith(PROMPT), timeout=WAIT_MS)
    type_line(qtbot, terminal, "stty size")
    qtbot.waitUntil(lambda: "15 52" in lines(terminal), timeout=WAIT_MS)
    assert all(len(line) <= 52 for line in lines(terminal))


def test_ctrl_c_interrupts_and_paste_types_the_clipboard(qtbot, terminal):
    type_line(qtbot, terminal, "sleep 600")
    qtbot.waitUntil(lambda: cursor_line(terminal) == "", timeout=WAIT_MS)
    qtbot.keyClick(terminal, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: cursor_line(terminal) == PROMPT, timeout=WAIT_MS)

    QApplication.clipboard().setText("echo pasted-$((1+2))\n")
    qtbot.keyClick(terminal, Qt.Key.Key_V,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: "pasted-3" in lines(terminal), timeout=WAIT_MS)


def test_a_flood_of_output_is_held_back_not_buffered_without_bound(qtbot, terminal):
    # 3 MB (180000 lines) is seconds of pyte work: the reader must stop reading meanwhile.
    type_line(qtbot, terminal, "yes 0123456789abcdef | head -n 180000; echo flood-$((2*3))")
    peak = 0

    def done() -> bool:
        nonlocal peak
        peak = max(peak, terminal.backlog)
        return "flood-6" in lines(terminal)

    qtbot.waitUntil(done, timeout=120_000)
    assert 0 < peak <= MAX_PENDING + READ_SIZE
    assert lines(terminal).count("0123456789abcdef") >= terminal.term.lines - 3


def test_shift_page_up_and_the_wheel_scroll_back_through_the_history(qtbot, terminal):
    type_line(qtbot, terminal, "seq 1 200")
    qtbot.waitUntil(lambda: "200" in lines(terminal) and cursor_line(terminal) == PROMPT, timeout=WAIT_MS)
    assert terminal.visible_lines() == lines(terminal) and "1" not in lines(terminal)
    for _ in range(200 // (terminal.term.lines - 1) + 2):
        qtbot.keyClick(terminal, Qt.Key.Key_PageUp, Qt.KeyboardModifier.ShiftModifier)
    top = terminal.visible_lines()
    assert f"{PROMPT} seq 1 200" in top and top.index("2") == top.index("1") + 1

    wheel_down = QWheelEvent(QPointF(10, 10), QPointF(10, 10), QPoint(0, 0), QPoint(0, -120),
                             Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                             Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(terminal, wheel_down)
    assert terminal.visible_lines()[:-3] == top[3:]

    qtbot.keyClicks(terminal, "x")     # typing returns to the live screen
    assert terminal.visible_lines() == lines(terminal)
    qtbot.waitUntil(lambda: cursor_line(terminal) == f"{PROMPT} x", timeout=WAIT_MS)


def test_tab_completes_in_the_shell(qtbot, terminal):
    qtbot.keyClicks(terminal, "echo /etc/passw")
    qtbot.keyClick(terminal, Qt.Key.Key_Tab)
    qtbot.waitUntil(lambda: cursor_line(terminal).endswith("echo /etc/passwd"), timeout=WAIT_MS)


def test_exiting_the_shell_reports_its_exit_code(qtbot, terminal):
    with qtbot.waitSignal(terminal.exited, timeout=WAIT_MS) as exited:
        type_line(qtbot, terminal, "exit 3")
    assert exited.args == [3]
    assert terminal.exit_code == 3
    assert "[process exited with code 3]" in lines(terminal)
    assert not terminal.running


def test_a_stopped_container_says_so(qtbot, agent, test_images):
    client = agent.client()
    created = client.containers.create(test_images["busybox"], ["true"])
    try:
        widget = TerminalWidget()
        qtbot.addWidget(widget)
        with qtbot.waitSignal(widget.failed, timeout=WAIT_MS) as failed:
            widget.attach(client, created.id)
        message = failed.args[0]
        assert "is not running" in message and "start it" in message
        assert "is not running" in " ".join(lines(widget))
    finally:
        created.remove(force=True)


def test_an_engine_that_is_down_gives_a_readable_message(qtbot, busybox_container, tmp_path):
    # A socket file nobody listens on: what a crashed engine leaves behind.
    path = tmp_path / "docker.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    down = docker.DockerClient(base_url=f"unix://{path}", version="1.44")
    widget = open_terminal(Container(attrs=busybox_container.attrs, client=down))
    qtbot.addWidget(widget)
    with qtbot.waitSignal(widget.failed, timeout=WAIT_MS) as failed:
        pass
    message = failed.args[0]
    assert "Cannot reach the Dockyard engine" in message and "Start the machine" in message
    shown = "".join(lines(widget))
    assert "Cannot reach the Dockyard engine" in shown
    assert "Traceback" not in shown and "Error" not in shown
    down.close()


def test_deleting_the_widget_disconnects_the_session(qtbot, busybox_container):
    widget = open_terminal(busybox_container)
    widget.show()
    qtbot.waitUntil(lambda: any(line.endswith(PROMPT) for line in lines(widget)), timeout=WAIT_MS)
    session = widget.session
    assert session.running
    widget.deleteLater()
    qtbot.waitUntil(lambda: not session.running, timeout=WAIT_MS)
    assert session.join(10), "the session's threads outlived the widget"


def test_the_containers_page_opens_the_terminal_in_a_window_of_its_own(qtbot, busybox_container):
    from PySide6.QtWidgets import QWidget

    from desktop.ui import terminal_hook

    page = QWidget()
    qtbot.addWidget(page)
    window = terminal_hook.open_terminal(busybox_container, page)
    assert isinstance(window, TerminalWidget) and window.isWindow() and window.isVisible()
    assert busybox_container.name in window.windowTitle()
    qtbot.waitUntil(lambda: any(line.endswith(PROMPT) for line in lines(window)), timeout=WAIT_MS)
    type_line(qtbot, window, "echo in-a-window")
    qtbot.waitUntil(lambda: "in-a-window" in lines(window), timeout=WAIT_MS)
    session = window.session
    with qtbot.waitSignal(window.destroyed, timeout=WAIT_MS):
        window.close()   # deleted on close, which ends the exec session
    assert session.join(10), "closing the terminal window did not end its session"
