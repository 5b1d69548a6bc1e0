"""Restart policies and engine restarts (state reloaded from disk by a new Engine)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.runtime.engine_helpers import make_engine, start_background
from tests.support.waiting import poll as poll_until

REPO = Path(__file__).resolve().parents[2]


def _die_actions(engine, cid):
    return [e for e in engine.events.history() if e.actor_id == cid and e.action == "die"]


def test_on_failure_restarts_exactly_max_times(engine, busybox):
    cid = start_background(engine, busybox, ["sh", "-c", "echo attempt; exit 3"],
                           host_config={"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}})
    live = engine.registry.lookup(cid)
    def settled():
        with live.lock:   # state and its "die" event change together under the container lock
            return live.c.restart_count == 2 and live.c.state.status == "exited" and live.restart_timer is None
    poll_until(settled, what="two restarts then exited")
    assert live.c.state.exit_code == 3
    assert len(_die_actions(engine, cid)) == 3
    assert [r.data for r in engine.containers.logs(cid)] == [b"attempt\n"] * 3


def test_on_failure_does_not_restart_on_success(engine, busybox):
    c = engine.containers.create(None, {"Image": busybox, "Cmd": ["true"]},
                                {"NetworkMode": "none", "RestartPolicy": {"Name": "on-failure"}})
    waiter = engine.containers.wait(c.id, "next-exit")  # before start: `true` may exit at once
    engine.containers.start(c.id)
    waiter.result(10)
    cid = c.id
    live = engine.registry.lookup(cid)
    assert live.c.state.status == "exited" and live.restart_timer is None and live.c.restart_count == 0


def test_always_restarts_after_exit_but_not_after_stop(engine, busybox):
    cid = start_background(engine, busybox, ["sh", "-c", "echo up; exit 1"],
                           host_config={"RestartPolicy": {"Name": "always"}})
    live = engine.registry.lookup(cid)
    poll_until(lambda: live.c.restart_count >= 2, what="restarts")
    engine.containers.stop(cid, timeout=0)
    # A restart only ever happens through the pending timer: none is left after stop.
    assert live.restart_timer is None and not live.c.state.running
    assert engine.containers.inspect(cid).state.status == "exited"

    sleeper = start_background(engine, busybox, ["sleep", "1000"], host_config={"RestartPolicy": {"Name": "always"}})
    engine.containers.stop(sleeper, timeout=0)
    live = engine.registry.lookup(sleeper)
    assert live.restart_timer is None and live.c.state.status == "exited" and live.c.state.exit_code == 137
    engine.containers.remove(cid)
    engine.containers.remove(sleeper)


def test_restart_backoff_doubles():
    from runtime.containers.restart_policy import Backoff
    b = Backoff()
    assert [b.next_delay(0.5) for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert b.next_delay(11) == 0.1


_FIRST_ENGINE = """
import json, sys
from pathlib import Path
from runtime.engine.facade import Engine
root, image = Path(sys.argv[1]), sys.argv[2]
e = Engine(root)
e.start()
e.images.pull(image)
def start(policy, cmd=("sleep", "1000")):
    c = e.containers.create(None, {"Image": image, "Cmd": list(cmd), "StopTimeout": 0},
                           {"NetworkMode": "none", "RestartPolicy": {"Name": policy}})
    e.containers.start(c.id)
    return c.id
ids = {"plain": start("no"), "always": start("always"), "unless": start("unless-stopped"),
       "stopped_unless": start("unless-stopped")}
e.containers.stop(ids["stopped_unless"], timeout=0)
ids["plain_pid"] = e.containers.inspect(ids["plain"]).state.pid
print(json.dumps(ids), flush=True)
sys.stdin.read()   # killed here, like a crashed engine
"""


def test_engine_restart_reloads_state_and_applies_policies(tmp_path, busybox):
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-c", _FIRST_ENGINE, str(root), busybox], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ids = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    engine = make_engine(root)
    try:
        plain = engine.containers.inspect(ids["plain"])
        assert plain.state.status == "exited" and plain.state.exit_code == 255
        assert plain.state.error == "engine restarted"
        # Its process (orphaned when the engine died) was cleaned up.
        poll_until(lambda: not _alive(ids["plain_pid"]), what="orphan killed")
        for key in ("always", "unless"):
            poll_until(lambda key=key: engine.containers.inspect(ids[key]).state.running, what=f"{key} restarted")
        stopped = engine.containers.inspect(ids["stopped_unless"])
        assert stopped.state.status == "exited" and stopped.state.exit_code == 137
        assert not engine.registry.lookup(ids["stopped_unless"]).restart_timer
        # Names survive the restart.
        assert engine.containers.inspect(plain.name).id == plain.id
    finally:
        engine.shutdown()
    # shutdown stops but keeps records: a third engine sees them exited, always comes back.
    again = make_engine(root)
    try:
        assert again.containers.inspect(ids["plain"]).state.status == "exited"
        poll_until(lambda: again.containers.inspect(ids["always"]).state.running, what="always back again")
        for cid in list(ids.values())[:4]:
            again.containers.remove(cid, force=True)
        assert again.containers.list(all=True) == []
    finally:
        again.shutdown()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
