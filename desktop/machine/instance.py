"""One machine as both the manager and its supervisor see it: files, config, state, VM backend.

The manager (lifecycle commands) and the supervisor (host services of a
running machine) both build on `Machine`; neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from desktop import paths
from desktop.machine.backend import Backend
from desktop.machine.config import MachineConfig, MachineState, load_config, load_state, validate_name

SUPERVISOR_MODULE = "desktop.machine.supervisor"


class Machine:
    """The machine called `name` in the current Dockyard home."""

    def __init__(self, name: str = "default") -> None:
        self.name = validate_name(name)
        self.paths = paths.MachinePaths.of(name)

    # -- files ------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def config_path(self) -> Path:
        return self.paths.config

    @property
    def run_dir(self) -> Path:
        return self.paths.run_dir

    @property
    def key_path(self) -> Path:
        return self.paths.key

    @property
    def data_disk(self) -> Path:
        return self.paths.data_disk

    @property
    def console_log(self) -> Path:
        return self.paths.console_log

    @property
    def supervisor_log(self) -> Path:
        return self.paths.supervisor_log

    @property
    def state_path(self) -> Path:
        return self.paths.state

    @property
    def known_hosts(self) -> Path:
        return self.paths.known_hosts

    @property
    def host_socket(self) -> Path:
        return self.paths.host_socket

    @property
    def supervisor_pidfile(self) -> Path:
        return self.paths.supervisor_pidfile

    @property
    def docker_host(self) -> str:
        return f"unix://{self.host_socket}"

    @property
    def domain_name(self) -> str:
        """The VM's name outside this home (libvirt is shared by every home of the host):
        the machine name plus a tag of the home, so two homes' `default` machines differ."""
        return f"dockyard-{self.name}-{self.paths.home_id}"

    # -- records ----------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.exists()

    def config(self) -> MachineConfig:
        return load_config(self.config_path, self.name)

    def state(self) -> MachineState:
        return load_state(self.state_path)

    def backend(self, config: MachineConfig | None = None) -> Backend:
        config = config or self.config()
        if config.backend == "libvirt":
            from desktop.machine.libvirt_backend import LibvirtBackend

            return LibvirtBackend(self.domain_name, self.run_dir, self.console_log, uri=config.libvirt_uri,
                                  owner_home=str(self.paths.home))
        from desktop.machine.qemu_backend import QemuBackend

        return QemuBackend(self.domain_name, self.run_dir, self.console_log, saved_state=self.paths.saved_state)
