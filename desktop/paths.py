"""Where Dockyard keeps its files on the host: config, data (disks, keys, logs, guest images), sockets.

Locations follow platformdirs. `DOCKYARD_HOME` (see desktop.settings) relocates
everything under one directory, which tests and side-by-side installs use to
stay isolated; `MachinePaths` names every file of one machine, so no other
module builds a path of its own.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from desktop import settings

APP_NAME = "dockyard"
# sun_path is 108 bytes on Linux (104 on macOS); stay under the smaller one.
MAX_SOCKET_PATH = 100


def config_dir() -> Path:
    """Directory of user-editable configuration (settings.toml, machine definitions)."""
    home = settings.home()
    if home:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Directory of persistent data: per-machine disks, SSH keys, logs, the guest image cache."""
    home = settings.home()
    if home:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def runtime_dir() -> Path:
    """Directory of sockets and pid files; created with mode 0700.

    Falls back to a per-user directory in the temp dir when the platform's
    runtime dir (e.g. /run/user/UID) cannot be created.
    """
    home = settings.home()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    fallback = Path(tempfile.gettempdir()) / f"{APP_NAME}-{uid}"
    if home:
        candidate = home / "run"
    elif sys.platform.startswith("linux") and not os.environ.get("XDG_RUNTIME_DIR"):
        # Without a login session (CI, sudo, ssh -T) there is no XDG_RUNTIME_DIR;
        # platformdirs would warn and pick /tmp/runtime-UID: choose ourselves, quietly.
        session_dir = Path(f"/run/user/{uid}")
        candidate = session_dir / APP_NAME if session_dir.is_dir() else fallback
    else:
        import platformdirs

        candidate = Path(platformdirs.user_runtime_dir(APP_NAME))
    try:
        return ensure_private_dir(candidate)
    except OSError:
        return ensure_private_dir(fallback)


def settings_file() -> Path:
    """The TOML settings file shared by the `dockyard` CLI and the desktop app."""
    return settings.settings_file(settings.home())


def image_cache_dir() -> Path:
    """Guest image cache: the `image_cache` setting, else `images` in the data directory."""
    chosen = settings.load().image_cache
    return chosen if chosen is not None else data_dir() / "images"


def home_dir() -> Path:
    """What identifies this Dockyard home: `DOCKYARD_HOME`, else the platform's data directory."""
    return settings.home() or data_dir()


def home_id(home: Path | None = None) -> str:
    """A short, stable tag of `home` (default: this home), for names shared beyond it (libvirt domains)."""
    return hashlib.sha256(str(home or home_dir()).encode()).hexdigest()[:8]


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it accessible to its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def machine_data_dir(name: str) -> Path:
    """Persistent files of one machine (data disk, key pair, console log)."""
    return data_dir() / "machines" / name


def machine_runtime_dir(name: str) -> Path:
    """Sockets and pid files of one machine, in a 0700 directory."""
    return ensure_private_dir(runtime_dir() / name)


def machine_config_path(name: str) -> Path:
    """The JSON file holding a machine's MachineConfig."""
    return config_dir() / "machines" / f"{name}.json"


@dataclass(frozen=True)
class MachinePaths:
    """Every file of one machine, fixed when made: a later change of DOCKYARD_HOME does not move it.

    `run_dir` is created (0700) when first asked for.
    """

    name: str
    home: Path          # home_dir() of the home the machine belongs to
    config: Path
    data_dir: Path
    run_root: Path

    @classmethod
    def of(cls, name: str) -> MachinePaths:
        return cls(name, home_dir(), machine_config_path(name), machine_data_dir(name), runtime_dir() / name)

    @property
    def home_id(self) -> str:
        return home_id(self.home)

    @property
    def run_dir(self) -> Path:
        return ensure_private_dir(self.run_root)

    @property
    def key(self) -> Path:
        return self.data_dir / "id_ed25519"

    @property
    def data_disk(self) -> Path:
        return self.data_dir / "data.qcow2"

    @property
    def console_log(self) -> Path:
        return self.data_dir / "console.log"

    @property
    def supervisor_log(self) -> Path:
        return self.data_dir / "supervisor.log"

    @property
    def state(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def saved_state(self) -> Path:
        """The direct-QEMU backend's saved machine (a QEMU migration stream, compressed)."""
        return self.data_dir / "saved-state.bin"

    @property
    def saved_state_info(self) -> Path:
        """What the saved machine was saved with (image, settings) and its sizes."""
        return self.data_dir / "saved-state.json"

    @property
    def known_hosts(self) -> Path:
        return self.data_dir / "known_hosts"

    @property
    def host_key_pin(self) -> Path:
        """The guest's SSH host key as pinned at the first boot (desktop.machine.host_key_pin)."""
        return self.data_dir / "host_key.pin"

    @property
    def host_socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def control_socket(self) -> Path:
        """The supervisor's control socket: `machine ssh` over the live link (desktop.machine.control_socket)."""
        return self.run_dir / "control.sock"

    @property
    def boot_stage(self) -> Path:
        """The last boot stage reached, for `machine status --json`."""
        return self.run_dir / "boot-stage"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.run_dir / "supervisor.pid"

    @property
    def lifecycle_lock(self) -> Path:
        return self.run_dir / "lifecycle.lock"
