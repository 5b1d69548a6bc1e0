"""Exec instances and the event stream, against a real running container."""

from __future__ import annotations

import re
import threading
import time

import pytest

from runtime.errors import Conflict, NotFound
from tests.runtime.engine_helpers import collect, run, start_background
from tests.support.waiting import poll as poll_until


@pytest.fixture()
def sleeper(engine, busybox):
    cid = start_background(engine, busybox, ["sleep", "1000"], Env=["FROM_CONTAINER=1"], User="1000",
                           WorkingDir="/tmp")
    yield cid
    engine.containers.remove(cid, force=True)


def _drain(session):
    out, err = bytearray(), bytearray()
    for stream, data in session.output():
        (out if stream == 1 else err).extend(data)
    return bytes(out), bytes(err)


def test_exec_output_exit_code_and_inspect(engine, sleeper):
    inst = engine.execs.create(sleeper, ["sh", "-c", "echo $FROM_CONTAINER $EXTRA; id -u; pwd; echo e >&2; exit 5"],
                              env=["EXTRA=x"])
    assert not inst.running and inst.exit_code is None
    session = engine.execs.start(inst.id)
    out, err = _drain(session)
    assert out == b"1 x\n1000\n/tmp\n" and err == b"e\n"
    assert engine.execs.wait(inst.id, 10) == 5
    got = engine.execs.get(inst.id)
    assert got.exit_code == 5 and not got.running and got.pid > 0
    with pytest.raises(Conflict, match="has already run"):
        engine.execs.start(inst.id)


def test_exec_user_and_workdir_override(engine, sleeper):
    inst = engine.execs.create(sleeper, ["sh", "-c", "id -u; pwd"], user="0", working_dir="/")
    assert _drain(engine.execs.start(inst.id))[0] == b"0\n/\n"


def test_exec_with_stdin(engine, sleeper):
    inst = engine.execs.create(sleeper, ["cat"], attach_stdin=True)
    session = engine.execs.start(inst.id)
    session.write_stdin(b"through exec\n")
    session.close_stdin()
    assert _drain(session)[0] == b"through exec\n"
    assert engine.execs.wait(inst.id, 10) == 0


def test_exec_detached_and_tty(engine, sleeper):
    inst = engine.execs.create(sleeper, ["sh", "-c", "exit 3"])
    assert engine.execs.start(inst.id, detach=True) is None
    assert engine.execs.wait(inst.id, 10) == 3
    # The pty comes from the container's own devpts: it has a name there, as under Docker.
    tty = engine.execs.create(sleeper, ["sh", "-c", "test -t 1 && tty"], tty=True)
    out, _ = _drain(engine.execs.start(tty.id))
    assert re.fullmatch(rb"/dev/pts/\d+\r\n", out), out


def test_exec_needs_a_running_container(engine, busybox):
    c = engine.containers.create(None, {"Image": busybox, "Cmd": ["true"]}, {})
    with pytest.raises(Conflict, match="is not running"):
        engine.execs.create(c.id, ["true"])
    with pytest.raises(NotFound):
        engine.execs.get("0" * 64)
    engine.containers.remove(c.id)


def test_events_of_a_run_with_filters(engine, busybox):
    since = time.time()
    sub = engine.events.subscribe(filters={"type": ["container"], "label": ["evt=yes"]})
    got: list = []
    collect(sub, got)
    cid, code, _, _ = run(engine, busybox, ["sh", "-c", "exit 2"], Labels={"evt": "yes"},
                          host_config={"AutoRemove": True})
    run(engine, busybox, ["true"], host_config={"AutoRemove": True})   # filtered out: no label
    poll_until(lambda: any(e.action == "destroy" for e in got), what="destroy event")
    sub.close()
    actions = [e.action for e in got]
    assert actions == ["create", "attach", "start", "die", "destroy"]
    die = got[3]
    assert die.actor_id == cid and die.attributes["exitCode"] == "2"
    assert die.attributes["evt"] == "yes" and die.attributes["image"] == busybox and die.attributes["name"]
    # `since` replays the history; `until` in the past ends the stream at once.
    replay = list(engine.events.subscribe(since=since, until=time.time(), filters={"container": [cid]}))
    assert [e.action for e in replay] == actions


def test_volume_and_image_events(engine, busybox):
    since = time.time()
    engine.volumes.create("evtvol")
    engine.volumes.remove("evtvol")
    engine.images.tag(busybox, "evt/retagged", "v1")
    engine.images.remove("evt/retagged:v1")
    events = list(engine.events.subscribe(since=since, until=time.time()))
    pairs = [(e.type, e.action) for e in events]
    assert ("volume", "create") in pairs and ("volume", "destroy") in pairs
    assert ("image", "tag") in pairs and ("image", "untag") in pairs


def test_event_stream_sees_live_events(engine, busybox):
    sub = engine.events.subscribe(filters={"event": ["start"]})
    first = threading.Event()
    got: list = []

    def reader():
        for e in sub:
            got.append(e)
            first.set()
            break

    t = threading.Thread(target=reader)
    t.start()
    run(engine, busybox, ["true"], host_config={"AutoRemove": True})
    assert first.wait(10)
    t.join(10)
    assert got[0].action == "start"
