"""The per-machine host process that lives as long as the VM: SSH link, host socket, forwards.

Started detached by `MachineManager.start`; it sees the machine as a
`Machine` (instance.py). It reads the guest's ready line
from the inherited ready-channel socket (or, when re-attaching to a running
VM, reuses the pinned host key), connects the SSH link, serves the host Docker
socket, follows published ports, keeps the guest clock in step and serves
`machine ssh` on new channels of its link (control_socket.py). The guest's
host key must be the one pinned at the first boot (host_key_pin.py). The SSH
link is connected as soon as the guest announces sshd ("sshd-ready"), while
its agent still starts, so that "ready" finds it up (a connect costs ~0.5-1 s
under TCG); a guest without that event gets it after "ready". It reports
"OK", "ERROR <message>" or (the guest never said ready) "NOTREADY <message>"
as one line on stdout, then runs until:

* SIGTERM/SIGINT: stop the host-side services and exit (the VM keeps running);
* SIGUSR1: power the guest off over SSH first, then exit;
* SIGUSR2: flush the guest's page cache to its disks (`sync`), then exit: the
  machine is about to be saved, and should the saved state be thrown away
  later (settings changed, it does not load), the disk alone must hold
  everything written until then;
* the VM closes its ready channel (it stopped): exit.

With --restored the VM is being resumed from a saved state (instant_start):
the manager starts this process while QEMU loads the state and writes one
byte on --go-fd once the guest runs (EOF: the state did not load). An SSH
connection made earlier would wait in QEMU's user-net, whose SYN to a paused
guest can be lost and retried seconds later. No ready line comes; the pinned
key is used as when re-attaching. A "resumed" line on the ready channel has
the guest init step the clock, which stood still while the machine was saved,
and mount the 9p shares unmounted for the save, with no guest process to
start, while the SSH link connects; the host socket waits for both.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from desktop.machine import host_key_pin, ssh_keys
from desktop.machine.boot_stages import BootStage, stage_line
from desktop.machine.config import MachineState, save_state
from desktop.machine.guest_power import request_poweroff
from desktop.machine.instance import Machine
from desktop.machine.ready_channel import GuestNotReady, ReadyChannel, ResumeReport

log = logging.getLogger("dockyard.supervisor")
# The guest init answers a resume within milliseconds (seconds on a loaded TCG host); one that
# never does (an image older than "resumed") costs this long before the cold boot.
RESUME_ANSWER_S = 10.0


class Supervisor:
    """Owns the host-side services of one running machine."""

    def __init__(self, machine: Machine, restored: bool = False) -> None:
        self.machine = machine
        self.restored = restored
        self.config = machine.config()
        self.link: Any = None
        self.services: list[Any] = []
        self.ready_channel: Any = None
        # The link being connected in the background after "sshd-ready", and its thread.
        self._early_link: Any = None
        self._early_thread: threading.Thread | None = None
        # A resume announced on the ready channel: its thread and the guest init's answer.
        self._resume: tuple[threading.Thread, list[ResumeReport]] | None = None

    def _udp_forward(self, proto: str, host_port: int, guest_port: int, add: bool) -> None:
        backend = self.machine.backend(self.config)
        if add:
            backend.add_hostfwd(proto, host_port, guest_port)
        else:
            backend.remove_hostfwd(proto, host_port)

    def boot(self, ready_fd: int | None, timeout: float, go_fd: int | None = None) -> None:
        # paramiko & co. take ~0.1 s to import: do it while the guest boots, not
        # once it is ready.
        import desktop.host_socket  # noqa: F401 - imported for the time it takes, see above
        import desktop.ssh_link  # noqa: F401 - imported for the time it takes, see above

        if go_fd is not None:
            with os.fdopen(go_fd, "rb") as go:
                if not go.read(1):
                    raise RuntimeError("the saved state did not load")
            log.info("the saved guest runs again: announcing the resume, connecting")
        state = self.machine.state()

        if ready_fd is not None:
            self.ready_channel = ReadyChannel.from_fd(ready_fd)
            ready = self.ready_channel.wait_ready(
                timeout, self.machine.console_log,
                on_sshd_ready=lambda early: self._connect_early(state.ssh_port, early, timeout)
                if self._is_pinned_key(early) else None)
            # Refused (one line naming both fingerprints) unless it is the pinned key, or the first.
            if host_key_pin.check_or_pin(self.machine.paths.host_key_pin, self.machine.name, ready.host_key_line()):
                log.info("pinned the guest's host key %s", host_key_pin.fingerprint(ready.host_key_line()))
            state.host_key = ready.host_key_line()
            state.guest_timings = ready.timings
            state.ready_s = time.time() - state.booted_at if state.booted_at else 0.0
            log.info("guest ready after %.1f s: %s", state.ready_s, ready.timings)
        else:
            backend = self.machine.backend(self.config)
            state.ssh_port = state.ssh_port or backend.ssh_port
            if not state.host_key:
                raise RuntimeError("no pinned host key for the running machine: stop and start it again")
            host_key_pin.check(self.machine.paths.host_key_pin, self.machine.name, state.host_key)
            try:
                self.ready_channel = ReadyChannel.connect(backend.ready_channel_path)
            except Exception as err:  # noqa: BLE001 - events are optional when re-attaching
                if self.restored:  # but a resume is announced on it (the manager then boots cold)
                    raise
                log.info("ready channel not available for events: %s", err)
            else:
                if self.restored:
                    self._announce_resume(min(timeout, RESUME_ANSWER_S))
        state.supervisor_pid = os.getpid()
        state.host_socket = str(self.machine.host_socket)
        save_state(self.machine.state_path, state)
        ssh_keys.write_known_hosts(self.machine.known_hosts, state.ssh_port, state.host_key)
        self._connect(state, timeout)

    def _is_pinned_key(self, event: Any) -> bool:
        """Whether an "sshd-ready" event announces the pinned key (or none is pinned yet);
        if not, no early connect: "ready" then refuses the boot with both fingerprints."""
        try:
            announced = event.host_key_line()
        except Exception:  # noqa: BLE001 - no usable key: "ready" reports it
            return False
        pinned = host_key_pin.read_pin(self.machine.paths.host_key_pin)
        return not pinned or host_key_pin.same_key(pinned, announced)

    def _new_link(self, port: int, host_key: str) -> Any:
        from desktop.ssh_link import SshLink

        # No TCP_NODELAY pty session yet: it is a process start in the guest,
        # which would compete with the agent's start-up (see _connect).
        return SshLink("127.0.0.1", port, "root", self.machine.key_path, host_key, server_nodelay=False)

    def _connect_early(self, port: int, event: Any, timeout: float) -> None:
        """On "sshd-ready": connect the SSH link in a thread while the guest agent starts."""
        if self._early_thread is not None:
            return
        try:
            link = self._new_link(port, event.host_key_line())
        except Exception as err:  # noqa: BLE001 - "ready" decides; this is only a head start
            log.info("not connecting early: %s", err)
            return

        def run() -> None:
            t0 = time.monotonic()
            try:
                link.connect(timeout=min(timeout, 30))
            except Exception as err:  # noqa: BLE001 - _connect tries again after "ready"
                log.info("early SSH connect failed (%s): connecting after ready instead", err)
                link.close()
                return
            log.info("SSH link up %.2f s after sshd-ready", time.monotonic() - t0)

        self._early_link = link
        self._early_thread = threading.Thread(target=run, name="ssh-early-connect", daemon=True)
        self._early_thread.start()

    def _take_early_link(self, host_key: str, timeout: float) -> Any:
        """The early link if it connected with the key "ready" pinned, else None (closed)."""
        link, thread = self._early_link, self._early_thread
        self._early_link = self._early_thread = None
        if link is None or thread is None:
            return None
        thread.join(min(timeout, 30))
        if not thread.is_alive() and link.is_connected and \
                host_key_pin.same_key(f"{link.host_key_type} {link.host_key_b64}", host_key):
            return link
        if thread.is_alive():
            # close() would wait for the hanging connect to give up: not on the start path.
            log.warning("the early SSH connect is still hanging: connecting again")
            threading.Thread(target=link.close, name="ssh-early-close", daemon=True).start()
        else:
            link.close()
        return None

    def _connect(self, state: MachineState, timeout: float) -> None:
        from desktop.host_socket import HostSocket

        self.link = self._take_early_link(state.host_key, timeout)
        if self.link is None:
            self.link = self._new_link(state.ssh_port, state.host_key)
            self.link.connect(timeout=min(timeout, 30))
        _report_stage(BootStage.SSH_UP, self.machine.paths.boot_stage)
        # After a resume, the guest init stepped the clock and mounted the shares meanwhile.
        clock_stepped = self._resumed()
        # Now the agent runs: make sshd drop Nagle on this connection (and on
        # every reconnect), off the start path.
        self.link.server_nodelay = True
        threading.Thread(target=self.link.request_server_nodelay, name="ssh-nodelay", daemon=True).start()
        from desktop.mounts_policy import MountsPolicy

        # Only shared folders are the host's in the guest: other bind sources are refused.
        policy = MountsPolicy(s.guest_path for s in self.config.shares) if self.config.sharefs != "none" \
            else MountsPolicy(())
        host_socket = HostSocket(self.machine.host_socket, self.link, mounts_policy=policy)
        host_socket.start()
        self.services.append(host_socket)
        # "OK" means a client of the host socket reaches the engine: asked once, the way
        # clients ask, through the socket, the link and the agent (the manager trusts it).
        from desktop.http_over_channel import ping

        reason = ping(self.machine.host_socket, timeout=30)
        if reason is not None:
            raise RuntimeError(f"the guest engine does not answer through {self.machine.host_socket}: {reason}")
        self._start_optional("desktop.port_forward", "PortForwarder", self.link, udp_forward=self._udp_forward)
        # After a resume the guest init stepped the clock already (else: over SSH, as on a re-attach).
        self._start_optional("desktop.clock_sync", "ClockSync", self.link, sync_on_start=not clock_stepped)
        # Why the VM ends, where the backend learns it only by watching (QMP events).
        threading.Thread(target=self.machine.backend(self.config).watch_exit, name="vm-exit-watch",
                         daemon=True).start()
        # `machine ssh` as a channel on this link instead of a connection of its own.
        self._start_optional("desktop.machine.control_socket", "ControlSocket", self.machine.paths.control_socket,
                             self.link)
        if self.config.sharefs == "sftp":
            from desktop.sftp_share import SftpShare

            for share in self.config.shares:
                svc = SftpShare(self.link, Path(share.host_path), share.guest_path)
                svc.start()
                self.services.append(svc)
        self._start_hot_reload()

    def _start_hot_reload(self) -> None:
        """Forward host changes in the shared folders to file watchers in the guest (issue 12)."""
        if self.config.sharefs == "none" or not self.config.shares:
            return
        from desktop import settings

        try:
            off = {os.path.realpath(p) for p in settings.load().hot_reload_off}
        except settings.SettingsError as err:
            log.warning("hot reload: %s; forwarding every share", err)
            off = set()
        shares = [(s.host_path, s.guest_path) for s in self.config.shares]
        self._start_optional("desktop.hot_reload", "HotReloadForwarder", self.link, shares, off,
                             self.machine.run_dir / "hot_reload.json")

    def _announce_resume(self, timeout: float) -> None:
        """In a thread: the "resumed" line on the ready channel, and its answer (see the docstring)."""
        outcome: list[ResumeReport] = []
        channel = self.ready_channel
        thread = threading.Thread(target=lambda: outcome.append(channel.announce_resume(timeout)),
                                  name="announce-resume", daemon=True)
        thread.start()
        self._resume = (thread, outcome)

    def _resumed(self) -> bool:
        """Wait for the guest init's answer to a resume; whether it stepped the clock (False
        when there was no resume). Shares it could not mount fail the start: the manager
        then boots cold rather than run a machine whose shared folders are empty."""
        if self._resume is None:
            return False
        thread, outcome = self._resume
        thread.join(RESUME_ANSWER_S + 5)
        report = outcome[0] if outcome else ResumeReport(False, ["the guest init did not answer the resume"])
        if report.errors:
            raise RuntimeError(f"after the resume: {'; '.join(report.errors)[:300]}")
        return report.clock_stepped

    def _start_optional(self, module: str, cls: str, *args: Any, **kwargs: Any) -> None:
        import importlib

        try:
            factory = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            log.warning("%s.%s unavailable (%s): continuing without it", module, cls, err)
            return
        svc = factory(*args, **kwargs)
        svc.start()
        self.services.append(svc)

    def follow_events(self, on_closed: Any) -> None:
        """In a thread: log guest events; when the VM closes the channel, call `on_closed`."""
        if self.ready_channel is None:
            return

        def run() -> None:
            self.ready_channel.follow(self._on_guest_event)
            log.info("the VM closed its ready channel: it has stopped")
            on_closed()

        threading.Thread(target=run, name="guest-events", daemon=True).start()

    @staticmethod
    def _on_guest_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "shutdown":
            log.info("the guest is shutting down")
        elif isinstance(kind, str) and kind.endswith("-exited"):
            log.warning("guest service %s exited (code %s, restart %s): %s", kind[: -len("-exited")],
                        event.get("code"), event.get("restarts"), str(event.get("log_tail") or "")[-500:])
        else:
            log.info("guest event: %s", event)

    def poweroff(self) -> None:
        if self.link is None:
            return
        try:
            request_poweroff(self.link)
        except Exception as err:  # noqa: BLE001 - the manager forces the VM off next
            log.warning("guest power-off over SSH failed: %s", err)

    def sync_guest(self) -> None:
        """Before a save: stop the services (hot reload watches the shares), flush the guest's
        caches and unmount its 9p shares, which QEMU will not save (desktop.machine.share_remount)."""
        if self.link is None:
            return
        from desktop.machine.share_remount import unmount_script

        self._stop_services()
        paths = [s.guest_path for s in self.config.shares] if self.config.sharefs == "9p" else []
        try:
            code, _out, err = self.link.run(unmount_script(paths), timeout=60)
            if code != 0:
                log.warning("sync and unmount in the guest exited %d: %s", code, err[:200])
        except Exception as err:  # noqa: BLE001 - the save goes on; only a later cold boot could lose data
            log.warning("sync in the guest failed: %s", err)

    def _stop_services(self) -> None:
        for svc in reversed(self.services):
            try:
                svc.stop()
            except Exception as err:  # noqa: BLE001 - keep stopping the others
                log.warning("stopping %s failed: %s", type(svc).__name__, err)
        self.services.clear()

    def shutdown(self) -> None:
        self._stop_services()
        if self._early_link is not None and not (self._early_thread and self._early_thread.is_alive()):
            self._early_link.close()  # one still connecting dies with this process
        if self.link is not None:
            self.link.close()
        if self.ready_channel is not None:
            self.ready_channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dockyard-supervisor")
    parser.add_argument("--name", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--restored", action="store_true", help="the VM was resumed from a saved state")
    parser.add_argument("--go-fd", type=int, help="wait for one byte on this fd before dialling the guest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s supervisor[{os.getpid()}] %(levelname)s %(name)s: %(message)s")
    # Block the control signals in every thread; the main thread takes them with sigwait.
    control = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, control)

    machine = Machine(args.name)
    machine.supervisor_pidfile.write_text(f"{os.getpid()}\n")
    supervisor = Supervisor(machine, restored=args.restored)
    try:
        supervisor.boot(args.ready_fd, args.timeout, args.go_fd)
    except Exception as err:  # noqa: BLE001 - reported to the CLI as one line
        log.exception("start failed")
        supervisor.shutdown()
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        _report(f"{'NOTREADY' if isinstance(err, GuestNotReady) else 'ERROR'} {message}")
        machine.supervisor_pidfile.unlink(missing_ok=True)
        return 1
    supervisor.follow_events(lambda: os.kill(os.getpid(), signal.SIGTERM))
    _report("OK")
    while True:
        sig = signal.sigwait(control)
        if sig == signal.SIGHUP:
            continue  # the terminal that started us went away: irrelevant
        break
    log.info("signal %s: shutting down", signal.Signals(sig).name)
    if sig == signal.SIGUSR1:
        supervisor.poweroff()
    elif sig == signal.SIGUSR2:
        supervisor.sync_guest()
    supervisor.shutdown()
    try:
        if int(machine.supervisor_pidfile.read_text().strip() or 0) == os.getpid():
            machine.supervisor_pidfile.unlink()
    except (FileNotFoundError, ValueError):
        pass
    return 0


def _report_stage(stage: BootStage, stage_file: Path | None = None) -> None:
    """Tell the waiting manager how far the boot is (it reads lines until OK or ERROR)."""
    if stage_file is not None:
        from desktop.machine.status_report import write_stage

        write_stage(stage_file, stage)
    try:
        os.write(1, (stage_line(stage) + "\n").encode())
    except OSError:
        pass


def _report(line: str) -> None:
    """Tell the waiting CLI, then detach stdout so its pipe closes."""
    try:
        os.write(1, (line + "\n").encode())
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
