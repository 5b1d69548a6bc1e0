"""Stage 2 of the guest init: prepare the machine, start sshd and the agent, supervise.

Order matters for boot time: only what sshd and the agent need (clock, data
disk, keys) runs before they are spawned; shares are mounted while they start.
Readiness is reported on the virtio-serial channel: `sshd-ready` as soon as
sshd listens (so the host connects while the agent starts), then `ready` once
the agent answers /_ping too.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from . import channel, datadisk, powerbutton, shares, spawn, sshkeys, syscalls, trim
from .bootopts import BootOptions, parse_cmdline
from .layout import AGENT_ARGV, AGENT_LOG, AGENT_SOCKET, ENGINE_ROOT, RUN_DIR, SSHD_ARGV, SSHD_LOG, agent_env
from .logsetup import log
from .services import Service, cap_log, now, tcp_listening, unix_listening

TYPE_CHECKING = False  # typing itself is not imported: every module costs boot time under TCG
if TYPE_CHECKING:
    from .clock_service import ClockService

NETWORK_MODULES = ["veth", "bridge", "br_netfilter", "nf_tables", "nft_chain_nat",
                   "nft_compat", "nf_nat", "nf_conntrack", "xt_MASQUERADE",
                   "xt_conntrack", "xt_addrtype", "xt_nat", "overlay"]
# virtio_balloon reports freed guest pages to QEMU (free page reporting), which
# then gives them back to the host. Nothing at boot needs it: it is loaded
# after `ready`, with the network modules, off the boot's critical path.
AFTER_READY_MODULES = [*NETWORK_MODULES, "virtio_balloon"]
# dockyard.time is when the host defined the VM, so the true time is later by
# the firmware, kernel loading and boot, which the guest's uptime does not all
# count (20 s on a busy host): it only moves a clock that is behind it forward.
# (It used to set a clock more than 5 s + uptime ahead back to it, 21.5 s into
# the past on a busy host.) An RTC over a day ahead is garbage and replaced too.
# The host steps the clock to its own once ready (desktop/clock_sync.py).
RTC_AHEAD_LIMIT_S = 86400
SHUTDOWN_GRACE_S = 10.0
# Readiness poll period: each round costs the guest CPU the agent needs to start.
POLL_S = float(os.environ.get("DOCKYARD_POLL_S", "0.02"))
# How often the service logs on /run (RAM) are checked against their size cap,
# and the data disk's free space for a trim (trim.py).
LOG_CHECK_S = 60.0
TRIM_LOG = f"{RUN_DIR}/fstrim.log"


def set_clock(opts: BootOptions) -> None:
    """Set the wall clock from dockyard.time when the RTC is behind it (or absurdly ahead)."""
    if opts.time is None:
        return
    current = time.time()
    if current < opts.time or current > opts.time + RTC_AHEAD_LIMIT_S:
        time.clock_settime(time.CLOCK_REALTIME, float(opts.time))
        log.info("clock set from dockyard.time (was %d, now %d)", current, opts.time)


class Init:
    """The running init: its services, the host channel and the readiness state."""

    def __init__(self) -> None:
        self.opts = BootOptions()
        self.sshd = Service("sshd", SSHD_ARGV, SSHD_LOG)
        self.agent = Service("agent", AGENT_ARGV, AGENT_LOG)
        self.channel = channel.Channel(None)
        self.timings: dict[str, float] = {}
        self.cpu_at_start = 0.0
        self.next_log_check = 0.0
        self.ready_message: dict | None = None
        self.host_keys: dict[str, str] = {}
        self.status: dict[str, object] = {}
        self.errors: list[str] = []
        self.helpers: set[int] = set()
        self.pending_signals: list[int] = []
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.power_button: int | None = None
        self.clock: ClockService | None = None  # opened when ready
        self.trim_schedule: trim.TrimSchedule | None = None
        self.trim_pid = 0

    # -- boot ---------------------------------------------------------------
    def boot(self) -> None:
        """Everything up to spawning sshd and the agent, then the slower extras."""
        self.timings["kernel_s"] = float(os.environ.get("DOCKYARD_STAGE1_START", "0"))
        self.timings["modules_s"] = float(os.environ.get("DOCKYARD_STAGE1_MODULES", "0"))
        self.timings["stage1_s"] = float(os.environ.get("DOCKYARD_STAGE1_END", "0"))
        self.timings["python_s"] = now()
        cpu = os.times()
        self.cpu_at_start = cpu.user + cpu.system
        self._install_signals()
        early = os.environ.get("DOCKYARD_EARLY_SPAWN")
        if early:
            self.timings["early_spawn_s"] = float(early)
        # early.sh started these already when the data disk was ready (not first boot).
        for service, variable in ((self.agent, "DOCKYARD_AGENT_PID"), (self.sshd, "DOCKYARD_SSHD_PID")):
            if os.environ.get(variable):
                service.adopt(int(os.environ[variable]), float(early or now()))
        # A child that died before the handler existed sent its SIGCHLD to nobody.
        self.reap()
        with open("/proc/cmdline") as f:
            self.opts = parse_cmdline(f.read())
        self.errors.extend(self.opts.errors)
        self._guarded("clock", lambda: set_clock(self.opts), None)
        self._guarded("hostname", lambda: _write("/proc/sys/kernel/hostname", "dockyard"), None)
        self.status["data_disk"] = self._guarded("data disk", datadisk.prepare, "failed")
        if self.status["data_disk"] in ("mounted", "formatted"):   # ext4, not the tmpfs fallback
            self.trim_schedule = trim.TrimSchedule()
        if self.opts.authorized_key:
            self._guarded("authorized key", lambda: sshkeys.write_authorized_key(self.opts.authorized_key), None)
        else:
            self.errors.append("no dockyard.key: nobody can log in over SSH")
        key = self._guarded("host key", sshkeys.ensure_host_key, None)
        if key:
            self.host_keys[key[0]] = key[1]
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        os.makedirs(ENGINE_ROOT, exist_ok=True)
        self.agent.env = agent_env(self.opts.hostloop)
        for service in (self.sshd, self.agent):
            if service.pid is None:
                service.start()
        self.timings["init_s"] = now()
        # sshd is often listening by now (early.sh started it): say so before mounting the
        # shares (~0.25 s under TCG), so the host's SSH handshake overlaps them and the agent.
        self.check_sshd()
        mounted, errors = self._guarded(
            "shares", lambda: shares.mount_shares(self.opts.sharefs, self.opts.shares), ([], []))
        self.status["shares"] = mounted
        self.errors.extend(errors)
        if self.channel.fd is None:   # check_sshd may have opened it already
            self.channel = channel.Channel(channel.find_port())
        self.power_button = powerbutton.open_power_button()

    def _guarded(self, what: str, func, fallback):
        # Any failure of one step is reported and the boot goes on: a guest with
        # sshd up can still be inspected and repaired from the host.
        try:
            return func()
        except Exception as err:
            log.exception("%s failed", what)
            self.errors.append(f"{what}: {err}")
            return fallback

    def _install_signals(self) -> None:
        def record(signum, _frame) -> None:
            self.pending_signals.append(signum)

        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGIO):
            signal.signal(signum, record)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)

    # -- readiness ------------------------------------------------------------
    def check_ready(self) -> None:
        """Record when sshd and the agent first answer; send `ready` once both did."""
        self.check_sshd()
        if "agent_s" not in self.timings and unix_listening(AGENT_SOCKET):
            from . import probes  # socket is costly to import; only needed from here on
            if probes.agent_answers(AGENT_SOCKET):
                self.timings["agent_s"] = now()
        if "sshd_s" in self.timings and "agent_s" in self.timings:
            if self.channel.fd is None:
                self.channel = channel.Channel(channel.find_port())
            self.timings["ready_s"] = now()
            # Before "ready": the host steps the clock through it as soon as it hears that.
            self.clock = self._guarded("clock service", _open_clock_service, None)
            cpu = os.times()
            # CPU the Python init took from the others before ready (pid 1's
            # counters also hold the kernel's boot work, hence the difference).
            self.timings["init_cpu_s"] = cpu.user + cpu.system - self.cpu_at_start
            self.ready_message = {
                "event": "ready", "host_keys": self.host_keys,
                "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "agent_socket": AGENT_SOCKET, "errors": self.errors, **self.status,
            }
            self.channel.send(self.ready_message)
            try:
                os.setpriority(os.PRIO_PROCESS, 0, 0)  # early.sh started the init niced
            except OSError:
                pass
            log.info("ready: %s", self.ready_message["timings"])
            self._spawn_helper(["modprobe", "-a", *AFTER_READY_MODULES], f"{RUN_DIR}/modprobe.log")

    def check_sshd(self) -> None:
        """Announce sshd the first time it is found listening."""
        if "sshd_s" not in self.timings and tcp_listening(22):
            self.timings["sshd_s"] = now()
            self.announce_sshd()

    def announce_sshd(self) -> None:
        """Tell the host that sshd listens (with the host key to pin), ahead of `ready`.

        The host opens its SSH connection meanwhile, while the agent is still
        starting, instead of after `ready`. Informative only: `ready` still
        follows with the same keys, and a host that ignores this event loses nothing.
        """
        if not self.host_keys:
            return  # nothing to pin: the host has to wait for `ready` (and its errors)
        if self.channel.fd is None:
            self.channel = channel.Channel(channel.find_port())
        self.channel.send({"event": "sshd-ready", "host_keys": self.host_keys,
                           "timings": {"sshd_s": round(self.timings["sshd_s"], 3)}})

    def resumed(self, seconds: str) -> None:
        """The host resumed this saved machine: step the clock, which stood still while it was
        saved, to the host's, and mount the shares the host unmounted for the save. No process
        to start, so both land while the host's SSH handshake runs, before any request."""
        report: dict = {"event": "resumed", "seconds": seconds}
        try:
            time.clock_settime(time.CLOCK_REALTIME, float(seconds))
        except (ValueError, OSError) as err:
            log.warning("resumed %r: clock: %s", seconds, err)
            report["clock_error"] = str(err)
        try:
            report["shares"], report["errors"] = shares.remount_shares(self.opts.sharefs, self.opts.shares)
        except Exception as err:  # the host refuses the resume with it, and boots cold
            log.exception("remounting the shares failed")
            report["shares"], report["errors"] = [], [f"shares: {err}"]
        self.channel.send(report)
        # The host's first request after a resume goes to the agent, whose code a TCG guest
        # must translate again (the translation cache is not saved): ask the agent now, on
        # the other vCPU while sshd does the host's SSH handshake, not after it.
        from . import probes
        probes.agent_answers(AGENT_SOCKET)

    def _spawn_helper(self, argv: list[str], log_path: str) -> int:
        """Start a short-lived helper; its pid, 0 when it could not start."""
        try:
            pid = spawn.spawn(argv, log_path)
        except OSError as err:
            log.warning("%s: %s", argv[0], err)
            return 0
        self.helpers.add(pid)
        return pid

    # -- supervision ----------------------------------------------------------
    def reap(self) -> None:
        """Collect every exited child: ours are restarted, orphans just vanish."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.helpers.discard(pid)
            for service in (self.agent, self.sshd):
                if pid == service.pid:
                    tail = service.log_tail()
                    code = service.exited(status)
                    self.channel.send({"event": f"{service.name}-exited", "code": code,
                                       "restarts": service.restarts, "log_tail": tail})

    def loop(self) -> None:
        """Wait for signals, children, host requests and restart times; forever."""
        while True:
            waiting = self.ready_message is None
            deadline = min((s.restart_at for s in (self.agent, self.sshd) if s.restart_at is not None),
                           default=None)
            timeout = POLL_S if waiting else LOG_CHECK_S
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - now()))
            channel_readers, writers, channel_timeout = self.channel.wait_sets()
            if channel_timeout is not None:
                timeout = min(timeout, channel_timeout)
            readers = [self.wakeup_r] + channel_readers
            if self.clock is not None:
                readers += self.clock.readers()
                slew_left = self.clock.timeout()
                if slew_left is not None:
                    timeout = min(timeout, slew_left)
            if self.power_button is not None:
                readers.append(self.power_button)
            try:
                readable, _, _ = select.select(readers, writers, [], timeout)
            except InterruptedError:
                readable = []
            if self.wakeup_r in readable:
                try:
                    while os.read(self.wakeup_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if self.power_button is not None and self.power_button in readable:
                try:
                    if powerbutton.pressed(os.read(self.power_button, 64 * powerbutton.EVENT_SIZE)):
                        self.shutdown(syscalls.RB_POWER_OFF)
                except BlockingIOError:
                    pass
            while self.pending_signals:
                signum = self.pending_signals.pop(0)
                if signum == signal.SIGCHLD:
                    self.reap()
                elif signum in (signal.SIGTERM, signal.SIGUSR2):
                    self.shutdown(syscalls.RB_POWER_OFF)
                elif signum == signal.SIGINT:
                    self.shutdown(syscalls.RB_AUTOBOOT)
                elif signum == signal.SIGIO:
                    self.channel.host_changed()
            for service in (self.agent, self.sshd):
                if service.pid is None and service.restart_at is not None and now() >= service.restart_at:
                    service.start()
            if channel_readers and self.channel.fd in readable:
                for line in self.channel.read_lines():
                    if line == "status" and self.ready_message is not None:
                        self.channel.send(self.ready_message)
                    elif line.startswith("resumed "):
                        self.resumed(line[len("resumed "):])
            self.channel.flush()
            if self.clock is not None:
                self.clock.handle(readable)
            if waiting:
                self.check_ready()
            elif now() >= self.next_log_check:
                self.next_log_check = now() + LOG_CHECK_S
                for path in (self.agent.log_path, self.sshd.log_path, TRIM_LOG):
                    cap_log(path)
                self.maybe_trim()

    def maybe_trim(self) -> None:
        """Start an fstrim of the data disk when enough space was freed (trim.py); one at a time."""
        if self.trim_schedule is None or self.trim_pid in self.helpers:
            return
        if self.trim_schedule.due():
            self.trim_pid = self._spawn_helper(self.trim_schedule.argv(), TRIM_LOG)

    # -- shutdown -------------------------------------------------------------
    def shutdown(self, command: int) -> None:
        """Stop every process, unmount the data disk cleanly and power off (or reboot)."""
        log.info("shutting down (%s)", "poweroff" if command == syscalls.RB_POWER_OFF else "reboot")
        self.channel.send({"event": "shutdown"})
        self.channel.flush()
        for signum, grace in ((signal.SIGTERM, SHUTDOWN_GRACE_S), (signal.SIGKILL, 2.0)):
            try:
                os.kill(-1, signum)
            except ProcessLookupError:
                break
            if self._wait_all_children(now() + grace):
                break
        os.sync()
        self._unmount_under(("/var/lib/dockyard",) + tuple(s.path for s in self.opts.shares))
        os.sync()
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
        syscalls.reboot(command)

    def _wait_all_children(self, deadline: float) -> bool:
        while now() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                # Polling with a deadline: SIGCHLD wakeups could also be used, but
                # the handler path is being torn down here.
                time.sleep(0.02)
        return False

    def _unmount_under(self, prefixes: tuple[str, ...]) -> None:
        with open("/proc/self/mounts") as f:
            targets = [line.split()[1] for line in f]
        for target in reversed(targets):
            if any(target == p or target.startswith(p + "/") for p in prefixes):
                try:
                    syscalls.umount(target)
                except OSError as err:
                    log.warning("%s; remounting read-only", err)
                    try:
                        syscalls.mount("none", target, "none", syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
                    except OSError as err2:
                        log.error("%s", err2)


def _open_clock_service() -> ClockService:
    from .clock_service import ClockService  # socket and json are loaded by now (probes, channel)

    service = ClockService()
    service.open()
    return service


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def main() -> None:
    """Entry point run as pid 1 by early.sh."""
    os.makedirs(RUN_DIR, exist_ok=True)
    init = Init()
    try:
        init.boot()
    except Exception:  # pid 1 must never exit: that panics the kernel
        log.exception("boot failed; continuing with what runs")
    while True:
        try:
            init.loop()
        except Exception:
            log.exception("init loop failed; resuming")
