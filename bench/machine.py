"""Benchmark of the Dockyard machine: boot, `docker run` through the VM, shared-folder I/O.

Usage: .venv/bin/python -m bench.machine [--boots 3] [--runs 10] [--restores 3] [--backend libvirt|qemu]
                                         [--sharefs 9p] [--clock-after 300]
                                         [--boot-only | --only ssh|snapshot|footprint]

Prints, in one run:
* cold boot: `dockyard machine start` (VM stopped with --cold, image cached)
  until the first successful `docker version` through the host socket;
* restore-start and the saved state's size against the guest's used memory
  (bench/machine_snapshot.py; with a 9p shared folder, as the default machine has);
* `docker run --rm busybox true` through the VM vs a native Debian dockerd
  started by this script (busybox from the test registry of tests/support);
* shared folder vs the guest's own disk: sequential write/read of 200 MiB and a
  `find` over 10,000 files, timed inside the guest, with ratios;
* `dockyard machine ssh true` over the supervisor's live link vs a new SSH
  connection (bench/machine_ssh.py);
* the guest clock's offset from the host's, read in a container `--clock-after`
  seconds (300) after the last boot (bench/machine_clock.py);
* QEMU's resident memory after boot, idle, and after a 500 MB container, and its
  idle CPU (bench/machine_footprint.py).

Everything but the guest image cache lives in a temporary DOCKYARD_HOME and is
removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "bench"


class Bench:
    """Drives one machine through the real `dockyard` and `docker` CLIs."""

    def __init__(self, home: Path, share: Path) -> None:
        from desktop.paths import image_cache_dir

        self.home = home
        self.share = share
        # DOCKYARD_HOME relocates the guest image cache too: keep using the user's
        # cached image rather than building one in the temporary home.
        self.env = dict(os.environ, DOCKYARD_HOME=str(home), DOCKYARD_IMAGE_CACHE=str(image_cache_dir()))
        self.env.pop("DOCKER_HOST", None)
        self.docker_host = f"unix://{home / 'run' / NAME / 'docker.sock'}"
        self.backend = "libvirt"

    def dockyard(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "desktop.cli", "machine", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=REPO, input=stdin,
                              timeout=600)
        if check and proc.returncode != 0:
            raise RuntimeError(f"dockyard {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def guest(self, script: str) -> str:
        return self.dockyard("ssh", "--name", NAME, script).stdout

    def guest_seconds(self, script: str) -> float:
        """Run `script` in the guest and return its duration measured by the guest clock."""
        out = self.guest(f"s=$(date +%s.%N); {script} >/dev/null; e=$(date +%s.%N); echo \"$s $e\"")
        start, end = out.split()[-2:]
        return float(end) - float(start)

    def docker(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", "-H", host, *args], capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc


def p50(values: list[float]) -> float:
    return statistics.median(values)


def measure_boot(b: Bench, boots: int, verbose: bool = False) -> list[float]:
    import json

    times = []
    for i in range(boots):
        b.dockyard("stop", "--cold", "--name", NAME)
        t0 = time.perf_counter()
        b.dockyard("start", "--name", NAME)
        t_start = time.perf_counter() - t0
        b.docker(b.docker_host, "version")
        times.append(time.perf_counter() - t0)
        if verbose:
            status = json.loads(b.dockyard("status", "--name", NAME, "--json").stdout)
            print(f"  boot {i + 1}: {times[-1]:.2f} s (start returned at {t_start:.2f} s; "
                  f"host saw ready at {status.get('boot_to_ready_s')} s) guest: {status.get('guest_timings')}",
                  flush=True)
    return times


def time_runs(b: Bench, host: str, image: str, runs: int) -> list[float]:
    b.docker(host, "run", "--rm", image, "true")  # pull + warm caches
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        b.docker(host, "run", "--rm", image, "true")
        out.append(time.perf_counter() - t0)
    return out


def ensure_guest_can_pull(b: Bench, image: str) -> str:
    """Pull `image` (a 127.0.0.1:PORT registry) in the guest; returns a note on how."""
    first = b.docker(b.docker_host, "pull", image, check=False)
    if first.returncode == 0:
        return "direct (agent dials the host loopback at 10.0.2.2)"
    # Bench-only stand-in while the agent is not told about dockyard.hostloop:
    # a relay in the guest from 127.0.0.1:PORT to the host's 10.0.2.2:PORT.
    port = int(image.split("/", 1)[0].rsplit(":", 1)[1])
    relay = (
        "import socket,sys,threading\n"
        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('127.0.0.1',{port}));s.listen(16)\n"
        "def p(a,b):\n"
        " try:\n"
        "  while (d:=a.recv(65536)): b.sendall(d)\n"
        " except OSError: pass\n"
        " finally:\n"
        "  try: b.shutdown(socket.SHUT_WR)\n"
        "  except OSError: pass\n"
        "while True:\n"
        f" c,_=s.accept();u=socket.create_connection(('10.0.2.2',{port}))\n"
        " threading.Thread(target=p,args=(c,u),daemon=True).start()\n"
        " threading.Thread(target=p,args=(u,c),daemon=True).start()\n"
    )
    b.dockyard("ssh", "--name", NAME, "--", "sh", "-c", "cat > /tmp/relay.py", stdin=relay)
    b.guest("(setsid python3 /tmp/relay.py > /tmp/relay.log 2>&1 &); "
            f"for i in $(seq 100); do ss -Htln | grep -q 127.0.0.1:{port} && break; sleep 0.05; done")
    b.docker(b.docker_host, "pull", image)
    return f"through a guest relay (the agent does not dial 10.0.2.2 yet: {first.stderr.strip().splitlines()[-1]})"


def measure_share(b: Bench, guest_disk: str, mib: int = 200, files: int = 10_000) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    host_tree = b.share / "tree"
    host_tree.mkdir()
    for i in range(files):
        (host_tree / f"f{i:05d}").write_bytes(b"x")
    b.guest(f"mkdir -p {guest_disk}/tree && cd {guest_disk}/tree && seq -f 'f%05g' 0 {files - 1} | xargs touch")
    for label, base in (("shared folder", str(b.share)), ("guest disk", guest_disk)):
        drop = "sync; echo 3 > /proc/sys/vm/drop_caches"
        write = b.guest_seconds(f"dd if=/dev/zero of={base}/big bs=1M count={mib} conv=fsync 2>&1")
        b.guest(drop)
        read = b.guest_seconds(f"dd if={base}/big of=/dev/null bs=1M 2>&1")
        b.guest(drop)
        find = b.guest_seconds(f"find {base}/tree | wc -l")
        results[label] = {"write_mb_s": mib * 1.048576 / write, "read_mb_s": mib * 1.048576 / read,
                          "find_s": find}
        b.guest(f"rm -f {base}/big")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backend", default="libvirt", choices=["libvirt", "qemu"])
    parser.add_argument("--sharefs", default="9p", choices=["9p", "virtiofs"])
    parser.add_argument("--restores", type=int, default=3)
    parser.add_argument("--boot-only", action="store_true",
                        help="measure only the cold boots (with each boot's timings), not runs or shares")
    parser.add_argument("--only", choices=["ssh", "snapshot", "footprint"], default=None,
                        help="measure only this figure (ssh: `machine ssh true` latency; snapshot: the "
                             "restore-start time and the saved state's size; footprint: QEMU's memory and idle CPU)")
    parser.add_argument("--clock-after", type=float, default=300.0, metavar="SECONDS",
                        help="read the guest clock offset this long after the last boot (shorter for quick runs)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    # libvirtd, when needed, is started by the dockyard CLI itself (as for users).
    return run(args)


def run(args: argparse.Namespace) -> int:
    from bench.machine_clock import clock_offset_after_boot
    from bench.machine_footprint import measure_footprint
    from bench.machine_footprint import report as footprint_report
    from bench.machine_ssh import measure_ssh, report_ssh
    from desktop.paths import home_id
    from tests.support.dockerd import Dockerd
    from tests.support.registry import start_registry
    from tests.support.test_images import push_test_images

    with tempfile.TemporaryDirectory(prefix="dy-bench-") as tmp:
        base = Path(tmp)
        share = base / "share"
        share.mkdir()
        b = Bench(base / "home", share)
        b.backend = args.backend
        registry = start_registry(base / "registry")
        dockerd = None
        try:
            cache = Path(os.environ.get("DOCKYARD_TEST_CACHE", Path.home() / ".cache" / "dockyard-tests"))
            busybox = push_test_images(registry, cache)["busybox"]
            b.dockyard("init", "--name", NAME, "--cpus", "2", "--memory", "2G", "--disk", "8G",
                       "--mount", str(share), "--backend", args.backend, "--sharefs", args.sharefs)
            b.dockyard("start", "--name", NAME)  # first start may build the image: not measured
            if args.only == "ssh":
                ssh = measure_ssh(b, NAME, args.runs, REPO)
                report_ssh(ssh, p50)
                return 0
            if args.only == "snapshot":
                return run_snapshot(b, busybox, args.restores, base)
            boots = measure_boot(b, args.boots, verbose=args.boot_only)
            status = b.dockyard("status", "--name", NAME, "--json").stdout
            if args.boot_only:
                print(f"cold boot to first `docker version`: p50 {p50(boots):.2f} s  (runs: "
                      f"{', '.join(f'{t:.2f}' for t in boots)}; target <= 5 s)")
                return 0
            # Right after the last cold boot, before anything else runs in the guest.
            footprint = measure_footprint(b, f"dockyard-{NAME}-{home_id(b.home.resolve())}", busybox)
            if args.only == "footprint":
                print(f"cold boot to first `docker version`: p50 {p50(boots):.2f} s (noisy while others run)")
                print("\n".join(footprint_report(footprint)))
                return 0
            pull_note = ensure_guest_can_pull(b, busybox)
            vm_runs = time_runs(b, b.docker_host, busybox, args.runs)
            (base / "dockerd").mkdir()
            dockerd = Dockerd(base / "dockerd")
            native_runs = time_runs(b, dockerd.host, busybox, args.runs)
            shares = measure_share(b, "/var/lib/dockyard/bench")
            ssh = measure_ssh(b, NAME, args.runs, REPO)
            clock = clock_offset_after_boot(b.home, NAME, b.docker_host, busybox, args.clock_after)
            b.dockyard("rm", "-f", "--name", NAME)
            restores = snapshot_figures(b, busybox, args.restores, base)
        finally:
            if dockerd is not None:
                dockerd.stop()
            b.dockyard("rm", "-f", "--name", NAME, check=False)
            registry.stop()

    import json

    from bench.machine_clock import report as clock_report

    timings = json.loads(status).get("guest_timings", {})
    print(f"backend {args.backend}, shared folders {args.sharefs}, accelerator {json.loads(status).get('accel')}")
    print(f"cold boot to first `docker version`: p50 {p50(boots):.2f} s  (runs: "
          f"{', '.join(f'{t:.2f}' for t in boots)}; target <= 5 s)")
    print(f"  guest timings of the last boot (s since kernel start): {timings}")
    print(f"docker run --rm busybox true ({args.runs} runs, image pulled {pull_note}):")
    print(f"  through the VM : p50 {p50(vm_runs) * 1000:.0f} ms")
    print(f"  native dockerd : p50 {p50(native_runs) * 1000:.0f} ms")
    print(f"  ratio VM/native: {p50(vm_runs) / p50(native_runs):.2f}x")
    s, g = shares["shared folder"], shares["guest disk"]
    print(f"shared folder ({args.sharefs}) vs guest disk, measured in the guest:")
    print(f"  sequential write : {s['write_mb_s']:.0f} vs {g['write_mb_s']:.0f} MB/s "
          f"(ratio {s['write_mb_s'] / g['write_mb_s']:.2f})")
    print(f"  sequential read  : {s['read_mb_s']:.0f} vs {g['read_mb_s']:.0f} MB/s "
          f"(ratio {s['read_mb_s'] / g['read_mb_s']:.2f})")
    print(f"  find 10,000 files: {s['find_s']:.2f} vs {g['find_s']:.2f} s (ratio {s['find_s'] / g['find_s']:.2f})")
    report_ssh(ssh, p50)
    print(clock_report(*clock))
    print("\n".join(footprint_report(footprint)))
    from bench.machine_snapshot import report

    report(restores)
    return 0


def snapshot_figures(b: Bench, image: str, restores: int, base: Path) -> dict:
    """A machine with a 9p shared folder (unmounted for the save, mounted again after), stopped and resumed."""
    from bench.machine_snapshot import measure_restore

    b.dockyard("init", "--name", NAME, "--cpus", "2", "--memory", "1536M", "--disk", "8G",
               "--mount", str(b.share), "--sharefs", "9p", "--backend", b.backend)
    b.dockyard("start", "--name", NAME)
    ensure_guest_can_pull(b, image)
    return measure_restore(b, NAME, restores, image)


def run_snapshot(b: Bench, image: str, restores: int, base: Path) -> int:
    from bench.machine_snapshot import report

    b.dockyard("rm", "-f", "--name", NAME)
    report(snapshot_figures(b, image, restores, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
