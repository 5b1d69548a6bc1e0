"""Typed machine configuration and the runtime facts of a started machine, persisted as JSON.

`MachineConfig` is what the user chose at `init` (CPUs, memory, shares, backend);
`MachineState` is what the host learnt while starting it (SSH port, pinned host
key, supervisor pid). Both are written atomically so a crash never leaves half
a file behind.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.atomic_file import read_json, write_json_atomic
from runtime.errors import InvalidArgument, NotFound

BACKENDS = ("libvirt", "qemu")
SHARE_FILESYSTEMS = ("9p", "virtiofs", "sftp", "none")
CONFIG_VERSION = 1
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNIT_MIB = {"k": 1 / 1024, "m": 1, "": 1, "g": 1024, "t": 1024 * 1024}


def parse_size_mib(text: str, default_unit: str = "m") -> int:
    """Parse '2048', '2G', '2GiB', '512M' into MiB; a bare number uses `default_unit`."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise InvalidArgument(f"invalid size {text!r}: use a number with an optional unit, e.g. 2G or 512M")
    number, unit, _suffix = match.groups()
    if not unit and not _suffix:
        unit = default_unit
    mib = float(number) * _UNIT_MIB[unit.lower()]
    if mib < 1:
        raise InvalidArgument(f"size {text!r} is too small")
    return int(mib)


def validate_name(name: str) -> str:
    """Machine names become file and domain names: letters, digits, '.', '_', '-'."""
    if not _NAME_RE.match(name):
        raise InvalidArgument(f"invalid machine name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


@dataclass
class Share:
    """A host folder exported to the guest and mounted at the same path there."""

    host_path: str
    tag: str

    @property
    def guest_path(self) -> str:
        return self.host_path


@dataclass
class MachineConfig:
    """What the user chose for a machine; edited only by `init` (and by hand)."""

    name: str = "default"
    cpus: int = 2
    memory_mib: int = 2048
    disk_mib: int = 20 * 1024
    backend: str = "libvirt"
    sharefs: str = "9p"
    shares: list[Share] = field(default_factory=list)
    libvirt_uri: str | None = None
    version: int = CONFIG_VERSION

    def validate(self) -> MachineConfig:
        """Raise InvalidArgument with a user-facing message for any impossible value."""
        validate_name(self.name)
        if self.backend not in BACKENDS:
            raise InvalidArgument(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.sharefs not in SHARE_FILESYSTEMS:
            raise InvalidArgument(
                f"unknown shared-folder type {self.sharefs!r}: choose one of {', '.join(SHARE_FILESYSTEMS)}"
            )
        if self.cpus < 1:
            raise InvalidArgument("--cpus must be at least 1")
        if self.memory_mib < 256:
            raise InvalidArgument("--memory must be at least 256 MiB")
        if self.disk_mib < 1024:
            raise InvalidArgument("--disk must be at least 1 GiB")
        seen: set[str] = set()
        for share in self.shares:
            # Spaces, commas and colons are fine: the kernel argument %-escapes them.
            if not share.host_path.startswith("/"):
                raise InvalidArgument(f"cannot share {share.host_path!r}: the path must be absolute")
            if share.tag in seen:
                raise InvalidArgument(f"duplicate share tag {share.tag!r}")
            seen.add(share.tag)
        return self

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["shares"] = [Share(**s) for s in values.get("shares", [])]
        return cls(**values)


def default_backend() -> str:
    """libvirt when its Python module and daemon are installed, else direct QEMU."""
    import importlib.util
    import shutil

    try:
        has_module = importlib.util.find_spec("libvirt") is not None
    except (ImportError, ValueError):
        has_module = False
    return "libvirt" if has_module and shutil.which("libvirtd") else "qemu"


def shares_for(paths: list[str | Path]) -> list[Share]:
    """Turn host folders into Share entries with stable 9p/virtiofs tags (max 31 chars)."""
    shares = []
    for index, raw in enumerate(paths):
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise InvalidArgument(f"cannot share {str(raw)!r}: not a directory")
        shares.append(Share(host_path=str(path.resolve()), tag=f"dyshare{index}"))
    return shares


def with_settings(config: MachineConfig, cpus: int | None, memory_mib: int | None,
                  shared_folders: tuple[str, ...] | None) -> MachineConfig:
    """`config` with the sizes and folders the user set in settings.toml (None: keep the machine's).

    A shared folder that no longer exists is left out rather than failing the boot.
    """
    changed = dataclasses.replace(config)
    if cpus is not None:
        changed.cpus = cpus
    if memory_mib is not None:
        changed.memory_mib = memory_mib
    if shared_folders is not None and config.sharefs != "none":
        changed.shares = shares_for([p for p in shared_folders if Path(p).is_dir()])
    return changed.validate()


def save_config(path: Path, config: MachineConfig) -> None:
    """Validate then write the config atomically (mode 0600: it names the user's folders)."""
    config.validate()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, config.to_json(), mode=0o600)


def load_config(path: Path, name: str) -> MachineConfig:
    """Read a machine's config; NotFound with a hint when it was never initialised."""
    data = read_json(path)
    if data is None:
        raise NotFound(f"machine {name!r} does not exist: run `dockyard machine init` first")
    if data.get("version", 0) > CONFIG_VERSION:
        raise InvalidArgument(f"machine {name!r} was created by a newer Dockyard (config version {data['version']})")
    return MachineConfig.from_json(data).validate()


@dataclass
class MachineState:
    """Facts learnt while starting a machine; valid while it runs, kept for diagnostics after."""

    ssh_port: int = 0
    host_key: str = ""
    supervisor_pid: int = 0
    host_socket: str = ""
    accel: str = ""
    image_hash: str = ""
    booted_at: float = 0.0
    ready_s: float = 0.0
    # When `machine stop` (or a failed start) ended it; 0 while it runs, or after a crash.
    stopped_at: float = 0.0
    guest_timings: dict[str, float] = field(default_factory=dict)
    start_kind: str = ""  # "cold" (booted) or "restore" (resumed from a saved state)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> MachineState:
        if not data:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def save_state(path: Path, state: MachineState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, state.to_json(), mode=0o600)


def load_state(path: Path) -> MachineState:
    return MachineState.from_json(read_json(path))
