"""Render every dashboard page, a container's logs and inspect windows and the tray to PNG files.

    python -m desktop.ui.screenshots --engine-socket SOCK --out DIR [--sizes 1280x800,900x600]

Runs the real app (controller, dashboard, tray) on the X display in $DISPLAY
against the engine on SOCK, and writes, for each size, `<page>-WxH.png` for
the Containers, Images, Volumes, Machine & Settings and Troubleshoot pages
and `logs-WxH.png`, `inspect-WxH.png` for the first running container (each
a `widget.grab()`), then two whole-screen grabs: `screen-tray.png` (the icon
in the display's system tray, with `tray-zoom.png` its corner enlarged and
`tray-icons.png` the icon of every machine state) and `screen-tray-menu.png`
(its menu open, with the Containers submenu). `screenshots.json` lists the
files and where the icon sits on the screen. `tests/support/ui_screenshots.py` stages a
display with a tray host, an engine and containers, then runs this.

Every step waits for what it needs on screen (rows listed, a log read, the
icon painted in the tray) from a QTimer, with a deadline: the event loop
never blocks, and a step that times out ends the run with its name.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PySide6.QtCore import QPoint, QRect, QTimer
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QMenu, QWidget

from desktop.ui.container_views import InspectWindow, LogsWindow
from desktop.ui.machine_pages import TroubleshootPage
from desktop.ui.workers import wait_for_all

log = logging.getLogger("desktop.ui.screenshots")

SIZES = ((1280, 800), (900, 600))
PAGES = ("containers", "images", "volumes", "machine", "troubleshoot")
TICK_MS = 50
STEP_TIMEOUT = 60.0
# A painted icon or menu has many colours; an empty tray or screen has one or two.
MIN_COLOURS = 8
ZOOM = 4


def distinct_colours(image: QImage, area: QRect | None = None, limit: int = 4096) -> int:
    """How many different pixel values `image` has in `area` (stops counting at `limit`)."""
    rect = (area or image.rect()).intersected(image.rect())
    seen: set[int] = set()
    for y in range(rect.top(), rect.bottom() + 1):
        for x in range(rect.left(), rect.right() + 1):
            seen.add(image.pixel(x, y))
            if len(seen) >= limit:
                return len(seen)
    return len(seen)


@dataclass
class Step:
    """Wait until `ready()` (or `timeout` seconds, then fail), then run `act()`."""

    name: str
    ready: Callable[[], bool]
    act: Callable[[], None]
    timeout: float = STEP_TIMEOUT


class StepRunner:
    """Runs steps one after another from a timer; quits the app with 0, or 1 on a timeout or error."""

    def __init__(self, app: QApplication, steps: list[Step]) -> None:
        self.app = app
        self.steps = steps
        self.index = 0
        self.started = time.monotonic()
        self.error = ""
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.started = time.monotonic()
        self.timer.start()

    def _tick(self) -> None:
        if self.index >= len(self.steps):
            self.timer.stop()
            self.app.exit(0)
            return
        step = self.steps[self.index]
        try:
            if not step.ready():
                if time.monotonic() - self.started > step.timeout:
                    self._fail(f"step {step.name!r} did not become ready within {step.timeout:.0f} s")
                return
            log.info("step: %s", step.name)
            step.act()
        except Exception as err:  # noqa: BLE001 - any failure ends the run with the step's name
            log.exception("step %s failed", step.name)
            self._fail(f"step {step.name!r} failed: {err}")
            return
        self.index += 1
        self.started = time.monotonic()

    def _fail(self, message: str) -> None:
        self.error = message
        self.timer.stop()
        self.app.exit(1)


class Shooter:
    """The app under test and the steps that put each picture on screen and save it."""

    def __init__(self, app: QApplication, socket: Path, out: Path, sizes: tuple[tuple[int, int], ...]) -> None:
        from desktop.ui import dialogs
        from desktop.ui.app import DesktopApp

        # A question box would open a nested event loop nobody answers: log it, answer Cancel.
        dialogs.ask = lambda parent, title, text, choices=("OK", "Cancel"): _refuse(title, text)
        self.app = app
        self.out = out
        self.sizes = sizes
        self.files: list[Path] = []
        self.tray_area = QRect()
        self.desktop = DesktopApp("default", socket)
        self.dashboard = self.desktop.dashboard
        self.controller = self.desktop.controller
        self.menu: QMenu = self.desktop.tray.menu
        self.logs: LogsWindow | None = None

    # -- conditions ---------------------------------------------------------
    def running_rows(self) -> list:
        return [r for r in self.controller.containers if r.running]

    def lists_ready(self) -> bool:
        pages = self.dashboard.pages
        return (self.controller.engine_up and bool(self.running_rows())
                and bool(getattr(pages["images"], "rows", None)) and bool(getattr(pages["volumes"], "rows", None)))

    def stats_ready(self) -> bool:
        stats = self.dashboard.containers_page.stats
        return all(r.id in stats for r in self.running_rows())

    # -- actions ------------------------------------------------------------
    def save(self, pixmap: QPixmap, name: str) -> None:
        path = self.out / name
        if not pixmap.save(str(path), "PNG"):
            raise RuntimeError(f"could not write {path}")
        log.info("wrote %s (%dx%d)", path, pixmap.width(), pixmap.height())
        self.files.append(path)

    def show_size(self, page: str, size: tuple[int, int]) -> None:
        self.dashboard.show_page(page)
        self.dashboard.move(0, 40)
        self.dashboard.resize(*size)
        if page == "troubleshoot":
            self.troubleshoot().show_log("Engine log")

    def troubleshoot(self) -> TroubleshootPage:
        page = self.dashboard.pages["troubleshoot"]
        assert isinstance(page, TroubleshootPage)
        return page

    def grab_page(self, page: str, size: tuple[int, int]) -> None:
        width, height = size
        self.save(self.dashboard.grab(), f"{page}-{width}x{height}.png")

    def open_views(self) -> None:
        self.dashboard.show_page("containers")
        row = self.log_row()
        self.dashboard.containers_page.select(row.name)
        self.logs = self.dashboard.open_logs(row)
        self.dashboard.open_inspect(row)

    def views_ready(self) -> bool:
        """The log has its lines and the inspect window (opened from a worker's result) is up."""
        shown = any(isinstance(w, InspectWindow) for w in self.dashboard.windows)
        return shown and self.logs is not None and bool(self.logs.text().strip())

    def log_row(self):
        """The container whose log and inspect are shown: a running one with something in its log."""
        rows = self.running_rows()
        return next((r for r in rows if not r.project), rows[0])

    def inspect_window(self) -> QWidget:
        return next(w for w in self.dashboard.windows if isinstance(w, InspectWindow))

    def size_views(self, size: tuple[int, int]) -> None:
        for index, window in enumerate((self.logs or self.inspect_window(), self.inspect_window())):
            window.move(60 + 40 * index, 80 + 40 * index)
            window.resize(*size)

    def grab_views(self, size: tuple[int, int]) -> None:
        width, height = size
        assert self.logs is not None
        self.save(self.logs.grab(), f"logs-{width}x{height}.png")
        self.save(self.inspect_window().grab(), f"inspect-{width}x{height}.png")

    def close_views(self) -> None:
        for window in list(self.dashboard.windows):
            window.close()

    def screen_image(self) -> QImage:
        return self.app.primaryScreen().grabWindow(0).toImage()

    def tray_painted(self) -> bool:
        area = self.desktop.tray.geometry()
        if not area.isValid() or area.isEmpty():
            return False
        self.tray_area = area
        return distinct_colours(self.screen_image(), area) >= MIN_COLOURS

    def before_tray(self) -> None:
        self.show_size("containers", self.sizes[0])
        # The start-up notification's balloon points at the icon and hides half of it.
        self.desktop.tray.showMessage("", "")

    def grab_tray(self) -> None:
        """The whole screen, the tray's corner of it enlarged, and every state's icon side by side."""
        screen = self.app.primaryScreen().grabWindow(0)
        self.save(screen, "screen-tray.png")
        corner = self.tray_area.adjusted(-40, 0, 8, 8).intersected(screen.rect())
        self.save(screen.copy(corner).scaled(corner.size() * ZOOM), "tray-zoom.png")
        self.save(icon_sheet(), "tray-icons.png")

    def open_menu(self) -> None:
        menu = self.menu
        # Under the icon, kept on screen: as the tray host would place it on a click.
        screen = self.app.primaryScreen().geometry()
        hint = menu.sizeHint()
        x = min(self.tray_area.left(), screen.right() - hint.width() - 2 * self.containers_width())
        menu.popup(QPoint(x, self.tray_area.bottom() + 2))

    def containers_width(self) -> int:
        return self.desktop.tray.containers_menu.sizeHint().width()

    def open_submenu(self) -> None:
        menu = self.menu
        submenu = self.desktop.tray.containers_menu
        action = submenu.menuAction()
        menu.setActiveAction(action)   # highlighted, as when the pointer rests on it
        place = menu.geometry().topLeft() + menu.actionGeometry(action).topLeft()
        submenu.popup(place - QPoint(submenu.sizeHint().width(), 0))

    def painted(self, widget: QWidget) -> bool:
        """The screen shows `widget`: its area is no longer a flat colour."""
        return widget.isVisible() and distinct_colours(self.screen_image(), widget.geometry()) >= MIN_COLOURS

    def steps(self) -> list[Step]:
        def now() -> bool:
            """Ready on the next tick: a resize's layout and paint events are handled by then."""
            return True

        def idle() -> None:
            pass

        steps = [Step("lists read from the engine", self.lists_ready, partial(self.dashboard.show_page, "containers")),
                 Step("CPU and memory read", self.stats_ready, idle),
                 Step("logs and inspect opened", now, self.open_views),
                 Step("log read and inspect shown", self.views_ready, idle)]
        for size in self.sizes:
            for page in PAGES:
                steps.append(Step(f"{page} at {size}", now, partial(self.show_size, page, size)))
                steps.append(Step(f"grab {page} at {size}", self.page_ready(page), partial(self.grab_page, page, size)))
            steps.append(Step(f"logs and inspect at {size}", now, partial(self.size_views, size)))
            steps.append(Step(f"grab logs and inspect at {size}", now, partial(self.grab_views, size)))
        steps += [Step("close the views", now, self.close_views),
                  Step("containers page behind the tray", now, self.before_tray),
                  Step("icon shown in the tray", self.tray_painted, self.grab_tray),
                  Step("open the tray menu", now, self.open_menu),
                  Step("menu on screen", partial(self.painted, self.menu), self.open_submenu),
                  Step("submenu on screen", partial(self.painted, self.desktop.tray.containers_menu),
                       partial(self.grab_screen, "screen-tray-menu.png")),
                  Step("close the menu", now, self.menu_closed)]
        return steps

    def grab_screen(self, name: str) -> None:
        self.save(self.app.primaryScreen().grabWindow(0), name)

    def page_ready(self, page: str) -> Callable[[], bool]:
        if page == "troubleshoot":
            view = self.troubleshoot().view
            return lambda: not view.toPlainText().startswith("loading")
        return lambda: True   # the next tick: the page's layout and paint events are handled by then

    def menu_closed(self) -> None:
        self.desktop.tray.containers_menu.hide()
        self.menu.hide()
        manifest = {"tray": [self.tray_area.x(), self.tray_area.y(), self.tray_area.width(), self.tray_area.height()],
                    "files": [p.name for p in self.files]}
        (self.out / "screenshots.json").write_text(json.dumps(manifest, indent=1) + "\n")


def icon_sheet() -> QPixmap:
    """The tray icon of each machine phase at 16, 22 and 48 px, a row per phase, labelled."""
    from desktop.machine_control import Phase
    from desktop.ui import icons

    phases = (Phase.STOPPED, Phase.STARTING, Phase.RUNNING, Phase.ERROR)
    sheet = QPixmap(260, 60 * len(phases))
    sheet.fill(QColor("#efefef"))
    painter = QPainter(sheet)
    for row, phase in enumerate(phases):
        y = 60 * row + 6
        x = 8
        for size in (16, 22, 48):
            painter.drawPixmap(x, y + (48 - size) // 2, icons.icon(phase).pixmap(size, size))
            x += size + 12
        painter.drawText(x + 4, y + 30, phase.value)
    painter.end()
    return sheet


def _refuse(title: str, text: str) -> str:
    log.warning("question not answered while rendering: %s: %s", title, text)
    return "Cancel"


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    sizes = []
    for part in text.split(","):
        width, _, height = part.strip().partition("x")
        sizes.append((int(width), int(height)))
    return tuple(sizes)


def render(socket: Path, out: Path, sizes: tuple[tuple[int, int], ...] = SIZES) -> list[Path]:
    """Run the app on the current display and write the pictures to `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Dockyard")
    app.setQuitOnLastWindowClosed(False)
    shooter = Shooter(app, socket, out, sizes)
    shooter.desktop.begin(start_machine=False)
    runner = StepRunner(app, shooter.steps())
    runner.start()
    code = app.exec()
    shooter.desktop.close()
    # Tasks still running (a stats sample, the closed log stream) finish before Python tears down.
    if not wait_for_all(30000):
        log.warning("background tasks still running at exit")
    if code != 0:
        raise RuntimeError(runner.error or f"the event loop ended with {code}")
    return shooter.files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desktop.ui.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--engine-socket", type=Path, required=True, help="the engine to show")
    parser.add_argument("--out", type=Path, default=Path("build/screenshots"), help="folder for the PNG files")
    parser.add_argument("--sizes", type=parse_sizes, default=SIZES, help="window sizes, e.g. 1280x800,900x600")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="screenshots: %(message)s")
    try:
        render(args.engine_socket, args.out, args.sizes)
    except RuntimeError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
