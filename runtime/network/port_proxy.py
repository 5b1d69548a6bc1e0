"""Userland port forwarders (like docker-proxy): host TCP/UDP ports relayed to a container.

One event-loop thread (selectors/epoll) serves every published port. Listening
sockets are bound in the caller's thread so a taken port fails at once with
Docker's message. TCP: each accepted client gets its own connection to the
container, opened only then, so clients may connect before the container's server
listens; if the container refuses, the client is closed. UDP: one socket towards
the container per client address, dropped after `udp_idle_timeout` seconds of silence.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import Conflict, InvalidArgument

log = logging.getLogger(__name__)

_BUFFER_LIMIT = 256 * 1024
_UDP_MAX = 65535
DEFAULT_UDP_IDLE_TIMEOUT = 90.0  # docker-proxy's UDP conntrack timeout


@dataclass
class Forward:
    """One published port: where we listen and where traffic goes."""

    protocol: str            # "tcp" | "udp"
    host_ip: str             # "" or "0.0.0.0" = every address
    host_port: int           # the real port, after binding
    target_ip: str
    target_port: int


def _family(host_ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host_ip else socket.AF_INET


def _bind_listener(protocol: str, host_ip: str, host_port: int) -> socket.socket:
    """Bind the host side, raising Conflict with Docker's wording if the port is taken."""
    if protocol not in ("tcp", "udp"):
        raise InvalidArgument(f"unsupported protocol {protocol!r} for a published port")
    if not 0 <= host_port <= 65535:
        raise InvalidArgument(f"invalid host port {host_port}")
    bind_ip = host_ip or "0.0.0.0"
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(_family(bind_ip), kind | socket.SOCK_CLOEXEC)
    try:
        if protocol == "tcp":
            # As docker-proxy: a port left in TIME_WAIT by an old container is reusable.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_ip, host_port))
        if protocol == "tcp":
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise Conflict(f"Bind for {bind_ip}:{host_port} failed: port is already allocated") from err
        if err.errno == errno.EADDRNOTAVAIL:
            raise InvalidArgument(f"Bind for {bind_ip}:{host_port} failed: "
                                  f"{bind_ip} is not an address of this machine") from err
        raise InvalidArgument(f"Bind for {bind_ip}:{host_port} failed: {err.strerror}") from err
    return sock


class _TcpPair:
    """A client connection and its connection to the container, with a buffer each way."""

    def __init__(self, listener: _Listener, client: socket.socket, backend: socket.socket) -> None:
        self.listener = listener
        self.client = client
        self.backend = backend
        self.connected = False
        self.to_backend = bytearray()
        self.to_client = bytearray()
        self.client_eof = False     # client sent FIN
        self.backend_eof = False    # backend sent FIN
        self.client_shut = False    # we sent FIN to the client
        self.backend_shut = False
        self.closed = False


# What recvfrom() gives for a client: (host, port) on AF_INET,
# (host, port, flowinfo, scope_id) on AF_INET6.
_ClientAddr = tuple[str, int] | tuple[str, int, int, int]


@dataclass
class _UdpSession:
    sock: socket.socket
    client_addr: _ClientAddr
    last_seen: float


@dataclass
class _Listener:
    key: str
    forward: Forward
    sock: socket.socket
    pairs: set[_TcpPair] = field(default_factory=set)
    sessions: dict[_ClientAddr, _UdpSession] = field(default_factory=dict)


class PortProxy:
    """Every forwarder of the engine, served by one background thread."""

    def __init__(self, udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT) -> None:
        self.udp_idle_timeout = udp_idle_timeout
        self._open_loop_resources()
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._lock = threading.Lock()
        self._listeners: dict[str, list[_Listener]] = defaultdict(list)
        self._thread: threading.Thread | None = None
        self._stopping = False

    # public API (any thread) -------------------------------------------------
    def add(self, key: str, protocol: str, host_ip: str, host_port: int,
            target_ip: str, target_port: int) -> Forward:
        """Listen now and forward from then on; returns the Forward with the real host port."""
        sock = _bind_listener(protocol, host_ip, host_port)
        forward = Forward(protocol, host_ip, sock.getsockname()[1], target_ip, target_port)
        listener = _Listener(key, forward, sock)
        self._ensure_thread()
        self._call(lambda: self._register_listener(listener))
        return forward

    def remove(self, key: str) -> None:
        """Stop every forwarder registered under `key` and drop its connections. Idempotent."""
        with self._lock:
            if self._thread is None or key not in self._listeners:
                return
        self._call(lambda: self._drop_key(key))

    def forwards(self, key: str) -> list[Forward]:
        with self._lock:
            return [listener.forward for listener in self._listeners.get(key, [])]

    def close(self) -> None:
        """Stop everything and the loop thread."""
        if self._thread is None:
            return
        self._call(self._drop_all)
        self._stopping = True
        self._wake()
        self._thread.join()
        self._thread = None
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        # Usable again afterwards (an engine may set networking up again after a stop).
        self._open_loop_resources()
        self._stopping = False

    def _open_loop_resources(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

    # plumbing between callers and the loop -------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="port-proxy", daemon=True)
                self._thread.start()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full, so the loop is going to wake anyway

    def _call(self, func: Callable[[], None]) -> None:
        """Run `func` on the loop thread and wait for it, so its effect is visible on return."""
        if threading.current_thread() is self._thread:
            func()
            return
        done = threading.Event()
        with self._lock:
            self._commands.append((func, done))
        self._wake()
        done.wait()

    def _run_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for func, done in commands:
            try:
                func()
            except Exception:
                log.exception("port proxy command failed")
            finally:
                done.set()

    # the loop -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            timeout = self._next_udp_expiry()
            for sel_key, mask in self._sel.select(timeout):
                kind, obj = sel_key.data
                try:
                    if kind == "wake":
                        while True:
                            try:
                                if not os.read(self._wake_r, 4096):
                                    break
                            except BlockingIOError:
                                break
                    elif kind == "tcp-listen":
                        self._accept(obj)
                    elif kind == "udp-listen":
                        self._udp_from_client(obj)
                    elif kind == "udp-session":
                        self._udp_from_backend(*obj)
                    elif kind in ("client", "backend"):
                        self._tcp_event(obj, kind, mask)
                except Exception:
                    log.exception("port proxy: error handling %s", kind)
            self._run_commands()
            self._expire_udp()

    def _register_listener(self, listener: _Listener) -> None:
        kind = "tcp-listen" if listener.forward.protocol == "tcp" else "udp-listen"
        self._sel.register(listener.sock, selectors.EVENT_READ, (kind, listener))
        with self._lock:
            self._listeners[listener.key].append(listener)

    def _drop_key(self, key: str) -> None:
        with self._lock:
            listeners = self._listeners.pop(key, [])
        for listener in listeners:
            self._sel.unregister(listener.sock)
            listener.sock.close()
            for pair in list(listener.pairs):
                self._close_pair(pair, listener)
            for session in list(listener.sessions.values()):
                self._close_session(listener, session)

    def _drop_all(self) -> None:
        with self._lock:
            keys = list(self._listeners)
        for key in keys:
            self._drop_key(key)

    # TCP ------------------------------------------------------------------------
    def _accept(self, listener: _Listener) -> None:
        for _ in range(64):  # bounded so one busy port cannot starve the others
            try:
                client, _addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("accept on port %d failed: %s", listener.forward.host_port, err)
                return
            client.setblocking(False)
            fwd = listener.forward
            backend = socket.socket(_family(fwd.target_ip), socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            backend.setblocking(False)
            pair = _TcpPair(listener, client, backend)
            listener.pairs.add(pair)
            rc = backend.connect_ex((fwd.target_ip, fwd.target_port))
            if rc not in (0, errno.EINPROGRESS):
                log.debug("connect to %s:%d failed at once: %s", fwd.target_ip, fwd.target_port, os.strerror(rc))
                self._close_pair(pair, listener)
                continue
            self._update(pair)

    def _tcp_event(self, pair: _TcpPair, side: str, mask: int) -> None:
        if pair.closed:
            return
        listener = pair.listener
        if side == "backend" and not pair.connected:
            rc = pair.backend.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc:
                # The container is not listening (yet, or any more): like docker-proxy, hang up.
                self._close_pair(pair, listener)
                return
            pair.connected = True
        try:
            if mask & selectors.EVENT_READ:
                self._pump_in(pair, side)
            if mask & selectors.EVENT_WRITE:
                self._pump_out(pair, side)
        except OSError as err:
            log.debug("proxied connection ended: %s", err)
            self._close_pair(pair, listener)
            return
        self._finish_half_closes(pair)
        if pair.client_eof and pair.backend_eof and not pair.to_backend and not pair.to_client:
            self._close_pair(pair, listener)
            return
        self._update(pair)

    def _pump_in(self, pair: _TcpPair, side: str) -> None:
        src = pair.client if side == "client" else pair.backend
        buf = pair.to_backend if side == "client" else pair.to_client
        try:
            data = src.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        if data:
            buf += data
        elif side == "client":
            pair.client_eof = True
        else:
            pair.backend_eof = True

    def _pump_out(self, pair: _TcpPair, side: str) -> None:
        dst = pair.client if side == "client" else pair.backend
        buf = pair.to_client if side == "client" else pair.to_backend
        if not buf:
            return
        try:
            sent = dst.send(buf)
        except (BlockingIOError, InterruptedError):
            return
        del buf[:sent]

    def _finish_half_closes(self, pair: _TcpPair) -> None:
        # A FIN is passed on only once everything before it has been delivered.
        if pair.client_eof and not pair.to_backend and not pair.backend_shut and pair.connected:
            pair.backend_shut = True
            try:
                pair.backend.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if pair.backend_eof and not pair.to_client and not pair.client_shut:
            pair.client_shut = True
            try:
                pair.client.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _update(self, pair: _TcpPair) -> None:
        """Ask for the events this pair can use now (backpressure: no reads into a full buffer)."""
        client_mask = 0
        backend_mask = 0
        if pair.connected:
            if not pair.client_eof and len(pair.to_backend) < _BUFFER_LIMIT:
                client_mask |= selectors.EVENT_READ
            if not pair.backend_eof and len(pair.to_client) < _BUFFER_LIMIT:
                backend_mask |= selectors.EVENT_READ
            if pair.to_backend:
                backend_mask |= selectors.EVENT_WRITE
            if pair.to_client:
                client_mask |= selectors.EVENT_WRITE
        else:
            backend_mask = selectors.EVENT_WRITE
        self._set_mask(pair.client, client_mask, ("client", pair))
        self._set_mask(pair.backend, backend_mask, ("backend", pair))

    def _set_mask(self, sock: socket.socket, mask: int, data: tuple[str, _TcpPair]) -> None:
        registered = self._is_registered(sock)
        if mask and registered:
            self._sel.modify(sock, mask, data)
        elif mask:
            self._sel.register(sock, mask, data)
        elif registered:
            self._sel.unregister(sock)

    def _is_registered(self, sock: socket.socket) -> bool:
        try:
            self._sel.get_key(sock)
            return True
        except KeyError:
            return False

    def _close_pair(self, pair: _TcpPair, listener: _Listener) -> None:
        if pair.closed:
            return
        pair.closed = True
        listener.pairs.discard(pair)
        for sock in (pair.client, pair.backend):
            if self._is_registered(sock):
                self._sel.unregister(sock)
            sock.close()

    # UDP --------------------------------------------------------------------------
    def _udp_from_client(self, listener: _Listener) -> None:
        for _ in range(64):
            try:
                data, addr = listener.sock.recvfrom(_UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.debug("udp receive on port %d: %s", listener.forward.host_port, err)
                return
            session = listener.sessions.get(addr)
            if session is None:
                fwd = listener.forward
                sock = socket.socket(_family(fwd.target_ip), socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                try:
                    sock.connect((fwd.target_ip, fwd.target_port))
                except OSError as err:
                    log.debug("udp connect to %s:%d: %s", fwd.target_ip, fwd.target_port, err)
                    sock.close()
                    continue
                session = _UdpSession(sock, addr, time.monotonic())
                listener.sessions[addr] = session
                self._sel.register(sock, selectors.EVENT_READ, ("udp-session", (listener, session)))
            session.last_seen = time.monotonic()
            try:
                session.sock.send(data)
            except OSError as err:
                # ECONNREFUSED from an earlier datagram: nobody listens yet; keep the session.
                log.debug("udp send to container: %s", err)

    def _udp_from_backend(self, listener: _Listener, session: _UdpSession) -> None:
        for _ in range(64):
            try:
                data = session.sock.recv(_UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.debug("udp receive from container: %s", err)
                return
            session.last_seen = time.monotonic()
            try:
                listener.sock.sendto(data, session.client_addr)
            except OSError as err:
                log.debug("udp reply to %s: %s", session.client_addr, err)

    def _close_session(self, listener: _Listener, session: _UdpSession) -> None:
        listener.sessions.pop(session.client_addr, None)
        if self._is_registered(session.sock):
            self._sel.unregister(session.sock)
        session.sock.close()

    def _next_udp_expiry(self) -> float | None:
        with self._lock:
            listeners = [lst for group in self._listeners.values() for lst in group if lst.sessions]
        if not listeners:
            return None
        oldest = min(s.last_seen for lst in listeners for s in lst.sessions.values())
        return max(0.0, oldest + self.udp_idle_timeout - time.monotonic())

    def _expire_udp(self) -> None:
        now = time.monotonic()
        with self._lock:
            listeners = [lst for group in self._listeners.values() for lst in group if lst.sessions]
        for listener in listeners:
            for session in list(listener.sessions.values()):
                if now - session.last_seen >= self.udp_idle_timeout:
                    self._close_session(listener, session)
