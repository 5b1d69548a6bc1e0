"""The ACPI power button (libvirt `shutdown`, QMP `system_powerdown`) as seen by the init.

Without acpid or systemd nobody would react to the button. The kernel's
`button` driver reports it as an input device; the init reads its evdev node.
"""

from __future__ import annotations

import os

SYSFS_INPUT = "/sys/class/input"
BUTTON_NAME = "Power Button"
EV_KEY = 1
KEY_POWER = 116
# struct input_event on 64-bit: struct timeval (16 bytes), u16 type, u16 code, s32 value.
EVENT_SIZE = 24


def find_power_button(sysfs: str = SYSFS_INPUT) -> str | None:
    """The /dev/input/eventN node of the ACPI power button, if the machine has one."""
    try:
        entries = sorted(os.listdir(sysfs))
    except FileNotFoundError:
        return None
    for entry in entries:
        if not entry.startswith("event"):
            continue
        try:
            with open(f"{sysfs}/{entry}/device/name") as f:
                if f.read().strip() == BUTTON_NAME:
                    return f"/dev/input/{entry}"
        except OSError:
            continue
    return None


def open_power_button() -> int | None:
    """A non-blocking fd on the power button's events, or None."""
    device = find_power_button()
    if device is None:
        return None
    try:
        return os.open(device, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def pressed(data: bytes) -> bool:
    """True if `data` (whole input_event records) holds a power key press."""
    for offset in range(0, len(data) - EVENT_SIZE + 1, EVENT_SIZE):
        kind = int.from_bytes(data[offset + 16:offset + 18], "little")
        code = int.from_bytes(data[offset + 18:offset + 20], "little")
        value = int.from_bytes(data[offset + 20:offset + 24], "little", signed=True)
        if kind == EV_KEY and code == KEY_POWER and value == 1:
            return True
    return False
