"""The tray's Start boots the real VM (TCG here): the icon goes stopped → starting (each boot stage) →
running, and Stop brings it back. `dockyard machine start` prints the same stages as a progress line."""

from __future__ import annotations

import pytest

from desktop.machine.boot_stages import BootStage, progress_text
from desktop.machine_control import Phase
from desktop.ui import icons
from tests.machine.conftest import guest_image_env, make_machine  # noqa: F401 - guest_image_env is a fixture

pytestmark = pytest.mark.vm
BOOT_WAIT = 400_000


def test_the_tray_starts_and_stops_the_machine(qtbot, tmp_path_factory, guest_image_env, monkeypatch,  # noqa: F811 - the imported fixture
                                               answers):
    m = make_machine("traytest", tmp_path_factory, guest_image_env)
    for key, value in m.env.items():
        if key.startswith("DOCKYARD_"):
            monkeypatch.setenv(key, value)
    m.dockyard("init", "--cpus", "2", "--memory", "1G", "--disk", "4G", "--no-mount", "--backend", "qemu")
    app = None
    try:
        from desktop.ui.app import DesktopApp

        app = DesktopApp("traytest")
        qtbot.addWidget(app.dashboard)
        seen: list[tuple[Phase, BootStage | None]] = []
        app.controller.machine_status.connect(lambda status: seen.append((status.phase, status.stage)))
        app.begin(start_machine=False)
        qtbot.waitUntil(lambda: app.tray.phase is Phase.STOPPED and app.tray.start_action.isEnabled(),
                        timeout=30_000)
        assert app.tray.icon().cacheKey() == icons.icon(Phase.STOPPED).cacheKey()

        app.tray.start_action.trigger()
        qtbot.waitUntil(lambda: app.tray.phase is Phase.RUNNING, timeout=BOOT_WAIT)
        stages = [stage for phase, stage in seen if phase is Phase.STARTING and stage is not None]
        assert stages == list(BootStage), f"every boot stage, in order: {seen}"
        assert app.tray.icon().cacheKey() == icons.icon(Phase.RUNNING).cacheKey()
        assert app.tray.toolTip() == "Dockyard: running"
        assert ("Dockyard", "Running") in app.tray.notifications
        # The engine in the VM is the one the dashboard now lists.
        qtbot.waitUntil(lambda: app.controller.engine_up, timeout=60_000)
        assert not app.dashboard.banner_box.isVisibleTo(app.dashboard)

        app.tray.stop_action.trigger()
        qtbot.waitUntil(lambda: app.tray.phase is Phase.STOPPED, timeout=120_000)
        assert (Phase.STOPPING, None) in seen
        assert m.status()["state"] == "stopped"
        qtbot.waitUntil(lambda: app.dashboard.banner_box.isVisibleTo(app.dashboard), timeout=30_000)
        assert "stopped" in app.dashboard.banner.text()
    finally:
        if app is not None:
            app.close()

    # The CLI shows the same stages, one line each when stderr is not a terminal.
    try:
        start = m.dockyard("start")
        lines = [line for line in start.stderr.splitlines() if line.startswith("starting [")]
        assert lines == [progress_text(stage) for stage in BootStage], start.stderr
    finally:
        m.dockyard("rm", "-f", check=False)
