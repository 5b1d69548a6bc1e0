"""What every container operation shares: the registry, the stores and the other services."""

from __future__ import annotations

from dataclasses import dataclass

from ..containers import namespace_modes
from ..containers.spec import ContainerSpec, ProcessSpec, SharedNamespaces
from ..containers.store import ContainerStore
from ..models import Container
from ..volumes.store import directory_size
from .container_health import HealthService
from .events import EventService
from .execs import ExecService
from .images import ImageService
from .live import Live
from .networks import NetworkService
from .registry import ContainerRegistry
from .volumes import VolumeService


@dataclass
class ContainerContext:
    """The services a container operation uses, and whether the engine is shutting down.

    Holds no lock of its own: each service keeps its own discipline (see their docstrings).
    """

    registry: ContainerRegistry
    store: ContainerStore
    images: ImageService
    volumes: VolumeService
    networks: NetworkService
    events: EventService
    execs: ExecService
    health: HealthService
    shutting_down: bool = False

    def save_state(self, live: Live) -> None:
        self.registry.save_state(live)

    def donor(self, ref: str) -> namespace_modes.Donor:
        """A container another joins (--pid/--ipc container:REF): its init pid and shareable /dev/shm."""
        c = self.registry.lookup(ref).c
        shareable = c.host_config.get("IpcMode") == "shareable"
        return namespace_modes.Donor(c.id, c.state.pid if c.state.running else 0,
                                     self.store.dir(c.id) / "shm" if shareable else None)

    def bare_spec(self, c: Container) -> ContainerSpec:
        """Enough of a spec to clean up after a container whose run state was lost."""
        cdir = self.store.dir(c.id)
        # The shareable /dev/shm is named so that cleaning up leftovers unmounts it too.
        shm = str(cdir / "shm") if c.host_config.get("IpcMode") == "shareable" else None
        return ContainerSpec(id=c.id, lower_dirs=[], upper_dir=cdir / "diff", work_dir=cdir / "work",
                             process=ProcessSpec(args=[]), namespaces=SharedNamespaces(shm_own_dir=shm))

    def rw_size(self, c: Container) -> int:
        """Bytes in the container's writable layer (its overlay upper directory)."""
        return directory_size(self.store.dir(c.id) / "diff")
