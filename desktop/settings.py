"""Every host-side setting of Dockyard: environment variables and the shared settings file.

One table (`SETTINGS`) declares each setting once: its key in the TOML
settings file, its environment variable, its default and how a value is
checked. `load()` reads them with the precedence environment > file >
default and returns a typed, validated `Settings`. A bad value fails with one
line that names the variable, or the file and key, it came from.

The settings file is `settings.toml` in the configuration directory
(platformdirs' user config dir, or `$DOCKYARD_HOME/config`); the `dockyard`
CLI and the desktop app share it. `DOCKYARD_HOME` itself can only be an
environment variable: it decides where that file is.

Guest-side variables (`vmimage/guest_init`, `runtime/`) and the test suite's
own variables are not Dockyard settings and are not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import InvalidArgument

SETTINGS_FILE_NAME = "settings.toml"
HOME_ENV = "DOCKYARD_HOME"
ACCELERATORS = ("kvm", "hvf", "whpx", "tcg")
IMAGE_SOURCES = ("auto", "build", "imported")


class SettingsError(InvalidArgument):
    """A setting has a value Dockyard cannot use; the message names where it came from."""


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("a number of seconds greater than 0")
    try:
        seconds = float(value)  # type: ignore[arg-type]  # float() refuses what it cannot read
    except (TypeError, ValueError):
        raise ValueError("a number of seconds greater than 0") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("a number of seconds greater than 0")
    return seconds


def _accelerator(value: object) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text not in ACCELERATORS:
        raise ValueError(f"one of {', '.join(ACCELERATORS)}")
    return text


def _image_source(value: object) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if text not in IMAGE_SOURCES:
        raise ValueError(f"one of {', '.join(IMAGE_SOURCES)}")
    return text


def _cpus(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("a whole number of CPUs, at least 1")
    try:
        cpus = int(str(value).strip())
    except ValueError:
        raise ValueError("a whole number of CPUs, at least 1") from None
    if cpus < 1 or cpus > 512:
        raise ValueError("a whole number of CPUs, at least 1")
    return cpus


def _boolean(value: object) -> bool:
    """true/false in the file; 1/0, true/false, yes/no, on/off in the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _size(minimum_mib: int) -> Callable[[object], int]:
    """A size such as "4G", "1536M" or a number of MiB, as MiB."""
    def parse(value: object) -> int:
        from desktop.machine.config import parse_size_mib

        hint = f"a size such as 4G or 1536M, at least {minimum_mib} MiB"
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(hint)
        try:
            mib = parse_size_mib(str(value))
        except InvalidArgument:
            raise ValueError(hint) from None
        if mib < minimum_mib:
            raise ValueError(hint)
        return mib
    return parse


def _folders(value: object) -> tuple[str, ...]:
    """Absolute host folders: a TOML list of strings, or os.pathsep-separated in the environment."""
    if isinstance(value, str):
        items: list[object] = [part for part in value.split(os.pathsep) if part]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError("a list of absolute folder paths")
    folders = []
    for item in items:
        if not isinstance(item, str) or not os.path.isabs(os.path.expanduser(item)):
            raise ValueError("a list of absolute folder paths")
        folders.append(os.path.normpath(os.path.expanduser(item)))
    return tuple(folders)


def _directory(value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a directory path")
    return Path(value).expanduser().resolve()


@dataclass(frozen=True)
class Setting:
    """One setting: where it is read from, its default, how a raw value becomes a typed one."""

    key: str            # in settings.toml; also the Settings field
    env: str            # environment variable
    default: Any
    parse: Callable[[object], Any]
    doc: str
    in_file: bool = True


SETTINGS: tuple[Setting, ...] = (
    Setting("home", HOME_ENV, None, _directory,
            "keep every Dockyard file (config, machines, keys, sockets, logs, guest images) under this folder",
            in_file=False),
    Setting("accel", "DOCKYARD_ACCEL", None, _accelerator,
            "force the VM accelerator (kvm, hvf, whpx or tcg) instead of probing"),
    Setting("ready_timeout", "DOCKYARD_READY_TIMEOUT", 180.0, _seconds,
            "seconds `machine start` waits for the guest to be ready"),
    Setting("boot_stall", "DOCKYARD_BOOT_STALL", 60.0, _seconds,
            "seconds of guest silence after which a boot is killed and tried once more"),
    Setting("clock_check", "DOCKYARD_CLOCK_CHECK", 30.0, _seconds,
            "seconds between checks of the guest clock against the host's (slewed, or stepped past 0.5 s)"),
    Setting("image_cache", "DOCKYARD_IMAGE_CACHE", None, _directory,
            "where guest images are built and cached (default: `images` in the data folder)"),
    Setting("guest_image", "DOCKYARD_GUEST_IMAGE", None, _directory,
            "boot this prebuilt guest image folder (with its image.json) instead of building one"),
    Setting("image_source", "DOCKYARD_IMAGE_SOURCE", "auto", _image_source,
            "the guest image machines boot: `build` it from this Dockyard, the last `imported` one, "
            "or `auto` (build when this host can, else the imported one)"),
    Setting("cpus", "DOCKYARD_CPUS", None, _cpus,
            "the machine's CPUs, applied at its next start (default: what `machine init` chose)"),
    Setting("memory", "DOCKYARD_MEMORY", None, _size(256),
            "the machine's memory (e.g. 4G), applied at its next start"),
    Setting("disk", "DOCKYARD_DISK", None, _size(1024),
            "the data disk size (e.g. 40G) of a machine created from now on (`init`, reset to factory defaults)"),
    Setting("shared_folders", "DOCKYARD_SHARED_FOLDERS", None, _folders,
            "host folders shared at the same path in the machine, applied at its next start"),
    Setting("hot_reload_off", "DOCKYARD_HOT_RELOAD_OFF", (), _folders,
            "shared folders whose host changes are not forwarded to file watchers in the machine (hot reload)"),
    Setting("save_on_stop", "DOCKYARD_SAVE_ON_STOP", True, _boolean,
            "`machine stop` saves the running machine and the next start resumes it (false: shut it down)"),
)


@dataclass(frozen=True)
class Settings:
    """The effective settings, typed; `sources` says where each non-default value came from."""

    home: Path | None = None
    accel: str | None = None
    ready_timeout: float = 180.0
    boot_stall: float = 60.0
    clock_check: float = 30.0
    image_cache: Path | None = None
    guest_image: Path | None = None
    image_source: str = "auto"
    cpus: int | None = None
    memory: int | None = None
    disk: int | None = None
    shared_folders: tuple[str, ...] | None = None
    hot_reload_off: tuple[str, ...] = ()
    save_on_stop: bool = True
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def source(self, key: str) -> str:
        """The environment variable's name, '<file>: key' or 'default'."""
        return self.sources.get(key, "default")


def home(environ: Mapping[str, str] | None = None) -> Path | None:
    """`DOCKYARD_HOME` checked and resolved, or None (the platform's folders)."""
    env = os.environ if environ is None else environ
    raw = env.get(HOME_ENV)
    if not raw:
        return None
    try:
        return _directory(raw)
    except ValueError as err:
        raise SettingsError(f"{HOME_ENV}: {raw!r} is not valid: expected {err}") from None


def settings_file(home: Path | None) -> Path:
    """settings.toml in the configuration directory of `home` (None: the platform's)."""
    if home is not None:
        return home / "config" / SETTINGS_FILE_NAME
    import platformdirs

    return Path(platformdirs.user_config_dir("dockyard")) / SETTINGS_FILE_NAME


def _read_file(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise SettingsError(f"{path}: cannot be read ({err.strerror or err})") from None
    known = {s.key for s in SETTINGS if s.in_file}
    for key in data:
        if key not in known:
            raise SettingsError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    return data


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings in force: environment over settings file over defaults, each value checked."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    by_key = {s.key: s for s in SETTINGS}

    def take(setting: Setting, raw: object, source: str) -> None:
        try:
            values[setting.key] = setting.parse(raw)
        except ValueError as err:
            raise SettingsError(f"{source}: {raw!r} is not valid: expected {err}") from None
        sources[setting.key] = source

    if env.get(HOME_ENV):
        take(by_key["home"], env[HOME_ENV], HOME_ENV)
    path = settings_file(values.get("home"))
    from_file = _read_file(path)
    for setting in SETTINGS:
        if setting.key == "home":
            continue
        if env.get(setting.env):
            take(setting, env[setting.env], setting.env)
        elif setting.key in from_file:
            take(setting, from_file[setting.key], f"{path}: {setting.key}")
    return Settings(**values, sources=sources)


def _toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string is a valid TOML basic string (same escapes).
    return json.dumps(str(value))


def save(changes: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Path:
    """Write `changes` into settings.toml (None removes a key), keeping the file's other keys.

    Each value is checked as `load` would check it, so the file stays loadable. The
    file is rewritten whole (atomically), sorted by key: comments are not kept.
    """
    from runtime.atomic_file import write_bytes_atomic

    path = settings_file(home(environ))
    data = dict(_read_file(path))
    by_key = {s.key: s for s in SETTINGS if s.in_file}
    for key, value in changes.items():
        if key not in by_key:
            raise SettingsError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(by_key))})")
        if value is None:
            data.pop(key, None)
            continue
        try:
            by_key[key].parse(list(value) if isinstance(value, tuple) else value)
        except ValueError as err:
            raise SettingsError(f"{path}: {key} = {value!r} is not valid: expected {err}") from None
        data[key] = list(value) if isinstance(value, tuple) else value
    lines = ["# Dockyard settings, shared by the dockyard CLI and the desktop app.\n"]
    lines += [f"{key} = {_toml_value(data[key])}\n" for key in sorted(data)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, "".join(lines).encode(), mode=0o644)
    return path
