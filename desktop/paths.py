"""Where Dockyard keeps its files on the host: config, data (disks, keys) and runtime state.

Locations follow platformdirs. `DOCKYARD_HOME` relocates everything under one
directory, which tests and side-by-side installs use to stay isolated.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

APP_NAME = "dockyard"
# sun_path is 108 bytes on Linux (104 on macOS); stay under the smaller one.
MAX_SOCKET_PATH = 100


def _home_override() -> Path | None:
    value = os.environ.get("DOCKYARD_HOME")
    return Path(value).expanduser().resolve() if value else None


def config_dir() -> Path:
    """Directory of user-editable configuration (machine definitions)."""
    home = _home_override()
    if home:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Directory of persistent data: per-machine disks, SSH keys, logs."""
    home = _home_override()
    if home:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def runtime_dir() -> Path:
    """Directory of sockets and pid files; created with mode 0700.

    Falls back to a per-user directory in the temp dir when the platform's
    runtime dir (e.g. /run/user/UID) cannot be created.
    """
    home = _home_override()
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


def image_cache_dir() -> Path | None:
    """Guest image cache, or None for vmimage's own default location."""
    value = os.environ.get("DOCKYARD_IMAGE_CACHE")
    return Path(value).expanduser() if value else None


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
