"""Instant start: `machine stop` saves the running guest and `machine start` resumes it.

The backends do the saving (libvirt's managed save; a QEMU migration into a
file in the direct backend). This module decides when a saved state may be
resumed: only onto the same guest image and the same machine settings (CPUs,
memory, shared folders, accelerator, backend) it was saved with, recorded
next to it. Anything else, or a state that does not load, is removed and the
machine boots cold, saying why on stderr (a warning in the CLI).

A resume pipelines its steps: QEMU loads the state while the supervisor
process starts (Python, paramiko), which dials the guest's sshd as soon as
the guest runs. Meanwhile the guest init, told of the resume on the ready
channel, steps the clock, which stood still while the machine was saved, and
mounts the shares again. The supervisor then brings the host socket and the
published ports back as after a boot. Containers never noticed: their
processes were saved with the guest.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from desktop.machine.backend import Backend, SaveRefused
from desktop.machine.config import MachineConfig, MachineState, save_state
from runtime.atomic_file import read_json, write_json_atomic
from runtime.errors import RuntimeFailure

if TYPE_CHECKING:
    from desktop.machine.manager import MachineManager

log = logging.getLogger(__name__)

# What a saved guest depends on, with the words used to explain a cold boot.
_LABELS = {
    "image": "the guest image", "accel": "the accelerator", "backend": "the backend",
    "libvirt_uri": "the libvirt URI", "cpus": "CPUs", "memory_mib": "memory (MiB)",
    "sharefs": "the shared-folder type", "shares": "the shared folders",
}


def fingerprint(config: MachineConfig, image_hash: str, accel: str) -> dict[str, Any]:
    """Everything a saved guest must find unchanged to be resumed."""
    return {"image": image_hash, "accel": accel, "backend": config.backend, "libvirt_uri": config.libvirt_uri,
            "cpus": config.cpus, "memory_mib": config.memory_mib, "sharefs": config.sharefs,
            "shares": [[s.host_path, s.tag] for s in config.shares]}


def changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the saved and the current fingerprint, in words."""
    return [f"{_LABELS.get(key, key)} changed ({saved.get(key)!r} -> {value!r})"
            for key, value in current.items() if saved.get(key) != value]


def save(manager: MachineManager, backend: Backend, config: MachineConfig) -> bool:
    """Save the running machine; False (reason logged, VM still running) when it cannot be saved.

    The supervisor goes first, after a `sync` in the guest (see its SIGUSR2), so the
    guest sees the SSH link closed cleanly rather than frozen mid-request.
    """
    state = manager.state()
    # SIGUSR2: POSIX only, as is saving (QEMU's exec: migration).
    manager._stop_supervisor(poweroff=False, deadline_s=70, sig=getattr(signal, "SIGUSR2", signal.SIGTERM))
    t0 = time.monotonic()
    try:
        facts = backend.save_state()
    except SaveRefused as err:
        log.warning("machine %s cannot be saved (%s): shutting it down instead", manager.name, err)
        return False
    record = {"fingerprint": fingerprint(config, state.image_hash, state.accel), "saved_at": time.time(),
              "save_s": round(time.monotonic() - t0, 3), "booted_at": state.booted_at, **facts}
    write_json_atomic(manager.paths.saved_state_info, record, mode=0o600)
    log.info("machine %s saved in %.2f s: %s", manager.name, record["save_s"], facts)
    return True


def saved_record(manager: MachineManager) -> dict[str, Any]:
    """The record written by `save` (empty when there is none)."""
    return read_json(manager.paths.saved_state_info) or {}


def discard(manager: MachineManager, backend: Backend) -> None:
    backend.discard_saved_state()
    manager.paths.saved_state_info.unlink(missing_ok=True)


def resume(manager: MachineManager, config: MachineConfig, backend: Backend, timeout: float) -> bool:
    """Resume the saved guest when it may be; False when the machine must boot cold instead."""
    if not backend.has_saved_state():
        manager.paths.saved_state_info.unlink(missing_ok=True)
        return False
    from desktop.machine.accel import choose_accelerator
    from desktop.machine.boot_stages import BootStage
    from desktop.machine.manager import ensure_guest_image, free_local_port

    image = ensure_guest_image()
    accel = choose_accelerator().name
    record = saved_record(manager)
    previous = manager.state()
    why = changes(record.get("fingerprint") or {}, fingerprint(config, getattr(image, "recipe_hash", ""), accel))
    if not previous.host_key:
        why.append("no pinned SSH host key for it")
    if why:
        log.warning("machine %s: booting cold instead of resuming its saved state: %s", manager.name, "; ".join(why))
        discard(manager, backend)
        return False
    manager._stage(BootStage.IMAGE_READY)
    spec = manager.launch_spec(config, image, accel, free_local_port(), backend)
    save_state(manager.state_path, MachineState(
        ssh_port=spec.ssh_port, host_key=previous.host_key, accel=accel, image_hash=previous.image_hash,
        booted_at=float(record.get("booted_at") or previous.booted_at), host_socket=str(manager.host_socket),
        guest_timings=previous.guest_timings, start_kind="restore"))
    go_read, go_write = os.pipe()
    spawned: list[BaseException] = []
    # The supervisor starts (Python, paramiko: ~0.2 s) while QEMU loads the state.
    supervisor = threading.Thread(target=_supervise, args=(manager, config, timeout, go_read, spawned),
                                  name="supervisor", daemon=True)
    supervisor.start()
    try:
        try:
            backend.begin_restore(spec)
            manager._stage(BootStage.VM_BOOTING)
            backend.finish_restore(timeout)
            os.write(go_write, b"1")
        finally:
            os.close(go_write)  # without the byte: EOF, the supervisor gives up
            supervisor.join(timeout + 60)
        if spawned:
            raise spawned[0]
    except RuntimeFailure as err:
        log.warning("machine %s: the saved state could not be resumed (%s): removing it and booting cold",
                    manager.name, err)
        manager._stop_supervisor(poweroff=False)
        backend.force_stop()
        discard(manager, backend)
        return False
    # The guest has moved on (its disk too): the saved state must never be resumed again.
    discard(manager, backend)
    return True


def _supervise(manager: MachineManager, config: MachineConfig, timeout: float, go_fd: int,
               errors: list[BaseException]) -> None:
    try:
        manager._spawn_supervisor(ready_fd=None, timeout=timeout, config=config, go_fd=go_fd)
    except Exception as err:  # noqa: BLE001 - handed to the thread that decides
        errors.append(err if isinstance(err, RuntimeFailure) else RuntimeFailure(str(err)))
    finally:
        os.close(go_fd)
