"""Runs the machine as a direct qemu-system-x86_64 process, for hosts without libvirt.

QEMU daemonises itself (`-daemonize`, `-pidfile`) and exposes a QMP socket for
stop, power-off, user-net port forwards and saving the machine: `save_state`
migrates the paused guest into a file (`exec:` to zstd; QEMU 7.2 has no
`file:` URI) and `begin_restore` starts QEMU with `-incoming defer` and loads
it back. With virtiofs, one
/usr/lib/qemu/virtiofsd per share is started first; each exits by itself when
QEMU disconnects. `define` stores the argv as JSON so that any later process
(`dockyard machine start` after a `stop`) boots the same VM.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from desktop.machine.backend import NETDEV_ID, READY_CHANNEL_NAME, Backend, LaunchSpec, SaveRefused, VmState
from desktop.machine.processes import pid_alive, wait_until
from desktop.machine.qmp import QmpClient
from runtime.atomic_file import read_json, write_json_atomic
from runtime.errors import Conflict, NotFound, RuntimeFailure

log = logging.getLogger(__name__)

# What QMP's SHUTDOWN event says about why QEMU ended (the "reason" field), for `machine status`.
SHUTDOWN_REASONS = {
    "host-signal": "QEMU was terminated by a signal on the host (SIGTERM, SIGINT or SIGHUP)",
    "host-qmp-quit": "QEMU was told to quit over QMP",
    "host-ui": "QEMU was closed from its user interface",
    "guest-shutdown": "the guest powered itself off",
    "guest-reset": "the guest reset (QEMU runs with -no-reboot)",
    "guest-panic": "the guest kernel panicked",
}
NO_EVENT = ("QEMU ended without a shutdown event: killed with SIGKILL (or out of memory), or it crashed; "
            "its exit status is unknown (it runs daemonised, as no process's child)")
ACCEL_ARG = {"kvm": "kvm", "hvf": "hvf", "whpx": "whpx", "tcg": "tcg"}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
QEMU_STREAM_MAGIC = b"QEVM"
# Migration to a local file needs no throttle (QEMU's default caps it at 128 MiB/s).
UNTHROTTLED = 1 << 40
# The second QMP socket, next to the first: the supervisor's watch_exit reads its events.
EVENTS_SOCKET_NAME = "qmp-events.sock"


def qemu_binary() -> str:
    found = shutil.which("qemu-system-x86_64")
    if not found:
        raise RuntimeFailure("qemu-system-x86_64 not found: install QEMU (Debian: apt-get install qemu-system-x86)")
    return found


def accel_arg(spec: LaunchSpec) -> str:
    """The -accel option: TCG's with its translation cache bounded (backend.TCG_TB_CACHE_MIB)."""
    name = ACCEL_ARG.get(spec.accel, "tcg")
    tb_cache = spec.tcg_tb_cache_mib
    return f"{name},tb-size={tb_cache}" if tb_cache is not None else name


def qemu_argv(spec: LaunchSpec, qemu: str, qmp_socket: Path, pidfile: Path, daemonize: bool = True) -> list[str]:
    """The QEMU command line for `spec` (virtiofsd sockets at run_dir/virtiofs-<tag>.sock)."""
    machine = "q35"
    argv = [
        qemu,
        "-name", spec.domain_name,
        "-accel", accel_arg(spec),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
        # As with libvirt's on_reboot=destroy: a panicking guest ends the VM.
        "-no-reboot",
        "-cpu", "host" if spec.accel in ("kvm", "hvf") else "max",
        "-smp", str(spec.cpus),
        *(["-bios", str(spec.firmware)] if spec.firmware is not None else []),
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.cmdline,
        "-drive", f"file={_opt(spec.rootfs)},if=none,id=rootfs,format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=rootfs",
        "-drive", f"file={_opt(spec.data_disk)},if=none,id=data,format=qcow2,discard=unmap",
        "-device", "virtio-blk-pci,drive=data",
        "-netdev", f"user,id={NETDEV_ID},hostfwd={spec.hostfwd_ssh()}",
        # romfile= (empty): no iPXE option ROM for SeaBIOS to load and run at
        # every boot; we boot the kernel directly, never from the network.
        "-device", f"virtio-net-pci,netdev={NETDEV_ID},romfile=",
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng0",
        # Free page reporting: the guest hands pages it freed back to QEMU, which
        # drops them (madvise/fallocate), so QEMU's resident memory shrinks
        # after a big container exits. No stats polling interval: no timer.
        "-device", "virtio-balloon-pci,free-page-reporting=on",
        "-chardev", f"socket,id=ready,path={_opt(spec.ready_socket)},server=on,wait=off",
        "-device", "virtio-serial-pci",
        "-device", f"virtserialport,chardev=ready,name={READY_CHANNEL_NAME}",
        "-chardev", f"file,id=console,path={_opt(spec.console_log)}",
        "-serial", "chardev:console",
        "-qmp", f"unix:{_opt(qmp_socket)},server=on,wait=off",
        "-qmp", f"unix:{_opt(qmp_socket.with_name(EVENTS_SOCKET_NAME))},server=on,wait=off",
        "-pidfile", str(pidfile),
    ]
    if spec.sharefs == "virtiofs":
        # vhost-user needs guest RAM that virtiofsd can map.
        argv += ["-object", f"memory-backend-memfd,id=mem,size={spec.memory_mib}M,share=on",
                 "-machine", f"{machine},memory-backend=mem", "-m", f"{spec.memory_mib}M"]
        for i, share in enumerate(spec.shares):
            sock = virtiofs_socket(spec.run_dir, share.tag)
            argv += ["-chardev", f"socket,id=vfs{i},path={_opt(sock)}",
                     "-device", f"vhost-user-fs-pci,chardev=vfs{i},tag={share.tag}"]
    else:
        argv += ["-machine", machine, "-m", f"{spec.memory_mib}M"]
        if spec.sharefs == "9p":
            model = "passthrough" if (os.getuid() if hasattr(os, "getuid") else 1) == 0 else "none"
            for i, share in enumerate(spec.shares):
                argv += ["-fsdev", f"local,id=fs{i},path={_opt(share.host_path)},security_model={model}",
                         "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={share.tag}"]
    if daemonize:
        argv.append("-daemonize")
    return argv


def _opt(value: object) -> str:
    """A value inside a QEMU option list: commas are doubled, as QEMU's parser expects."""
    return str(value).replace(",", ",,")


def _fuse_opt(value: object) -> str:
    """A value inside a FUSE -o list (virtiofsd): commas and backslashes are backslash-escaped."""
    return str(value).replace("\\", "\\\\").replace(",", "\\,")


def virtiofs_socket(run_dir: Path, tag: str) -> Path:
    return run_dir / f"virtiofs-{tag}.sock"


def _wait_for(condition, deadline_s: float, what: str, interval: float = 0.02) -> None:
    if not wait_until(condition, deadline_s, interval):
        raise RuntimeFailure(f"timed out after {deadline_s:.0f} s waiting for {what}")


def _wait_migration(qmp: QmpClient, timeout: float) -> dict[str, Any]:
    """Poll `query-migrate` (either side) until it completes; RuntimeFailure with QEMU's reason otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise RuntimeFailure(f"migration {status}: {info.get('error-desc', 'no reason given')}")
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"migration still {status} after {timeout:.0f} s")
        time.sleep(0.01)  # QMP events would need a reader thread; 10 ms polls cost nothing here


class QemuBackend(Backend):
    """A machine as a daemonised QEMU process with a pidfile and QMP socket in run_dir."""

    name = "qemu"

    def __init__(self, domain_name: str, run_dir: Path, console_log: Path, saved_state: Path | None = None) -> None:
        super().__init__(domain_name, run_dir, console_log)
        self.saved_state = saved_state
        self._incoming: QmpClient | None = None

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "qemu.pid"

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / "qmp.sock"

    @property
    def launch_file(self) -> Path:
        return self.run_dir / "qemu-launch.json"

    @property
    def events_socket(self) -> Path:
        """A second QMP socket, for the supervisor's watch_exit (the first serves commands)."""
        return self.run_dir / EVENTS_SOCKET_NAME

    @property
    def exit_record(self) -> Path:
        return self.run_dir / "qemu-exit.json"

    def watch_exit(self) -> None:
        """Block until QEMU ends, recording its SHUTDOWN event's reason (or its absence) for exit_reason()."""
        try:
            qmp = QmpClient(self.events_socket, timeout=60)   # a loaded host may greet slowly
        except RuntimeFailure as err:
            log.info("not watching QEMU's exit: %s", err)
            return
        with qmp:
            for message in qmp.events():
                if message.get("event") == "SHUTDOWN":
                    # Written at once: QEMU exits right after, and so may this process.
                    write_json_atomic(self.exit_record, {"shutdown": message.get("data") or {}}, mode=0o600)
                    return

    def exit_reason(self) -> str | None:
        record = read_json(self.exit_record)
        if not record or not record.get("shutdown"):
            return NO_EVENT
        reason = str(record["shutdown"].get("reason", "unknown"))
        return f"{SHUTDOWN_REASONS.get(reason, 'QEMU shut down')} (QMP SHUTDOWN reason {reason})"

    def _pid(self) -> int:
        try:
            return int(self.pidfile.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def define(self, spec: LaunchSpec) -> None:
        if self.state() is VmState.RUNNING:
            raise Conflict(f"{self.domain_name} is running; stop it before redefining")
        daemonize = platform.system() != "Windows"
        argv = qemu_argv(spec, qemu_binary(), self.qmp_socket, self.pidfile, daemonize=daemonize)
        virtiofsd = []
        if spec.sharefs == "virtiofs":
            for share in spec.shares:
                virtiofsd.append([str(spec.virtiofsd), f"--socket-path={virtiofs_socket(self.run_dir, share.tag)}",
                                  "-o", f"source={_fuse_opt(share.host_path)}", "-o", "cache=auto"])
        write_json_atomic(self.launch_file, {"argv": argv, "virtiofsd": virtiofsd, "ssh_port": spec.ssh_port,
                                             "daemonize": daemonize}, mode=0o600)

    def _launch(self) -> dict:
        data = read_json(self.launch_file)
        if not data:
            raise NotFound(f"{self.domain_name} is not defined")
        return data

    def start(self, extra_args: tuple[str, ...] = ()) -> None:
        launch = self._launch()
        if self.state() is VmState.RUNNING:
            return
        for stale in (self.pidfile, self.qmp_socket, self.exit_record, self.events_socket):
            stale.unlink(missing_ok=True)
        with open(self.run_dir / "qemu.log", "ab") as log_file:
            for argv in launch["virtiofsd"]:
                sock = Path(argv[1].split("=", 1)[1])
                sock.unlink(missing_ok=True)
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                 start_new_session=True)
                _wait_for(sock.exists, 10, f"virtiofsd socket {sock}")
            if launch["daemonize"]:
                # With -daemonize the parent exits once the VM is set up (sockets bound).
                proc = subprocess.run([*launch["argv"], *extra_args], stdin=subprocess.DEVNULL, stdout=log_file,
                                      stderr=subprocess.PIPE, timeout=60)
                if proc.returncode != 0:
                    msg = proc.stderr.decode(errors="replace").strip().splitlines()
                    raise RuntimeFailure(f"QEMU failed to start: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
            else:
                flags = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                subprocess.Popen([*launch["argv"], *extra_args], stdin=subprocess.DEVNULL, stdout=log_file,
                                 stderr=log_file, creationflags=flags)
                _wait_for(self.pidfile.exists, 30, "the QEMU pidfile")

    def stop(self) -> None:
        try:
            with QmpClient(self.qmp_socket) as qmp:
                qmp.execute("system_powerdown")
        except RuntimeFailure:
            pass

    def force_stop(self) -> None:
        pid = self._pid()
        if not pid_alive(pid):
            return
        try:
            with QmpClient(self.qmp_socket, timeout=5) as qmp:
                qmp.execute("quit")
        except RuntimeFailure:
            os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not pid_alive(pid), 15, f"QEMU (pid {pid}) to exit")

    def state(self) -> VmState:
        if not self.launch_file.exists():
            return VmState.UNDEFINED
        pid = self._pid()
        if not pid_alive(pid):
            return VmState.STOPPED
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return VmState.RUNNING  # no procfs (macOS): trust the pidfile
        # The pid may have been reused by an unrelated process after a crash.
        return VmState.RUNNING if self.domain_name.encode() in cmdline else VmState.STOPPED

    def remove(self) -> None:
        if self.state() is VmState.RUNNING:
            raise Conflict(f"{self.domain_name} is running")
        for path in (self.launch_file, self.pidfile, self.qmp_socket):
            path.unlink(missing_ok=True)

    # -- saved state --------------------------------------------------------
    def save_state(self, timeout: float = 120.0) -> dict[str, Any]:
        """Pause the guest, stream it into `saved_state` (zstd when installed), then end QEMU.

        The guest is paused first, so every page is written once (no dirty-page
        rounds) and QEMU sends all-zero pages as a flag. `exec:` runs a shell
        command: POSIX hosts only.
        """
        if self.saved_state is None or platform.system() == "Windows":
            raise SaveRefused("saving a machine needs QEMU's exec: migration (not available on this host)")
        pid = self._pid()
        zstd = shutil.which("zstd")
        part = self.saved_state.with_name(self.saved_state.name + ".part")
        part.unlink(missing_ok=True)
        # -1: the fastest level already shrinks a guest's memory ~4x (measured: 156 MB stream -> 42 MB).
        sink = f"{shlex.quote(zstd)} -q -1 -T0 -f -o {shlex.quote(str(part))}" if zstd else \
            f"cat > {shlex.quote(str(part))}"
        with QmpClient(self.qmp_socket, timeout=30) as qmp:
            qmp.execute("migrate-set-parameters", {"max-bandwidth": UNTHROTTLED})
            qmp.execute("stop")
            try:
                qmp.execute("migrate", {"uri": f"exec:{sink}"})
                info = _wait_migration(qmp, timeout)
            except RuntimeFailure as err:
                part.unlink(missing_ok=True)
                qmp.execute("cont")
                raise SaveRefused(str(err).removeprefix("QEMU refused migrate: ")) from err
            qmp.execute("quit")
        _wait_for(lambda: not pid_alive(pid), 15, f"QEMU (pid {pid}) to exit after saving")
        os.replace(part, self.saved_state)
        ram = info.get("ram") or {}
        return {"stream_bytes": int(ram.get("transferred", 0)), "file_bytes": self.saved_state.stat().st_size,
                "compression": "zstd" if zstd else "none"}

    def has_saved_state(self) -> bool:
        return self.saved_state is not None and self.saved_state.is_file()

    def discard_saved_state(self) -> None:
        if self.saved_state is not None:
            self.saved_state.unlink(missing_ok=True)

    def begin_restore(self, spec: LaunchSpec) -> None:
        """Start QEMU waiting for a migration stream and feed it the saved file (finish_restore waits)."""
        if not self.has_saved_state() or self.saved_state is None:
            raise RuntimeFailure("there is no saved state to restore")
        with open(self.saved_state, "rb") as f:
            magic = f.read(4)
        if magic == ZSTD_MAGIC and shutil.which("zstd"):
            source = f"zstd -dcq {shlex.quote(str(self.saved_state))}"
        elif magic == QEMU_STREAM_MAGIC:
            source = f"cat {shlex.quote(str(self.saved_state))}"
        else:
            raise RuntimeFailure(f"{self.saved_state} is not a saved machine QEMU can read (magic {magic!r})")
        self.define(spec)
        self.start(extra_args=("-incoming", "defer"))
        self._incoming = QmpClient(self.qmp_socket, timeout=30)
        self._incoming.execute("migrate-incoming", {"uri": f"exec:{source}"})

    def finish_restore(self, timeout: float) -> None:
        qmp, self._incoming = self._incoming, None
        if qmp is None:
            raise RuntimeFailure("no restore in progress")
        try:
            with qmp:
                _wait_migration(qmp, timeout)
                # Saved paused (see save_state), so QEMU waits for a `cont`.
                qmp.execute("cont")
        except RuntimeFailure as err:
            self.force_stop()
            raise RuntimeFailure(f"the saved machine did not load: {err}") from err

    def monitor_command(self, command: str) -> str:
        with QmpClient(self.qmp_socket) as qmp:
            return qmp.execute("human-monitor-command", {"command-line": command})

    def wait_exit(self) -> None:
        """Block until QEMU exits (its QMP connection closes)."""
        try:
            qmp = QmpClient(self.qmp_socket)
        except RuntimeFailure:
            return
        with qmp:
            qmp.wait_closed()

    @property
    def ssh_port(self) -> int:
        data = read_json(self.launch_file) or {}
        return int(data.get("ssh_port", 0))
