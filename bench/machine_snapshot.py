"""Instant start figures for bench.machine: restore-start time and the saved state's size.

* restore-start: `dockyard machine stop` (which saves the guest) then
  `dockyard machine start` until the first successful `docker version`, with a
  container running through it;
* the saved state on disk against the guest's used memory (`free`: total -
  free - buffers/cache), for the file as written (zstd in the direct-QEMU
  backend, libvirt's save_image_format otherwise) and for the raw migration
  stream, in which QEMU already sends all-zero pages as a flag.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

LIBVIRT_SAVE_DIR = Path("/var/lib/libvirt/qemu/save")  # qemu:///system as root


def guest_used_bytes(b: Any, name: str) -> int:
    """Used memory of the guest as `free -b` reports it."""
    out = b.dockyard("ssh", "--name", name, "free -b").stdout
    fields = next(line for line in out.splitlines() if line.startswith("Mem:")).split()
    return int(fields[2])


def saved_sizes(b: Any, name: str) -> dict[str, float]:
    """The saved state's file size and raw stream size (0 when unknown)."""
    from desktop.paths import home_id

    machine_dir = b.home / "data" / "machines" / name
    record = json.loads((machine_dir / "saved-state.json").read_text())
    file_bytes = int(record.get("file_bytes", 0))
    if not file_bytes:
        libvirt_file = LIBVIRT_SAVE_DIR / f"dockyard-{name}-{home_id(b.home.resolve())}.save"
        file_bytes = libvirt_file.stat().st_size if libvirt_file.exists() else 0
    return {"file_bytes": file_bytes, "stream_bytes": int(record.get("stream_bytes", 0)),
            "save_s": float(record.get("save_s", 0))}


def measure_restore(b: Any, name: str, runs: int, image: str | None = None) -> dict[str, Any]:
    """`runs` stop -> start -> first `docker version` cycles, with a container left running."""
    if image:
        b.docker(b.docker_host, "run", "-d", "--name", "bench-idle", image, "sleep", "1000000")
    times, used, sizes = [], [], []
    for _ in range(runs):
        used.append(guest_used_bytes(b, name))
        stop = b.dockyard("stop", "--name", name)
        if "saved" not in stop.stderr:
            raise RuntimeError(f"the machine was not saved: {stop.stderr.strip()}")
        sizes.append(saved_sizes(b, name))
        t0 = time.perf_counter()
        b.dockyard("start", "--name", name)
        b.docker(b.docker_host, "version")
        times.append(time.perf_counter() - t0)
        kind = json.loads(b.dockyard("status", "--name", name, "--json").stdout).get("start_kind")
        if kind != "restore":
            raise RuntimeError(f"the start was not a restore but {kind!r}")
    if image:
        b.docker(b.docker_host, "rm", "-f", "bench-idle")
    return {"times": times, "used": used, "sizes": sizes}


def report(result: dict[str, Any]) -> None:
    import statistics

    times = result["times"]
    print(f"restore-start (stop saves; start to first `docker version`): p50 {statistics.median(times):.2f} s  "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}; target <= 1.5 s)")
    for used, size in zip(result["used"], result["sizes"], strict=True):
        stream = (f", raw migration stream {size['stream_bytes'] / 1e6:.0f} MB = "
                  f"{size['stream_bytes'] / used:.2f}x" if size["stream_bytes"] else "")
        print(f"  saved state: file {size['file_bytes'] / 1e6:.0f} MB = {size['file_bytes'] / used:.2f}x the guest's "
              f"used memory ({used / 1e6:.0f} MB){stream}; saved in {size['save_s']:.2f} s  (target <= 1.5x)")
