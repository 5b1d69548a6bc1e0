"""The machine as the desktop app sees it: a phase, the boot stage, and the actions, with no UI in it.

`MachineControl` wraps desktop.machine's manager: start (creating the machine
on first use, from the settings), stop, restart, reset to factory defaults,
the logs Troubleshoot shows, and the settings page's values. Listeners get a
`MachineStatus` whenever the phase or the boot stage changes; during a start
the stages come from the supervisor (desktop.machine.boot_stages), as the
`dockyard machine start` progress line shows them. Every method that touches
the machine blocks: the UI calls them from worker threads.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desktop import settings
from desktop.machine.boot_stages import BootStage

log = logging.getLogger(__name__)

MACHINE_SETTING_KEYS = ("cpus", "memory", "disk", "shared_folders")


class Phase(enum.Enum):
    """What the tray icon shows."""

    NOT_CREATED = "not created"
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    ERROR = "error"


@dataclass(frozen=True)
class MachineStatus:
    """One observation of the machine: phase, boot stage while starting, and a message."""

    phase: Phase
    stage: BootStage | None = None
    message: str = ""

    @property
    def text(self) -> str:
        """The tooltip's words: "Dockyard: starting [2/4] VM booting"."""
        if self.phase is Phase.STARTING and self.stage is not None:
            from desktop.machine.boot_stages import progress_text

            return f"Dockyard: {progress_text(self.stage)}"
        detail = f": {self.message}" if self.message else ""
        return f"Dockyard: {self.phase.value}{detail}"


@dataclass(frozen=True)
class MachineSettings:
    """The Settings page's values: what settings.toml says, else the machine's own, else the defaults."""

    cpus: int
    memory_mib: int
    disk_mib: int
    shared_folders: tuple[str, ...]


StatusListener = Callable[[MachineStatus], None]


def machine_error_text(err: BaseException) -> str:
    """A readable sentence for a failed machine action (DockyardError messages already are)."""
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    return str(message).splitlines()[0]


class MachineControl:
    """One Dockyard machine (by name, in the current DOCKYARD_HOME), observed and driven."""

    def __init__(self, name: str = "default") -> None:
        from desktop.machine.manager import MachineManager

        self.name = name
        self.manager = MachineManager(name)
        self._listeners: list[StatusListener] = []
        self._lock = threading.Lock()
        self._status = MachineStatus(Phase.STOPPED)

    # -- observing --------------------------------------------------------
    @property
    def status(self) -> MachineStatus:
        return self._status

    @property
    def host_socket(self) -> Path:
        return self.manager.host_socket

    def subscribe(self, listener: StatusListener) -> Callable[[], None]:
        """Call `listener` (in the thread that changed it) on each new status; returns an unsubscribe."""
        with self._lock:
            self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _set(self, status: MachineStatus) -> None:
        with self._lock:
            if status == self._status:
                return
            self._status = status
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(status)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                log.exception("machine status listener failed")

    def refresh(self) -> MachineStatus:
        """Read the machine's real state (blocks up to a ping) and publish it."""
        try:
            info = self.manager.status()
        except Exception as err:  # noqa: BLE001 - an unreadable machine is an error state, in words
            self._set(MachineStatus(Phase.ERROR, message=machine_error_text(err)))
            return self._status
        state = info.get("state")
        if state == "not-created":
            status = MachineStatus(Phase.NOT_CREATED)
        elif state == "running" and info.get("engine") == "ok":
            status = MachineStatus(Phase.RUNNING)
        elif state == "running":
            status = MachineStatus(Phase.ERROR, message=f"the engine is {info.get('engine')}")
        else:
            status = MachineStatus(Phase.STOPPED)
        self._set(status)
        return status

    # -- actions ----------------------------------------------------------
    def create(self) -> None:
        """Create the machine from the settings (and init's defaults)."""
        from desktop.machine.config import MachineConfig, default_backend, shares_for

        current = settings.load()
        folders = list(current.shared_folders) if current.shared_folders is not None else [str(Path.home())]
        config = MachineConfig(name=self.name, cpus=current.cpus or 2, memory_mib=current.memory or 2048,
                               disk_mib=current.disk or 20 * 1024, backend=default_backend(),
                               shares=shares_for([f for f in folders if Path(f).is_dir()]))
        self.manager.init(config)

    def start(self) -> None:
        """Boot the machine (creating it first if needed); publishes each boot stage, then running."""
        self._set(MachineStatus(Phase.STARTING))
        try:
            if not self.manager.exists():
                self.create()
            self.manager.start(on_stage=lambda stage: self._set(MachineStatus(Phase.STARTING, stage)))
        except Exception as err:  # noqa: BLE001 - the tray shows it; the caller re-raises it in words
            self._set(MachineStatus(Phase.ERROR, message=machine_error_text(err)))
            raise
        self._set(MachineStatus(Phase.RUNNING))

    def stop(self) -> None:
        """Power the machine off (gracefully, then forced); publishes stopping, then stopped."""
        if not self.manager.exists():
            self._set(MachineStatus(Phase.NOT_CREATED))
            return
        self._set(MachineStatus(Phase.STOPPING))
        try:
            self.manager.stop()
        except Exception as err:  # noqa: BLE001 - see start
            self._set(MachineStatus(Phase.ERROR, message=machine_error_text(err)))
            raise
        self._set(MachineStatus(Phase.STOPPED))

    def restart(self) -> None:
        self.stop()
        self.start()

    def reset_to_factory_defaults(self) -> None:
        """Delete the machine with everything in it, forget its settings, and start a fresh one."""
        self._set(MachineStatus(Phase.STOPPING))
        try:
            if self.manager.exists():
                self.manager.remove(force=True)
            settings.save(dict.fromkeys(MACHINE_SETTING_KEYS))
        except Exception as err:  # noqa: BLE001 - see start
            self._set(MachineStatus(Phase.ERROR, message=machine_error_text(err)))
            raise
        self._set(MachineStatus(Phase.NOT_CREATED))
        self.start()

    # -- settings ---------------------------------------------------------
    def settings(self) -> MachineSettings:
        current = settings.load()
        config: Any = None
        if self.manager.exists():
            try:
                config = self.manager.config()
            except Exception as err:  # noqa: BLE001 - fall back to the defaults, shown as such
                log.info("machine config unreadable: %s", err)
        return MachineSettings(
            cpus=current.cpus or (config.cpus if config else 2),
            memory_mib=current.memory or (config.memory_mib if config else 2048),
            disk_mib=current.disk or (config.disk_mib if config else 20 * 1024),
            shared_folders=current.shared_folders if current.shared_folders is not None else
            (tuple(s.host_path for s in config.shares) if config else (str(Path.home()),)),
        )

    def save_settings(self, wanted: MachineSettings) -> Path:
        """Write the values to settings.toml (the file the CLI reads); returns its path."""
        return settings.save({"cpus": wanted.cpus, "memory": f"{wanted.memory_mib}M",
                              "disk": f"{wanted.disk_mib}M", "shared_folders": list(wanted.shared_folders)})

    # -- troubleshooting --------------------------------------------------
    def console_log(self, max_bytes: int = 200_000) -> str:
        return _tail(self.manager.console_log, max_bytes)

    def supervisor_log(self, max_bytes: int = 200_000) -> str:
        return _tail(self.manager.supervisor_log, max_bytes)

    def agent_log(self, lines: int = 500) -> str:
        """The engine's log in the guest, over SSH (the machine must run)."""
        from desktop.ssh_link import SshLink

        state = self.manager.state()
        if self.refresh().phase is not Phase.RUNNING or not state.host_key:
            return "(the machine is not running: start it to read the engine's log)"
        link = SshLink("127.0.0.1", state.ssh_port, "root", self.manager.key_path, state.host_key)
        link.connect(timeout=15)
        try:
            _code, out, err = link.run(f"tail -n {int(lines)} /run/dockyard/agent.log", timeout=30)
        finally:
            link.close()
        return (out + err).decode(errors="replace")


def _tail(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log yet at {path}: the machine has not been started)"
    except OSError as err:
        return f"({path} cannot be read: {err.strerror or err})"
