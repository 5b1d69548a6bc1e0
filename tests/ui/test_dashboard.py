"""The dashboard and tray against a real native engine: what the user sees, driven as the user would.

Every wait is on what the widgets show (qtbot.waitUntil polls a condition with a
deadline); nothing re-reads the engine on a timer, so a row that appears came
from the engine's events stream.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from desktop.ui import dialogs, workers
from desktop.ui.container_views import InspectWindow, LogsWindow
from tests.support.agent import start_agent
from tests.ui.conftest import make_app

REPO = Path(__file__).resolve().parents[2]
WAIT = 30000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def row_state(app, name: str) -> str | None:
    item = app.dashboard.containers_page.item_for(name)
    return item.text(2) if item is not None else None


def test_a_started_container_appears_with_its_port_link_and_leaves_when_removed(desktop_app, agent, test_images,
                                                                                 qtbot):
    page = desktop_app.dashboard.containers_page
    name, port = unique("web"), free_port()
    # Nothing asks the engine again on a timer: only its events stream can bring this row.
    assert not desktop_app.controller._refresh_timer.isActive()
    proc = agent.docker("run", "-d", "--name", name, "-p", f"{port}:80", test_images["busybox"], "sleep", "300")
    assert proc.returncode == 0, proc.stderr
    try:
        qtbot.waitUntil(lambda: row_state(desktop_app, name) == "running", timeout=WAIT)
        item = page.item_for(name)
        assert item.text(1) == test_images["busybox"]
        link = page.tree.itemWidget(item, 3)
        assert f'href="http://localhost:{port}"' in link.text()
        # The link is the cell's only text (the item's own was painted under it), and it fits.
        assert item.text(3) == ""
        assert page.tree.columnWidth(3) >= link.sizeHint().width()
        assert item.text(4), "a running container shows its uptime"
        # The tray's Containers submenu follows the same list.
        titles = [a.text() for a in desktop_app.tray.containers_menu.actions()]
        assert f"{name} — running" in titles
        assert agent.docker("stop", "-t", "0", name).returncode == 0
        qtbot.waitUntil(lambda: row_state(desktop_app, name) == "exited", timeout=WAIT)
    finally:
        agent.docker("rm", "-f", name)
    qtbot.waitUntil(lambda: page.item_for(name) is None, timeout=WAIT)


def test_uptime_ages_with_the_figures_not_only_on_events(desktop_app, agent, test_images, qtbot):
    page = desktop_app.dashboard.containers_page
    name = unique("aging")
    proc = agent.docker("run", "-d", "--name", name, test_images["busybox"], "sleep", "300")
    assert proc.returncode == 0, proc.stderr
    try:
        qtbot.waitUntil(lambda: row_state(desktop_app, name) == "running", timeout=WAIT)
        first = page.item_for(name).text(4)   # "Less than a second", or a few seconds on a slow machine
        # No event comes while it just runs; the figures' refresh (every 5 s on screen,
        # asked for here) brings the engine's newer "Up N seconds".
        def aged() -> bool:
            page.refresh_stats()
            return page.item_for(name).text(4) not in ("", first)

        qtbot.waitUntil(aged, timeout=WAIT)
        assert "second" in page.item_for(name).text(4)
    finally:
        agent.docker("rm", "-f", name)


def test_compose_projects_are_grouped(desktop_app, agent, test_images, qtbot):
    project = unique("shop")
    names = [f"{project}-web-1", f"{project}-db-1"]
    for name in names:
        proc = agent.docker("run", "-d", "--name", name, "--label", f"com.docker.compose.project={project}",
                            test_images["busybox"], "sleep", "300")
        assert proc.returncode == 0, proc.stderr
    try:
        tree = desktop_app.dashboard.containers_page.tree

        def group():
            for i in range(tree.topLevelItemCount()):
                if tree.topLevelItem(i).text(0) == project:
                    return tree.topLevelItem(i)
            return None

        qtbot.waitUntil(lambda: group() is not None and group().childCount() == 2, timeout=WAIT)
        assert sorted(group().child(i).text(0) for i in range(2)) == sorted(names)
        assert group().text(2) == "2/2 running"
    finally:
        agent.docker("rm", "-f", *names)


def test_the_tray_and_the_page_start_and_stop_a_container(desktop_app, agent, test_images, qtbot):
    name = unique("tray")
    assert agent.docker("run", "-d", "--name", name, test_images["busybox"], "sleep", "300").returncode == 0
    try:
        qtbot.waitUntil(lambda: row_state(desktop_app, name) == "running", timeout=WAIT)
        menu = desktop_app.tray.containers_menu
        sub = next(a.menu() for a in menu.actions() if a.text().startswith(f"{name} —"))
        next(a for a in sub.actions() if a.text() == "Stop").trigger()
        qtbot.waitUntil(lambda: row_state(desktop_app, name) == "exited", timeout=WAIT)
        page = desktop_app.dashboard.containers_page
        page.select(name)
        assert page.buttons["Start"].isEnabled() and not page.buttons["Stop"].isEnabled()
        page.buttons["Start"].click()
        qtbot.waitUntil(lambda: row_state(desktop_app, name) == "running", timeout=WAIT)
    finally:
        agent.docker("rm", "-f", name)


def test_logs_follow_search_and_timestamps(desktop_app, agent, test_images, qtbot):
    name = unique("logs")
    proc = agent.docker("run", "-d", "--name", name, test_images["busybox"], "sh", "-c",
                        "echo first line; while [ ! -e /go ]; do sleep 0.05; done; echo second line; sleep 300")
    assert proc.returncode == 0, proc.stderr
    try:
        qtbot.waitUntil(lambda: desktop_app.dashboard.containers_page.item_for(name) is not None, timeout=WAIT)
        page = desktop_app.dashboard.containers_page
        page.select(name)
        page.buttons["Logs"].click()
        window = next(w for w in desktop_app.dashboard.windows if isinstance(w, LogsWindow))
        qtbot.waitUntil(lambda: "first line" in window.text(), timeout=WAIT)
        assert "second line" not in window.text()
        assert agent.docker("exec", name, "touch", "/go").returncode == 0
        qtbot.waitUntil(lambda: "second line" in window.text(), timeout=WAIT)   # followed, not re-read
        window.search.setText("second")
        assert window.find_next()
        assert window.view.textCursor().selectedText() == "second"
        window.timestamps.setChecked(True)

        def stamped() -> bool:
            first = (window.text().splitlines() or [""])[0]
            return first[:4].isdigit() and first.endswith(" first line")

        qtbot.waitUntil(stamped, timeout=WAIT)
        window.close()
        # The followed streams close with the window (and at the reload above): their threads
        # are free at once, not at the container's next line (it writes none), so the app can exit.
        qtbot.waitUntil(lambda: workers.pool().activeThreadCount() == 0, timeout=WAIT)
    finally:
        agent.docker("rm", "-f", name)


def test_inspect_is_a_tree(desktop_app, agent, test_images, qtbot):
    name = unique("insp")
    assert agent.docker("run", "-d", "--name", name, "-e", "COLOUR=blue", test_images["busybox"],
                        "sleep", "300").returncode == 0
    try:
        qtbot.waitUntil(lambda: desktop_app.dashboard.containers_page.item_for(name) is not None, timeout=WAIT)
        page = desktop_app.dashboard.containers_page
        page.select(name)
        page.buttons["Inspect"].click()
        qtbot.waitUntil(lambda: any(isinstance(w, InspectWindow) for w in desktop_app.dashboard.windows),
                        timeout=WAIT)
        tree = next(w for w in desktop_app.dashboard.windows if isinstance(w, InspectWindow)).tree
        top = {tree.topLevelItem(i).text(0): tree.topLevelItem(i) for i in range(tree.topLevelItemCount())}
        config = top["Config"]
        env = next(config.child(i) for i in range(config.childCount()) if config.child(i).text(0) == "Env")
        assert "COLOUR=blue" in [env.child(i).text(1) for i in range(env.childCount())]
    finally:
        agent.docker("rm", "-f", name)


def test_the_pull_progress_bar_moves(desktop_app, agent, test_images, qtbot):
    ref = test_images["debian"]
    agent.docker("rmi", "-f", ref)
    page = desktop_app.dashboard.pages["images"]
    values: list[int] = []
    page.progress.valueChanged.connect(values.append)
    page.reference.setText(ref)
    page.pull_button.click()
    qtbot.waitUntil(lambda: page.progress.format().endswith("pulled"), timeout=120000)
    moving = [v for v in values if 0 < v < 1000]
    assert len(set(moving)) >= 3, f"the bar should move through the pull, got {values}"
    assert moving == sorted(moving)
    qtbot.waitUntil(lambda: any(ref in row.tags for row in page.rows), timeout=WAIT)


def test_run_an_image_from_the_form(desktop_app, agent, test_images, qtbot):
    from desktop.ui.images_page import open_run_dialog

    name = unique("ran")
    dialog = open_run_dialog(desktop_app.controller, None, test_images["busybox"])
    dialog.name.setText(name)
    dialog.env.setText("GREETING=hello")
    dialog.ports.setText("not-a-port")
    dialog.run()
    assert "HOST:CONTAINER" in dialog.error.text()
    dialog.ports.setText("")
    try:
        dialog.run()
        qtbot.waitUntil(lambda: row_state(desktop_app, name) is not None, timeout=WAIT)
        env = json.loads(agent.docker("inspect", "--format", "{{json .Config.Env}}", name).stdout)
        assert "GREETING=hello" in env
    finally:
        agent.docker("rm", "-f", name)


def test_clean_up_asks_with_the_space_that_comes_back(desktop_app, agent, test_images, answers, qtbot):
    name = unique("junk")
    proc = agent.docker("run", "--name", name, test_images["busybox"], "sh", "-c", "head -c 2000000 /dev/zero > /f")
    assert proc.returncode == 0, proc.stderr
    answers.queued.append("Cancel")
    desktop_app.tray.clean_action.trigger()
    qtbot.waitUntil(lambda: len(answers.asked) == 1, timeout=WAIT)
    title, text = answers.asked[0]
    assert "stopped container" in text and "MB of disk space comes back" in text
    assert agent.docker("inspect", name).returncode == 0, "Cancel removes nothing"
    answers.queued.append("Clean up")
    desktop_app.tray.clean_action.trigger()
    qtbot.waitUntil(lambda: any("Clean up gave back" in m for _, m in desktop_app.tray.notifications),
                    timeout=WAIT)
    assert agent.docker("inspect", name).returncode != 0


def test_settings_are_written_and_read_back_by_the_cli(desktop_app, answers, dockyard_home, tmp_path, qtbot):
    page = desktop_app.dashboard.pages["machine"]
    desktop_app.dashboard.show_page("machine")
    shared = tmp_path / "projects"
    shared.mkdir()
    page.cpus.setValue(3)
    page.memory.setValue(3072)
    page.disk.setValue(30)
    page.folders.clear()
    page.folders.addItem(str(shared))
    answers.queued.append("Apply")
    page.apply_button.click()
    qtbot.waitUntil(lambda: page.note.text().startswith("Saved to"), timeout=WAIT)
    assert "next start" in answers.asked[0][1], "a machine that is not running is not restarted"
    proc = subprocess.run([sys.executable, "-m", "desktop.cli", "settings", "--json"], capture_output=True,
                          text=True, env=dict(os.environ, DOCKYARD_HOME=str(dockyard_home)), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)["settings"]
    assert (shown["cpus"]["value"], shown["memory"]["value"], shown["disk"]["value"]) == (3, 3072, 30720)
    assert shown["shared_folders"]["value"] == [str(shared)]
    assert shown["cpus"]["source"].endswith("settings.toml: cpus")


def test_an_engine_that_is_down_shows_a_message(qtbot, dockyard_home, answers, tmp_path):
    app = make_app(qtbot, tmp_path / "no-engine.sock")
    try:
        banner = app.dashboard.banner
        qtbot.waitUntil(lambda: "not running" in banner.text(), timeout=WAIT)
        assert app.dashboard.banner_box.isVisibleTo(app.dashboard)
        assert "Traceback" not in banner.text() and "dockyard machine start" in banner.text()
        assert [a.text() for a in app.tray.containers_menu.actions()] == ["The engine is not running"]
    finally:
        app.close()


def test_an_engine_that_stops_shows_a_message(qtbot, dockyard_home, answers, tmp_path):
    own = start_agent(tmp_path / "e.sock", tmp_path / "root")
    app = make_app(qtbot, own.socket)
    try:
        qtbot.waitUntil(lambda: app.controller.feed.connected.is_set(), timeout=WAIT)
        assert not app.dashboard.banner_box.isVisibleTo(app.dashboard)
        own.stop()
        qtbot.waitUntil(lambda: app.dashboard.banner_box.isVisibleTo(app.dashboard), timeout=WAIT)
        assert "engine" in app.dashboard.banner.text() and "Traceback" not in app.dashboard.banner.text()
        assert not dialogs.shown_errors or all("Traceback" not in m for _, m in dialogs.shown_errors)
    finally:
        app.close()
        if own.alive():
            own.stop()


def test_closing_the_window_keeps_the_tray(desktop_app, qtbot):
    desktop_app.dashboard.show_page("containers")
    desktop_app.dashboard.close()
    assert not desktop_app.dashboard.isVisible()
    assert desktop_app.tray.isVisible() or desktop_app.tray.contextMenu() is desktop_app.tray.menu
    desktop_app.tray.dashboard_action.trigger()
    assert desktop_app.dashboard.isVisible()
    desktop_app.tray.troubleshoot_action.trigger()
    assert desktop_app.dashboard.current_page() == "troubleshoot"


def test_a_second_launch_brings_the_first_forward(qtbot, dockyard_home, agent):
    from desktop.ui.single_instance import InstanceServer, server_name

    shown: list[bool] = []
    server = InstanceServer(server_name("default"), lambda: shown.append(True))
    try:
        proc = subprocess.run([sys.executable, "-m", "desktop.app", "--engine-socket", str(agent.socket),
                               "--no-start", "-v"], capture_output=True, text=True, timeout=60, cwd=REPO,
                              env=dict(os.environ, DOCKYARD_HOME=str(dockyard_home), QT_QPA_PLATFORM="offscreen"))
        assert proc.returncode == 0, proc.stderr
        assert "already running" in proc.stderr
        qtbot.waitUntil(lambda: shown == [True], timeout=WAIT)
    finally:
        server.close()
