"""desktop.exec_session without Qt: an exec with a TTY in busybox, driven from the test's thread."""

from __future__ import annotations

import threading

from desktop.exec_session import ExecSession
from tests.support.waiting import poll


class Recorder:
    """What the session's callbacks gave, collected from its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.output = bytearray()
        self.exits: list[int | None] = []
        self.errors: list[str] = []

    def out(self, data: bytes) -> None:
        with self.lock:
            self.output += data

    def text(self) -> str:
        with self.lock:
            return self.output.decode(errors="replace")

    def session(self, container, **kwargs) -> ExecSession:
        return ExecSession(container.client, container.id, on_output=self.out, on_exit=self.exits.append,
                           on_error=self.errors.append, **kwargs)


def test_output_input_resize_and_exit_code(busybox_container):
    seen = Recorder()
    session = seen.session(busybox_container, size=(7, 41))
    session.start()
    poll(lambda: "/ # " in seen.text(), what="the prompt")
    session.write(b"stty size; echo $((3+4)) $TERM\r")
    poll(lambda: "7 41\r\n7 xterm-256color\r\n" in seen.text(), what="the first size and TERM")
    session.resize(5, 33)
    session.write(b"stty size\r")
    poll(lambda: "5 33\r\n" in seen.text(), what="the new size")
    session.write(b"exit 5\r")
    poll(lambda: seen.exits, what="the exit callback")
    assert seen.exits == [5] and session.exit_code == 5 and seen.errors == []
    assert session.join(10)


def test_close_disconnects_without_callbacks(busybox_container):
    seen = Recorder()
    session = seen.session(busybox_container)
    session.start()
    poll(lambda: "/ # " in seen.text(), what="the prompt")
    assert session.running
    session.close()
    assert session.join(10), "the reader or writer thread is still running"
    assert not session.running
    assert seen.exits == [] and seen.errors == []
    session.write(b"echo ignored\r")     # a write after close is dropped, not an error


def test_an_unknown_container_is_a_readable_error(busybox_container):
    seen = Recorder()
    session = ExecSession(busybox_container.client, "no-such-container", on_output=seen.out,
                          on_exit=seen.exits.append, on_error=seen.errors.append)
    session.start()
    poll(lambda: seen.errors, what="the error callback")
    assert seen.errors == ["Container no-such-container was not found: it may have been removed. Refresh the list."]
    assert session.join(10)
