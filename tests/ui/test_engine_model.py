"""The Qt-free model under the desktop app, against a real native engine (`dockyard-agent serve`)."""

from __future__ import annotations

import queue
import uuid

import pytest

from desktop.engine_events import Change, EventFeed
from desktop.engine_model import EngineError, EngineModel, PullProgress, _split_reference
from tests.support.agent import start_agent
from tests.support.waiting import poll


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_the_event_feed_reports_a_container_start_and_die(agent, test_images):
    changes: queue.Queue[Change] = queue.Queue()
    downs: list[str] = []
    feed = EventFeed(agent.socket, changes.put, downs.append)
    feed.start()
    name = unique("evt")
    try:
        assert feed.connected.wait(30), "the events stream did not open"
        proc = agent.docker("run", "-d", "--name", name, test_images["busybox"], "sh", "-c", "sleep 0.2")
        assert proc.returncode == 0, proc.stderr
        seen: list[tuple[str, str, str]] = []
        while ("container", "die", name) not in seen:
            change = changes.get(timeout=30)
            seen.append((change.resource, change.action, change.name))
        assert ("container", "start", name) in seen
        assert seen.index(("container", "start", name)) < seen.index(("container", "die", name))
    finally:
        feed.stop()
        agent.docker("rm", "-f", name)
    assert downs == [], "stop() is not the engine going down"


def test_the_event_feed_says_when_the_engine_goes_down(tmp_path):
    own = start_agent(tmp_path / "e.sock", tmp_path / "root")
    downs: queue.Queue[str] = queue.Queue()
    feed = EventFeed(own.socket, lambda change: None, downs.put)
    feed.start()
    try:
        assert feed.connected.wait(30)
        own.stop()
        reason = downs.get(timeout=30)
        assert "engine" in reason and "Traceback" not in reason
        poll(lambda: not feed.running, what="the reader thread to end")
    finally:
        feed.stop()


def test_an_engine_that_is_down_is_one_readable_error(tmp_path):
    model = EngineModel(tmp_path / "nothing-here.sock", timeout=5)
    with pytest.raises(EngineError) as caught:
        model.containers()
    assert "not running" in caught.value.message and "dockyard machine start" in caught.value.message


def test_rows_actions_stats_logs_and_inspect(agent, test_images):
    model = EngineModel(agent.socket)
    name = unique("rows")
    proc = agent.docker("run", "-d", "--name", name, "--label", "com.docker.compose.project=shop",
                        test_images["busybox"], "sh", "-c", "echo one; echo two; sleep 300")
    assert proc.returncode == 0, proc.stderr
    try:
        row = next(r for r in model.containers() if r.name == name)
        assert (row.state, row.project, row.image) == ("running", "shop", test_images["busybox"])
        assert poll(lambda: list(model.logs(row.id)) == ["one", "two"], what="the two log lines")
        stamped = list(model.logs(row.id, timestamps=True))
        assert stamped[0].endswith(" one") and stamped[0][:4].isdigit()
        stats = model.stats(row.id)
        assert stats.memory > 0
        assert model.inspect(row.id)["Name"] == f"/{name}"
        model.stop(row.id, timeout=1)
        assert model.container(row.id).state == "exited"
        model.start(row.id)
        assert model.container(row.id).state == "running"
    finally:
        model.remove(name)
    assert all(r.name != name for r in model.containers())
    with pytest.raises(EngineError) as caught:
        model.start(name)
    assert "gone" in caught.value.message


def test_logs_follow_delivers_lines_as_they_are_written(agent, test_images):
    model = EngineModel(agent.socket)
    name = unique("follow")
    # The second line waits for a file the test creates after reading the first.
    proc = agent.docker("run", "-d", "--name", name, test_images["busybox"], "sh", "-c",
                        "echo first; while [ ! -e /go ]; do sleep 0.05; done; echo second; sleep 300")
    assert proc.returncode == 0, proc.stderr
    try:
        lines = model.logs(name, follow=True)
        assert next(lines) == "first"
        assert agent.docker("exec", name, "touch", "/go").returncode == 0
        assert next(lines) == "second"
        lines.close()
    finally:
        model.remove(name)


def test_pull_progress_moves_from_the_engine_s_stream(agent, test_images):
    model = EngineModel(agent.socket, timeout=300)
    ref = test_images["debian"]
    if any(ref in i.tags for i in model.images()):
        model.remove_image(ref, force=True)
    fractions: list[float] = []
    model.pull(ref, lambda p: fractions.append(p.fraction) if p.fraction is not None else None)
    assert fractions[-1] == 1.0
    assert fractions == sorted(fractions), "the bar never goes back"
    assert len(set(fractions)) >= 3, f"the bar should move in steps, got {sorted(set(fractions))}"
    assert any(ref in i.tags for i in model.images())


def test_a_failed_pull_is_a_readable_error(agent, registry):
    model = EngineModel(agent.socket)
    with pytest.raises(EngineError) as caught:
        model.pull(f"{registry.host}/no-such-image:1")
    assert "Traceback" not in caught.value.message


def test_clean_up_says_what_it_would_reclaim_and_does(agent, test_images):
    model = EngineModel(agent.socket)
    name = unique("junk")
    proc = agent.docker("run", "--name", name, test_images["busybox"], "sh", "-c", "head -c 300000 /dev/zero > /big")
    assert proc.returncode == 0, proc.stderr
    volume = unique("vol")
    model.client.api.create_volume(volume)
    estimate = model.cleanup_estimate()
    assert estimate.containers >= 1 and estimate.volumes >= 1
    assert estimate.reclaimable >= 300000
    reclaimed = model.clean_up()
    assert reclaimed >= 300000
    assert all(r.name != name for r in model.containers())
    assert all(v.name != volume for v in model.volumes())


def test_reference_splitting():
    assert _split_reference("127.0.0.1:5000/busybox:1") == ("127.0.0.1:5000/busybox", "1")
    assert _split_reference("127.0.0.1:5000/busybox") == ("127.0.0.1:5000/busybox", "latest")
    assert _split_reference("busybox@sha256:abc") == ("busybox@sha256:abc", None)


def test_progress_counts_download_then_extraction():
    progress = PullProgress("r:1")
    progress.feed({"status": "Downloading", "id": "l1", "progressDetail": {"current": 50, "total": 100}})
    assert progress.fraction == 0.25
    progress.feed({"status": "Extracting", "id": "l1", "progressDetail": {"current": 50, "total": 100}})
    assert progress.fraction == 0.75
    progress.feed({"status": "Pull complete", "id": "l1", "progressDetail": {}})
    assert progress.fraction == 1.0
    with pytest.raises(EngineError):
        progress.feed({"error": "manifest unknown"})
