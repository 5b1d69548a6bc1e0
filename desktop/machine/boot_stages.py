"""The stages a machine goes through while it starts, and how the supervisor reports them.

The manager knows two of them itself (the guest image is ready, the VM is
booting); the detached supervisor knows the others (the SSH link is up, the
engine answers). The supervisor writes each one as a `STAGE <name>` line on
the pipe the manager reads its final `OK`/`ERROR` from, so a caller of
`MachineManager.start(on_stage=...)` (the `dockyard` CLI's progress line, the
desktop app's tray) sees all four in order, with no polling.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class BootStage(enum.Enum):
    """One step of a machine start, in the order they happen."""

    IMAGE_READY = "image-ready"
    VM_BOOTING = "vm-booting"
    SSH_UP = "ssh-up"
    AGENT_READY = "agent-ready"

    @property
    def label(self) -> str:
        """What the user reads (tray tooltip, CLI progress line)."""
        return _LABELS[self]

    @property
    def step(self) -> int:
        """1-based position, for "2/4"."""
        return list(BootStage).index(self) + 1


_LABELS = {
    BootStage.IMAGE_READY: "guest image ready",
    BootStage.VM_BOOTING: "VM booting",
    BootStage.SSH_UP: "SSH up",
    BootStage.AGENT_READY: "engine ready",
}

STAGE_PREFIX = "STAGE "
StageCallback = Callable[[BootStage], None]


def stage_line(stage: BootStage) -> str:
    """The supervisor's report line for `stage` (without the newline)."""
    return STAGE_PREFIX + stage.value


def parse_stage_line(line: str) -> BootStage | None:
    """The stage a `STAGE ...` line names; None for any other line (or an unknown stage)."""
    if not line.startswith(STAGE_PREFIX):
        return None
    try:
        return BootStage(line[len(STAGE_PREFIX):].strip())
    except ValueError:
        return None


def progress_text(stage: BootStage) -> str:
    """"starting [2/4] VM booting" — the one progress line shape the CLI and the tray share."""
    return f"starting [{stage.step}/{len(BootStage)}] {stage.label}"
