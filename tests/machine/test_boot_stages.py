"""Boot stages: the supervisor's STAGE lines, the manager's line reader and the CLI's progress line."""

from __future__ import annotations

import io
import os

from desktop.cli import StageLine
from desktop.machine.boot_stages import BootStage, parse_stage_line, progress_text, stage_line
from desktop.machine.processes import PipeLines


def test_every_stage_survives_its_report_line():
    for stage in BootStage:
        assert parse_stage_line(stage_line(stage)) is stage
    assert parse_stage_line("OK") is None
    assert parse_stage_line("STAGE no-such-stage") is None
    assert [s.step for s in BootStage] == [1, 2, 3, 4]


def test_the_reader_keeps_lines_that_arrive_in_one_write():
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, f"{stage_line(BootStage.SSH_UP)}\n{stage_line(BootStage.AGENT_READY)}\nOK\n".encode())
        os.close(write_fd)
        lines = PipeLines(read_fd, timeout=5)
        assert [lines.next(), lines.next(), lines.next(), lines.next()] == [
            "STAGE ssh-up", "STAGE agent-ready", "OK", ""]
    finally:
        os.close(read_fd)


def test_the_reader_gives_up_at_its_deadline():
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"half a line")
        assert PipeLines(read_fd, timeout=0.2).next() == ""
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_the_cli_progress_line_names_each_stage():
    out = io.StringIO()
    line = StageLine(out)
    for stage in BootStage:
        line(stage)
    line.done()
    assert out.getvalue().splitlines() == [progress_text(s) for s in BootStage]
    assert out.getvalue().splitlines()[1] == "starting [2/4] VM booting"
