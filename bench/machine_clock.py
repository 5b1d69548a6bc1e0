"""The guest clock's offset from the host's some minutes after boot, read inside a container.

Called by bench.machine with its running machine. The machine is left to run
until `after_s` seconds after its boot (the time the other figures took counts),
then a busybox container reads the guest clock NTP-style against the host's
(tests/support/container_clock.py): the figure is the offset and its
uncertainty (half the round trip of the best of eight readings).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.container_clock import ContainerClock, ContainerOffset
from tests.support.waiting import poll


def clock_offset_after_boot(home: Path, name: str, docker_host: str, image: str,
                            after_s: float) -> tuple[ContainerOffset, float]:
    """(offset, seconds since boot when read) once the machine has run `after_s` seconds."""
    state = json.loads((home / "data" / "machines" / name / "state.json").read_text())
    booted_at = float(state["booted_at"])
    poll(lambda: time.time() - booted_at >= after_s, timeout=after_s + 60, interval=1,
         what=f"{after_s:.0f} s of machine uptime")
    with ContainerClock(docker_host, image) as clock:
        offset = clock.measure()
    return offset, time.time() - booted_at


def report(offset: ContainerOffset, uptime_s: float) -> str:
    return (f"guest clock offset {uptime_s:.0f} s after boot, read in a container: {offset}  "
            f"(target: within 50 ms)")
