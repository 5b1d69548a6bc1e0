"""json-file logs: format, line splitting, tail/since/until, follow until the run ends."""

from __future__ import annotations

import json
import threading

from runtime.containers.log_store import LogFile
from runtime.timestamps import format_time_ns, parse_time_ns


def test_lines_are_docker_json_file_records(tmp_path):
    log = LogFile(tmp_path / "c-json.log")
    log.begin_run()
    log.write("stdout", b"hel")
    log.write("stdout", b"lo\nwor")
    log.write("stderr", b"oops\n")
    log.end_run()
    entries = [json.loads(line) for line in (tmp_path / "c-json.log").read_text().splitlines()]
    assert [(e["stream"], e["log"]) for e in entries] == [
        ("stdout", "hello\n"), ("stderr", "oops\n"), ("stdout", "wor")]
    assert all(e["time"].endswith("Z") and len(e["time"].split(".")[1]) == 10 for e in entries)


def test_tail_and_stream_filters(tmp_path):
    log = LogFile(tmp_path / "l.log")
    log.begin_run()
    for i in range(5):
        log.write("stdout", f"out{i}\n".encode())
        log.write("stderr", f"err{i}\n".encode())
    log.end_run()
    assert [r.data for r in log.read(stderr=False, tail=2)] == [b"out3\n", b"out4\n"]
    assert [r.data for r in log.read(stdout=False)][0] == b"err0\n"
    assert list(log.read(tail=0)) == []
    assert len(list(log.read())) == 10


def test_since_until_use_record_times(tmp_path):
    path = tmp_path / "l.log"
    records = [{"log": f"{i}\n", "stream": "stdout", "time": format_time_ns(i * 1_000_000_000)}
               for i in (100, 200, 300)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    log = LogFile(path)
    assert [r.data for r in log.read(since=150)] == [b"200\n", b"300\n"]
    assert [r.data for r in log.read(until=250)] == [b"100\n", b"200\n"]


def test_time_round_trip():
    assert parse_time_ns(format_time_ns(1_700_000_000_123_456_789)) == 1_700_000_000_123_456_789
    assert parse_time_ns("2023-11-14T22:13:20.5Z") == 1_700_000_000_500_000_000


def test_follow_yields_new_lines_and_stops_when_run_ends(tmp_path):
    log = LogFile(tmp_path / "l.log")
    log.begin_run()
    log.write("stdout", b"first\n")
    got: list[bytes] = []
    seen_first = threading.Event()

    def reader():
        for rec in log.read(follow=True):
            got.append(rec.data)
            seen_first.set()

    t = threading.Thread(target=reader)
    t.start()
    assert seen_first.wait(10)
    log.write("stdout", b"second\n")
    log.write("stdout", b"partial")
    log.end_run()
    t.join(10)
    assert not t.is_alive()
    assert got == [b"first\n", b"second\n", b"partial"]


def test_a_cancelled_follower_ends_while_the_run_goes_on(tmp_path):
    """`docker logs -f` then Ctrl-C: the follower must not wait for the container's next line."""
    log = LogFile(tmp_path / "l.log")
    log.begin_run()
    log.write("stdout", b"first\n")
    cancel = threading.Event()
    got: list[bytes] = []
    seen_first = threading.Event()

    def reader():
        for rec in log.read(follow=True, cancel=cancel):
            got.append(rec.data)
            seen_first.set()

    t = threading.Thread(target=reader)
    t.start()
    assert seen_first.wait(10)
    log.cancel_follow(cancel)
    t.join(30)   # without the cancel it follows until the run ends, i.e. forever here
    assert not t.is_alive()
    assert got == [b"first\n"]
    log.end_run()


def test_follow_on_finished_log_returns_at_once(tmp_path):
    log = LogFile(tmp_path / "l.log")
    log.begin_run()
    log.write("stdout", b"x\n")
    log.end_run()
    assert [r.data for r in log.read(follow=True)] == [b"x\n"]


def test_tail_reads_backwards_across_blocks_and_skips_torn_lines(tmp_path):
    log = LogFile(tmp_path / "big.log")
    log.begin_run()
    for i in range(20000):
        log.write("stdout" if i % 3 else "stderr", f"line {i:05d} {'x' * 40}\n".encode())
    log.end_run()
    last = [r.data for r in log.read(stderr=False, tail=3)]
    assert last == [f"line {i:05d} {'x' * 40}\n".encode() for i in (19996, 19997, 19999)]
    assert len(list(log.read(tail=20000))) == 20000
    assert len(list(log.read(tail=50000))) == 20000
    assert len(list(log.read(stdout=False))) == 6667
    with open(tmp_path / "big.log", "ab") as f:
        f.write(b'{"log": "torn')             # a crash in the middle of a write
    assert [r.data[:10] for r in log.read(tail=1)] == [b"line 19999"]
    assert len(list(log.read())) == 20000


def test_rotation_keeps_max_files_and_reads_across_them(tmp_path):
    log = LogFile(tmp_path / "r.log", max_size=1000, max_files=3)
    log.begin_run()
    for i in range(100):
        log.write("stdout", f"{i:03d} {'y' * 50}\n".encode())
    log.end_run()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.log", "r.log.1", "r.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    numbers = [int(r.data[:3]) for r in log.read()]
    assert numbers == list(range(numbers[0], 100)) and numbers[0] > 0
    assert [int(r.data[:3]) for r in log.read(tail=5)] == list(range(95, 100))   # spans two files
    assert [int(r.data[:3]) for r in log.read(tail=1000)] == numbers


def test_follow_survives_rotation(tmp_path):
    log = LogFile(tmp_path / "f.log", max_size=300, max_files=50)
    log.begin_run()
    log.write("stdout", b"start\n")
    got: list[bytes] = []
    first = threading.Event()

    def reader():
        for rec in log.read(follow=True, tail=0):
            got.append(rec.data)
            first.set()

    t = threading.Thread(target=reader)
    t.start()
    log.write("stdout", b"a\n")
    assert first.wait(10)
    for i in range(30):
        log.write("stdout", f"n{i}\n".encode())
    log.end_run()
    t.join(10)
    assert got == [b"a\n"] + [f"n{i}\n".encode() for i in range(30)]
