"""The one persistent SSH connection from the host to the Dockyard guest.

Everything host-side that talks to the guest rides on this link: the Docker
API socket (a `direct-streamlocal@openssh.com` channel per host connection),
published TCP ports (`direct-tcpip`), the rare guest command (`exec`) and the
reverse SFTP share. A process start in the TCG guest costs ~180 ms while a
channel costs ~2 ms, so requests open channels on one long-lived transport
and never spawn a process each.

Security: key-only auth (ed25519) and the guest host key is pinned; a
different key is refused with `HostKeyMismatch`, never accepted.

Resilience: the transport sends keepalives; when it has died (guest
restarted, connection killed, host resumed from suspend), the next channel
open reconnects once, transparently, and reconnect listeners are told.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message
from paramiko.ssh_exception import ChannelException, SSHException

from desktop.http_over_channel import HttpExchange, iter_lines
from runtime.errors import DockyardError

log = logging.getLogger(__name__)

# Large windows so an image pull or a `docker cp` does not stall waiting for
# window adjusts on every 2 MiB (paramiko's default); the guest is local.
WINDOW_SIZE = 16 * 1024 * 1024
# Bigger data packets from the guest mean fewer trips through paramiko's
# Python packet loop: 32 KiB gave ~45 MB/s down, 128 KiB ~90-160 MB/s here.
# OpenSSH caps whole packets at 256 KiB, so stay well below.
MAX_PACKET_SIZE = 128 * 1024
KEEPALIVE_S = 5
STREAMLOCAL_KIND = "direct-streamlocal@openssh.com"


class LinkError(DockyardError):
    """The SSH link to the guest failed (connect, auth, channel)."""


class HostKeyMismatch(LinkError):
    """The guest presented a host key other than the pinned one."""


class ChannelOpenRefused(LinkError):
    """The guest's sshd refused to open a channel (nothing listens there)."""


ReconnectListener = Callable[[], None]

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges every receive at once.

    sshd sets TCP_NODELAY only for pty sessions, so on our forwarding
    channels its Nagle algorithm holds a small packet (a response body after
    its headers, an EOF after data) until the previous one is acknowledged,
    and Linux delays that ACK by 40 ms. Quick ACKs after each read release
    the held packet after one round trip instead. The kernel clears the
    flag by itself, hence setting it on every recv.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if _TCP_QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass
        return data


def close_channel(chan: paramiko.Channel) -> None:
    """Close a channel whose transport may already be gone (reconnect, stop): paramiko then
    raises from close(), which must not mask a finally block's exception or kill a thread."""
    try:
        chan.close()
    except (OSError, EOFError, SSHException) as exc:
        log.debug("closing a channel of a dead transport: %s", exc)


def parse_host_key(line: str) -> tuple[str, str]:
    """Split a pinned "ssh-ed25519 AAAA... [comment]" line into (type, base64)."""
    parts = line.split()
    if len(parts) < 2:
        raise LinkError(f"pinned host key {line!r} is not of the form 'TYPE BASE64'")
    try:
        base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise LinkError(f"pinned host key {line!r} has invalid base64") from None
    return parts[0], parts[1]


def _load_private_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.Ed25519Key.from_private_key_file(str(path))
    except FileNotFoundError:
        raise LinkError(f"SSH key {path} does not exist") from None
    except (SSHException, ValueError) as exc:
        raise LinkError(f"SSH key {path} is not a usable ed25519 private key: {exc}") from None


class SshLink:
    """A pinned, key-authenticated, self-healing SSH transport to the guest."""

    def __init__(self, host: str, port: int, username: str, key_path: Path, host_key: str,
                 keepalive_s: int = KEEPALIVE_S, channel_timeout: float = 10.0,
                 probe_timeout: float = 5.0, server_nodelay: bool = True) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.key_path = Path(key_path)
        self.host_key_type, self.host_key_b64 = parse_host_key(host_key)
        self.keepalive_s = keepalive_s
        self.channel_timeout = channel_timeout
        self.probe_timeout = probe_timeout
        self.server_nodelay = server_nodelay
        self._probe_lock = threading.Lock()
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._listeners: list[ReconnectListener] = []
        self._connect_timeout = 10.0
        self.connect_count = 0

    # -- connection ----------------------------------------------------

    @property
    def is_connected(self) -> bool:
        t = self._transport
        return t is not None and t.is_active() and t.is_authenticated()

    def add_reconnect_listener(self, listener: ReconnectListener) -> None:
        """Call `listener()` after every reconnect (not the first connect), e.g. clock sync."""
        self._listeners.append(listener)

    def remove_reconnect_listener(self, listener: ReconnectListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def connect(self, timeout: float = 10) -> None:
        """Open the transport, check the pinned host key, authenticate by key."""
        self._closed = False
        self._connect_timeout = timeout
        with self._lock:
            if not self.is_connected:
                self._connect_locked(timeout)

    def close(self) -> None:
        """Close the transport; later calls raise instead of reconnecting."""
        self._closed = True
        with self._lock:
            t, self._transport = self._transport, None
        if t is not None:
            t.close()

    def transport(self) -> paramiko.Transport:
        """The live transport, reconnecting first if it has died."""
        t = self._transport
        if t is not None and t.is_active():
            return t
        return self._reconnect(t)

    def _reconnect(self, dead: paramiko.Transport | None) -> paramiko.Transport:
        if self._closed:
            raise LinkError("the SSH link to the guest is closed")
        first = False
        with self._lock:
            # Another thread may have reconnected while we waited for the lock.
            if self._transport is not dead and self._transport is not None and self._transport.is_active():
                return self._transport
            if dead is not None:
                log.info("SSH link to %s:%d lost; reconnecting", self.host, self.port)
                dead.close()
            first = self.connect_count == 0
            t = self._connect_locked(self._connect_timeout)
        if not first:
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:  # a listener must not break the request that reconnected
                    log.exception("reconnect listener %r failed", listener)
        return t

    def _connect_locked(self, timeout: float) -> paramiko.Transport:
        key = _load_private_key(self.key_path)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise LinkError(f"cannot reach the guest's SSH server at {self.host}:{self.port}: {exc}") from None
        # Docker API exchanges are small request/response packets: Nagle would
        # add up to 40 ms (delayed ACK) per round trip.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(None)
        sock = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        t = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
        # Only offer the pinned key type, so the server cannot pick another one
        # of its host keys that we would then have to reject.
        t.get_security_options().key_types = (self.host_key_type,)
        try:
            t.start_client(timeout=timeout)
            server_key = t.get_remote_server_key()
            if server_key.get_name() != self.host_key_type or server_key.get_base64() != self.host_key_b64:
                from desktop.machine.host_key_pin import fingerprint

                raise HostKeyMismatch(
                    f"the SSH host key of {self.host}:{self.port} is "
                    f"{fingerprint(server_key.get_name() + ' ' + server_key.get_base64())} "
                    f"({server_key.get_name()}), not the pinned "
                    f"{fingerprint(self.host_key_type + ' ' + self.host_key_b64)} ({self.host_key_type}); "
                    "refusing to connect (the machine was recreated, or something else answers on that port)"
                )
            t.auth_publickey(self.username, key)
        except HostKeyMismatch:
            t.close()
            raise
        except paramiko.AuthenticationException as exc:
            t.close()
            raise LinkError(f"the guest refused key {self.key_path} for user {self.username}: {exc}") from None
        except (SSHException, OSError, EOFError) as exc:
            t.close()
            raise LinkError(f"SSH handshake with {self.host}:{self.port} failed: {exc or type(exc).__name__}") from None
        t.set_keepalive(self.keepalive_s)
        self._transport = t
        if self.server_nodelay:
            threading.Thread(target=self.request_server_nodelay, args=(t,), name="ssh-nodelay",
                             daemon=True).start()
        self.connect_count += 1
        log.info("SSH link to %s:%d up (connection #%d)", self.host, self.port, self.connect_count)
        return t

    def request_server_nodelay(self, t: paramiko.Transport | None = None) -> int:
        """Make sshd turn off Nagle on its side of this connection; returns the exit status.

        sshd sets TCP_NODELAY only when a session with a pty executes a
        command, and never clears it again; until then its small packets
        (a response after its headers, an EOF) wait for ACKs. One `true`
        run on a pty, once per connection, is enough. Measured A/B in the TCG
        guest through the host socket: /_ping on a kept-alive connection
        5.3 -> 3.3 ms median, on a fresh connection 12.7 -> 11.9 ms.
        """
        t = t or self.transport()
        try:
            chan = t.open_session(timeout=self.channel_timeout)
        except (SSHException, OSError, EOFError) as exc:
            log.debug("no pty session for TCP_NODELAY: %s", exc)
            return -1
        try:
            chan.settimeout(self.channel_timeout * 3)
            chan.get_pty(term="dumb")
            chan.exec_command("true")
            while chan.recv(4096):  # drain the pty until the command ends
                pass
            return chan.recv_exit_status()
        except (SSHException, OSError, EOFError) as exc:
            log.debug("pty session for TCP_NODELAY failed: %s", exc)
            return -1
        finally:
            close_channel(chan)

    # -- channels ------------------------------------------------------

    def _open(self, opener: Callable[[paramiko.Transport], paramiko.Channel], what: str) -> paramiko.Channel:
        """Open a channel; if the transport turns out dead, reconnect once and retry."""
        t = self.transport()
        try:
            return opener(t)
        except ChannelException as exc:
            raise ChannelOpenRefused(f"the guest refused to open {what}: {exc.text}") from None
        except (SSHException, OSError, EOFError) as exc:
            if t.is_active():
                # Closing a transport cuts every stream on it (attached
                # containers, event followers): only do it if the server
                # stopped answering altogether, e.g. a half-dead TCP
                # connection after a suspend.
                if self._responsive(t, self.probe_timeout):
                    raise LinkError(f"cannot open {what} over SSH: {exc or type(exc).__name__}") from None
                log.warning("the SSH server stopped answering (%s); reconnecting", exc)
                t.close()
        t = self._reconnect(t)
        try:
            return opener(t)
        except ChannelException as exc:
            raise ChannelOpenRefused(f"the guest refused to open {what}: {exc.text}") from None
        except (SSHException, OSError, EOFError) as exc:
            raise LinkError(f"cannot open {what} over SSH: {exc or type(exc).__name__}") from None

    def _responsive(self, t: paramiko.Transport, timeout: float) -> bool:
        """Whether the server still answers on `t` (a global request it must reply to)."""
        answered = threading.Event()

        def probe() -> None:
            # OpenSSH replies "failure" to this unknown request, which proves
            # it alive; paramiko returns None for that and for a dead
            # transport alike, hence the is_active() check.
            try:
                t.global_request("keepalive@openssh.com", wait=True)
            except (SSHException, OSError, EOFError):
                return
            if t.is_active():
                answered.set()

        with self._probe_lock:  # paramiko keeps one pending global request at a time
            threading.Thread(target=probe, name="ssh-liveness", daemon=True).start()
            # The probe thread ends by itself when the transport is closed.
            return answered.wait(timeout)

    def open_streamlocal(self, path: str, retry_s: float = 1.0) -> paramiko.Channel:
        """A channel connected to the unix socket `path` in the guest.

        sshd connects to the socket without blocking, so a full listen
        backlog (a burst of connections to a slow TCG guest agent, or the
        agent restarting) fails at once with "connect failed"; such failures
        are retried with backoff for up to `retry_s` seconds.
        """
        what = f"a connection to the guest socket {path}"
        deadline = time.monotonic() + retry_s
        delay = 0.01
        while True:
            try:
                return self._open(lambda t: open_streamlocal_channel(t, path, self.channel_timeout), what)
            except ChannelOpenRefused:
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)  # backoff before retrying a refused connect, not synchronisation
            delay = min(delay * 2, 0.2)

    def open_tcp(self, host: str, port: int) -> paramiko.Channel:
        """A channel connected to TCP `host:port` as seen from the guest."""
        return self._open(lambda t: t.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                                   timeout=self.channel_timeout),
                          f"a connection to {host}:{port} in the guest")

    def open_session(self) -> paramiko.Channel:
        """A plain session channel (for exec); used by run() and the SFTP share."""
        return self._open(lambda t: t.open_session(timeout=self.channel_timeout), "a session")

    # -- conveniences --------------------------------------------------

    def run(self, command: str, timeout: float = 30) -> tuple[int, bytes, bytes]:
        """Run `command` in the guest; (exit status, stdout, stderr). Costs a process: rare use only."""
        chan = self.open_session()
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            chan.shutdown_write()
            err = bytearray()

            def drain_stderr() -> None:
                # A second reader so a full stderr window never blocks stdout.
                try:
                    while data := chan.recv_stderr(65536):
                        err.extend(data)
                except OSError:
                    pass

            reader = threading.Thread(target=drain_stderr, name="ssh-run-stderr", daemon=True)
            reader.start()
            out = bytearray()
            while data := chan.recv(65536):
                out += data
            reader.join(timeout)
            if not chan.status_event.wait(timeout):
                raise TimeoutError
            return chan.recv_exit_status(), bytes(out), bytes(err)
        except TimeoutError:
            raise LinkError(f"guest command {command!r} did not finish within {timeout} s") from None
        finally:
            close_channel(chan)

    def request(self, method: str, path: str, body: bytes | None = None,
                socket_path: str = "/run/dockyard/docker.sock",
                headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
        """One HTTP/1.1 request to the guest agent; (status, headers, body)."""
        chan = self.open_streamlocal(socket_path)
        try:
            chan.settimeout(timeout)
            ex = HttpExchange(chan)
            ex.send(method, path, body, headers)
            resp = ex.read_head()
            return resp.status, resp.headers, ex.read_body()
        except TimeoutError:
            raise LinkError(f"the guest agent did not answer {method} {path} within {timeout} s") from None
        finally:
            close_channel(chan)

    def stream(self, path: str, socket_path: str = "/run/dockyard/docker.sock") -> Iterator[bytes]:
        """GET `path` and yield the body line by line as it arrives (for /events).

        The generator owns its channel; closing the generator closes it.
        """
        chan = self.open_streamlocal(socket_path)
        try:
            ex = HttpExchange(chan)
            ex.send("GET", path)
            resp = ex.read_head()
            if resp.status != 200:
                raise LinkError(f"GET {path} on the guest agent answered {resp.status}: {ex.read_body()[:200]!r}")
            yield from iter_lines(ex.iter_body())
        finally:
            close_channel(chan)


def open_streamlocal_channel(t: paramiko.Transport, path: str, timeout: float | None = None) -> paramiko.Channel:
    """Open a `direct-streamlocal@openssh.com` channel on transport `t`.

    paramiko has no public API for it; this follows Transport.open_channel
    and adds the payload OpenSSH's PROTOCOL file defines for this type:
    string socket path, string reserved, uint32 reserved.
    """
    if not t.is_active():
        raise SSHException("SSH session not active")
    timeout = t.channel_timeout if timeout is None else timeout
    # The private half of paramiko used below has no type stubs; `tp` and `cp` say so.
    tp: Any = t
    with t.lock:
        window = tp._sanitize_window_size(None)
        packet = tp._sanitize_packet_size(None)
        chanid = tp._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string(STREAMLOCAL_KIND)
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(path)
        m.add_string("")
        m.add_int(0)
        chan = paramiko.Channel(chanid)
        cp: Any = chan
        tp._channels.put(chanid, chan)
        t.channel_events[chanid] = event = threading.Event()
        t.channels_seen[chanid] = True
        cp._set_transport(t)
        cp._set_window(window, packet)
    tp._send_user_message(m)
    deadline = time.monotonic() + timeout
    # The transport's reader thread sets `event` on open success or failure.
    while not event.wait(0.1):
        if not t.is_active():
            raise t.get_exception() or SSHException("SSH session ended while opening a channel")
        if time.monotonic() > deadline:
            raise SSHException(f"timeout opening a channel to {path}")
    chan = tp._channels.get(chanid)
    if chan is not None:
        return chan
    raise t.get_exception() or SSHException(f"unable to open a channel to {path}")
