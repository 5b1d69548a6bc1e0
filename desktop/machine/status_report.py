"""What `machine status` adds to the backend's bare state: crashed or not and why, uptime, boot stage.

A machine whose VM stopped without `machine stop` (QEMU killed, the guest
panicked, the host ran out of memory) is "crashed", not "stopped": the report
carries the backend's exit reason and the last lines of the guest console,
and `machine start` boots it again. A clean stop records `stopped_at` in the
machine state, which is what tells the two apart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from desktop.machine.backend import Backend, VmState
from desktop.machine.boot_stages import BootStage
from desktop.machine.config import MachineState, save_state

CONSOLE_TAIL_LINES = 15
CONSOLE_TAIL_BYTES = 16384


def mark_stopped(state_path: Path, state: MachineState) -> None:
    """Record a deliberate stop (or a failed start), so the stopped VM is not taken for a crash."""
    if state.booted_at and not state.stopped_at:
        state.stopped_at = time.time()
        save_state(state_path, state)


def crashed(state: MachineState, vm_state: VmState) -> bool:
    """The VM came up (the guest said ready) and is gone, with no stop recorded."""
    return vm_state in (VmState.STOPPED, VmState.UNDEFINED) and state.ready_s > 0 and not state.stopped_at


def console_tail(path: Path, lines: int = CONSOLE_TAIL_LINES) -> list[str]:
    """The last non-empty lines of the guest console log."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - CONSOLE_TAIL_BYTES))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def crash_report(state: MachineState, backend: Backend, console_log: Path) -> dict[str, Any]:
    """The fields a crashed machine's status carries."""
    return {
        "state": "crashed",
        "exit_reason": backend.exit_reason() or "unknown",
        "console_tail": console_tail(console_log),
        "hint": "`dockyard machine start` boots it again",
    }


def read_stage(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def write_stage(path: Path, stage: BootStage) -> None:
    """Record the boot stage reached (a tiny file; status reads it while a start is under way)."""
    try:
        path.write_text(stage.value + "\n")
    except OSError:
        pass


def running_extras(state: MachineState, stage_file: Path, engine_ok: bool) -> dict[str, Any]:
    """Uptime and boot stage of a running machine."""
    stage = BootStage.AGENT_READY.value if engine_ok else (read_stage(stage_file) or BootStage.VM_BOOTING.value)
    return {
        "boot_stage": stage,
        "uptime_s": round(time.time() - state.booted_at, 1) if state.booted_at else None,
    }


def render_text(info: dict[str, Any]) -> list[str]:
    """`machine status` without --json: key/value lines, the console tail as an indented block."""
    rows = {k: v for k, v in info.items() if k != "console_tail"}
    width = max(len(k) for k in rows)
    lines = [f"{key:<{width}}  {rows[key]}" for key in sorted(rows)]
    if info.get("console_tail"):
        lines.append("last console lines:")
        lines += [f"  {line}" for line in info["console_tail"]]
    elif info.get("state") == "crashed":
        lines.append("last console lines: none (the guest console was silent)")
    return lines
