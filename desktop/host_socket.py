"""The host's Docker socket: each connection piped to the guest agent over SSH.

Every client connection on the host unix socket gets its own
`direct-streamlocal` channel to the agent socket in the guest, and bytes are
piped both ways unchanged, so the hijacked streams of `docker attach/exec/run
-i` work: a client half-close (shutdown(SHUT_WR)) becomes a channel EOF and
the agent's EOF becomes a half-close towards the client.

Opening a channel costs a round trip to the guest's sshd and its connect to
the agent (~7 ms under TCG here, a `docker run` opens three), so a few
channels are kept open ahead of use, from the first client on: a new client
takes one at once and a background thread opens its replacement. The agent keeps an idle connection
open, and a channel the far end has closed meanwhile (agent restart, link
reconnect) is never handed out.

With a mounts policy (the machine's shared folders), each connection's
requests are followed (desktop.request_gate) so that a container create
binding a host path outside the shares is answered "Mounts denied" here,
as Docker Desktop does, instead of mounting the guest's own file.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko

from desktop.mounts_policy import MountsPolicy
from desktop.request_gate import Refusal, RequestGate, error_response
from desktop.ssh_link import LinkError, SshLink, close_channel
from desktop.unix_listener import close_listener, owner_only_listener
from runtime.errors import DockyardError

log = logging.getLogger(__name__)

CHUNK = 65536
WARM_CHANNELS = 3   # `docker run` opens three connections in quick succession


class HostSocketError(DockyardError):
    """The host socket could not be created (path in use, bad directory)."""


class ChannelPipe:
    """One client connection and its channel, with two pumping threads.

    Also used by the port forwarder for published TCP ports.
    """

    def __init__(self, client: socket.socket, chan: paramiko.Channel,
                 on_done: Callable[[ChannelPipe], None] = lambda pipe: None,
                 gate: RequestGate | None = None) -> None:
        self.client = client
        self.chan = chan
        self.gate = gate
        self._on_done = on_done
        self._lock = threading.Lock()
        self._open_directions = 2

    def start(self) -> None:
        threading.Thread(target=self._client_to_guest, name="hostsock-up", daemon=True).start()
        threading.Thread(target=self._guest_to_client, name="hostsock-down", daemon=True).start()

    def _client_to_guest(self) -> None:
        try:
            while data := self.client.recv(CHUNK):
                if self.gate is not None:
                    try:
                        data = self.gate.feed(data)
                    except Refusal as refusal:
                        self._refuse(refusal.message)
                        return
                    if not data:
                        continue
                self.chan.sendall(data)
            # Client half-closed: pass the EOF on, keep reading the answer.
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("client->guest ended: %s", exc)
            self.abort()
        finally:
            self._direction_done()

    def _guest_to_client(self) -> None:
        try:
            while data := self.chan.recv(CHUNK):
                self.client.sendall(data)
            self.client.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("guest->client ended: %s", exc)
            self.abort()
        finally:
            self._direction_done()

    def _refuse(self, message: str) -> None:
        """Answer a refused request in the engine's place and end the connection (nothing was forwarded)."""
        log.info("refused a request: %s", message.splitlines()[0] if message else "")
        try:
            self.client.sendall(error_response(400, "Bad Request", message))
            self.client.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log.debug("could not answer a refused request: %s", exc)
        close_channel(self.chan)

    def _direction_done(self) -> None:
        with self._lock:
            self._open_directions -= 1
            done = self._open_directions == 0
        if done:
            self.close()

    def abort(self) -> None:
        """Tear down both sides (one side failed, or the socket is stopping)."""
        try:
            self.client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        close_channel(self.chan)

    def close(self) -> None:
        close_channel(self.chan)
        self.client.close()
        self._on_done(self)


class HostSocket:
    """Listens on a host unix socket (0600 in a 0700 directory) and pipes to the guest."""

    def __init__(self, socket_path: Path, link: SshLink, remote_socket: str = "/run/dockyard/docker.sock",
                 warm_channels: int = WARM_CHANNELS, mounts_policy: MountsPolicy | None = None) -> None:
        self.socket_path = Path(socket_path)
        # With a policy, bind mounts of host paths outside the shared folders are refused.
        self.mounts_policy = mounts_policy
        self.link = link
        self.remote_socket = remote_socket
        self._warm_target = warm_channels
        self._warm: list[paramiko.Channel] = []
        self._warm_lock = threading.Lock()
        self._refilling = False
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._pipes: set[ChannelPipe] = set()
        self._pipes_lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def active_connections(self) -> int:
        with self._pipes_lock:
            return len(self._pipes)

    @property
    def warm_channels(self) -> int:
        """Channels opened ahead of use that are still usable."""
        with self._warm_lock:
            return sum(1 for chan in self._warm if self._usable(chan))

    def start(self) -> None:
        """Create the socket and begin accepting connections."""
        directory = self.socket_path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The socket grants full control of the engine: keep it owner-only.
        os.chmod(directory, 0o700)
        self._remove_stale_socket()
        try:
            self._listener = owner_only_listener(self.socket_path, 128)
        except OSError as exc:
            raise HostSocketError(f"cannot create the Docker socket {self.socket_path}: {exc}") from None
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="hostsock-accept", daemon=True)
        self._thread.start()
        log.info("Docker socket %s -> guest %s", self.socket_path, self.remote_socket)

    def _remove_stale_socket(self) -> None:
        try:
            st = self.socket_path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise HostSocketError(f"{self.socket_path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket_path))
        except OSError:
            self.socket_path.unlink()  # nobody listens: left over from a crash
            return
        finally:
            probe.close()
        raise HostSocketError(f"another process already serves {self.socket_path}")

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accept on %s failed", self.socket_path)
                continue
            # Opening the channel may reconnect (seconds): never block accept on it.
            threading.Thread(target=self._serve, args=(client,), name="hostsock-open", daemon=True).start()

    # -- channels opened ahead of use --------------------------------------
    @staticmethod
    def _usable(chan: paramiko.Channel) -> bool:
        transport = chan.get_transport()
        return (chan.active and not chan.closed and not chan.eof_received
                and transport is not None and transport.is_active())

    def _take_warm(self) -> paramiko.Channel | None:
        with self._warm_lock:
            while self._warm:
                chan = self._warm.pop(0)
                if self._usable(chan):
                    return chan
                close_channel(chan)
        return None

    def _refill_soon(self) -> None:
        with self._warm_lock:
            if self._refilling or self._warm_target <= 0 or self._stopping.is_set():
                return
            self._refilling = True
        threading.Thread(target=self._refill, name="hostsock-warm", daemon=True).start()

    def _refill(self) -> None:
        try:
            while not self._stopping.is_set():
                with self._warm_lock:
                    if len(self._warm) >= self._warm_target:
                        return
                try:
                    chan = self.link.open_streamlocal(self.remote_socket)
                except LinkError as exc:
                    log.debug("no warm channel to the guest engine for now: %s", exc)
                    return   # tried again at the next connection
                with self._warm_lock:
                    if self._stopping.is_set():
                        close_channel(chan)
                        return
                    self._warm.append(chan)
        finally:
            with self._warm_lock:
                self._refilling = False

    def _close_warm(self) -> None:
        with self._warm_lock:
            chans, self._warm = self._warm, []
        for chan in chans:
            close_channel(chan)

    def _serve(self, client: socket.socket) -> None:
        chan = self._take_warm()
        try:
            if chan is None:
                chan = self.link.open_streamlocal(self.remote_socket)
        except LinkError as exc:
            log.warning("cannot reach the guest engine: %s", exc)
            self._answer_unavailable(client, str(exc))
            return
        gate = RequestGate(self.mounts_policy.check_create_body) if self.mounts_policy is not None else None
        pipe = ChannelPipe(client, chan, self._pipe_done, gate)
        with self._pipes_lock:
            stopping = self._stopping.is_set()
            if not stopping:
                self._pipes.add(pipe)
        if stopping:
            # Outside the lock: close() reports back through _pipe_done,
            # which takes it too.
            pipe.abort()
            pipe.close()
            return
        pipe.start()
        # Replacements are opened once this client is served, not at start: right
        # after a boot the guest is busy enough (agent still loading the engine).
        self._refill_soon()

    @staticmethod
    def _answer_unavailable(client: socket.socket, reason: str) -> None:
        """Tell the Docker client why, instead of a bare connection reset."""
        try:
            client.settimeout(2)
            client.sendall(error_response(503, "Service Unavailable", f"Dockyard engine unavailable: {reason}"))
            client.shutdown(socket.SHUT_WR)
            # Drain the unread request: closing with unread data sends a
            # reset, which can destroy the answer before the client reads it.
            while client.recv(CHUNK):
                pass
        except OSError:
            pass
        finally:
            client.close()

    def _pipe_done(self, pipe: ChannelPipe) -> None:
        with self._pipes_lock:
            self._pipes.discard(pipe)

    def stop(self) -> None:
        """Stop accepting, cut every open connection, remove the socket file."""
        self._stopping.set()
        if self._listener is not None:
            close_listener(self._listener)
            self._listener = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._pipes_lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.abort()
        self._close_warm()
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
