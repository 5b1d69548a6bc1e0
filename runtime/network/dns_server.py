"""The embedded DNS server of user networks: one resolver in the agent, listening at 127.0.0.11 in every container.

As Docker's libnetwork does, the sockets are created inside each container's
network namespace (a short-lived thread joins it, binds UDP and TCP on
127.0.0.11:53 and exits; a socket stays in the namespace it was made in), and
then a single selector loop in the agent serves the sockets of all containers.
Names the engine knows are answered from `lookup(key, name)` without leaving
the process; everything else is forwarded to the container's upstream
servers (the user's `--dns`, else the engine's own resolv.conf nameservers).
Upstreams on loopback are asked from the agent's namespace, others from the
container's, which is what Docker does too (a container on an `--internal`
network therefore cannot resolve outside names).

Behaviour copied from libnetwork's resolver.go: answers for internal names
carry TTL 600 and come in random order; a known name without an IPv6 address
gets an empty NOERROR AAAA (and MX) answer rather than a forwarded one; with a
user-set `ndots` option single-label A/AAAA misses are answered empty instead
of forwarded; at most three upstreams are tried, moving on after SERVFAIL,
REFUSED, a non-authoritative NXDOMAIN or a timeout, and the last reply is
passed through (dns_forward.py). `host.docker.internal` resolves to the user's
host, as on Docker Desktop. A container's `--dns` settings and resolv.conf are
resolv_conf.ContainerDns.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RuntimeFailure
from ..linux.netns import run_in_netns
from . import dns_message as msg
from .dns_forward import DNS_PORT, MAX_UPSTREAMS, UPSTREAM_TIMEOUT, Upstream, ask_upstreams, upstreams_from_resolv_conf

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Lookup = Callable[[str, str], list[IPAddress] | None]
Reverse = Callable[[str, IPAddress], str | None]

LISTEN_ADDRESS = "127.0.0.11"
RESPONSE_TTL = 600
MAX_CONCURRENT_FORWARDS = 256
TCP_IDLE_TIMEOUT = 30.0
MAX_TCP_CONNECTIONS = 64  # per container: a client that opens more waits for old ones to be closed
HOST_NAME = "host.docker.internal"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
_IP_FREEBIND = 15  # bind 127.0.0.11 even before the container's loopback is up
_UDP_BURST = 64  # datagrams read from one socket per wake-up, so no container starves the others
_MAX_OUTBOUND = 4 * (msg.MAX_MESSAGE + 2)


@dataclass(eq=False)
class _TcpConnection:
    """A client's TCP connection: length-prefixed messages in, replies queued out."""

    sock: socket.socket
    inbound: bytearray = field(default_factory=bytearray)
    outbound: bytearray = field(default_factory=bytearray)
    last_active: float = field(default_factory=time.monotonic)
    closed: bool = False


@dataclass(eq=False)
class _Attachment:
    """One container's listening sockets and resolver settings (touched by the loop thread only)."""

    key: str
    netns_fd: int
    udp: socket.socket
    tcp: socket.socket
    upstreams: list[Upstream]
    ndots_set: bool
    connections: set[_TcpConnection] = field(default_factory=set)
    closed: bool = False

    @property
    def forwards_from_container(self) -> bool:
        return any(not upstream.from_host for upstream in self.upstreams)


class DnsServer:
    """The embedded resolver: `attach()` a container's namespace, `detach()` it, `close()` at engine stop.

    `lookup(key, name)` gets the attachment key and the lower-cased query name
    without the trailing dot and returns the addresses the engine knows for it
    (IPv4 and/or IPv6), or None when the name is not the engine's. `reverse(key,
    address)` names a container address for PTR queries, or returns None. Both
    run on the server's thread and must not block.
    """

    def __init__(self, lookup: Lookup, upstreams: list[str] | None = None, *,
                 reverse: Reverse | None = None, host_address: str = "",
                 listen_address: str = LISTEN_ADDRESS, port: int = DNS_PORT,
                 timeout: float = UPSTREAM_TIMEOUT, resolv_conf: Path = HOST_RESOLV_CONF) -> None:
        self._lookup = lookup
        self._reverse = reverse
        self._host_address = ipaddress.ip_address(host_address) if host_address else None
        self._listen = (listen_address, port)
        self._timeout = timeout
        if upstreams is None:
            try:
                text = resolv_conf.read_text()
            except FileNotFoundError:
                text = ""
            self.default_upstreams = upstreams_from_resolv_conf(text)
        else:
            self.default_upstreams = [Upstream.parse(u, engine_side=True) for u in upstreams]
        self._attachments: dict[str, _Attachment] = {}
        self._lock = threading.Lock()
        self._forwards = threading.BoundedSemaphore(MAX_CONCURRENT_FORWARDS)
        self._commands: queue.SimpleQueue[tuple[str, object, threading.Event]] = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue[tuple[Callable[[bytes], None], bytes]] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None, None))
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()

    # ---- public interface -------------------------------------------------------------

    def attach(self, key: str, netns_path: str | os.PathLike[str], upstreams: list[str] | None = None,
               ndots_set: bool = False) -> None:
        """Start answering at 127.0.0.11:53 inside the namespace at `netns_path`.

        `upstreams` are the container's `--dns` servers (default: the engine's);
        `ndots_set` is True when the user gave an `ndots` DNS option. Attaching a
        key again replaces the earlier attachment (a restarted container).
        """
        chosen = [Upstream.parse(u) for u in upstreams] if upstreams else list(self.default_upstreams)
        if self._closed:
            raise RuntimeFailure("the DNS server is closed")
        self.detach(key)
        netns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            udp, tcp = run_in_netns(netns_fd, self._bind_sockets)
        except OSError as err:
            os.close(netns_fd)
            where = f"{self._listen[0]}:{self._listen[1]} in {os.fsdecode(netns_path)}"
            raise RuntimeFailure(f"cannot listen at {where}: {err}") from err
        except BaseException:
            os.close(netns_fd)
            raise
        attachment = _Attachment(key, netns_fd, udp, tcp, chosen[:MAX_UPSTREAMS], ndots_set)
        with self._lock:
            self._attachments[key] = attachment
        self._command("add", attachment)

    def detach(self, key: str) -> bool:
        """Stop answering in the namespace of `key` and close its sockets; False if it was not attached."""
        with self._lock:
            attachment = self._attachments.pop(key, None)
        if attachment is None:
            return False
        self._command("remove", attachment)
        return True

    def attached(self) -> list[str]:
        """The keys currently served."""
        with self._lock:
            return list(self._attachments)

    def close(self) -> None:
        """Detach everything and stop the server thread. Idempotent."""
        if self._closed:
            return
        for key in self.attached():
            self.detach(key)
        self._closed = True
        self._command("stop", None)
        self._thread.join(timeout=10)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- socket set-up, run inside the container's namespace ----------------------------

    def _bind_sockets(self) -> tuple[socket.socket, socket.socket]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            for sock in (udp, tcp):
                sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
                sock.setblocking(False)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind(self._listen)
            tcp.bind(self._listen)
            tcp.listen(64)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        return udp, tcp

    # ---- the selector loop -----------------------------------------------------------------
    # Only the loop thread touches the sockets of attachments (forwarding threads hand
    # their replies over through `_post`): a socket is then never closed under a
    # thread that is about to use its fd number, which a new socket may already hold.

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:
            pass  # the loop already has wake-ups pending
        except OSError:
            pass  # closed: the server has stopped and nobody is left to answer

    def _command(self, verb: str, arg: object) -> None:
        done = threading.Event()
        self._commands.put((verb, arg, done))
        self._wake()
        if not done.wait(timeout=10):
            raise RuntimeFailure(f"the DNS server did not take the {verb} command")

    def _post(self, send: Callable[[bytes], None], data: bytes) -> None:
        """Have the loop thread send a reply."""
        self._outbox.put((send, data))
        self._wake()

    def _run_commands(self) -> bool:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                send, data = self._outbox.get_nowait()
            except queue.Empty:
                break
            send(data)
        running = True
        while True:
            try:
                verb, arg, done = self._commands.get_nowait()
            except queue.Empty:
                return running
            if verb == "add":
                assert isinstance(arg, _Attachment)
                self._selector.register(arg.udp, selectors.EVENT_READ, ("udp", arg, None))
                self._selector.register(arg.tcp, selectors.EVENT_READ, ("listen", arg, None))
            elif verb == "remove":
                assert isinstance(arg, _Attachment)
                self._close_attachment(arg)
            elif verb == "stop":
                running = False
            done.set()

    def _close_attachment(self, attachment: _Attachment) -> None:
        attachment.closed = True
        for conn in list(attachment.connections):
            self._close_connection(attachment, conn)
        for sock in (attachment.udp, attachment.tcp):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass  # never registered: detached before the loop saw it
            sock.close()
        os.close(attachment.netns_fd)

    def _close_connection(self, attachment: _Attachment, conn: _TcpConnection) -> None:
        if conn.closed:
            return
        conn.closed = True
        attachment.connections.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _serve(self) -> None:
        last_sweep = time.monotonic()
        running = True
        while running:
            for key, mask in self._selector.select(timeout=5.0):
                kind, attachment, conn = key.data
                try:
                    if kind == "wake":
                        running = self._run_commands()
                    elif kind == "udp":
                        self._read_udp(attachment)
                    elif kind == "listen":
                        self._accept(attachment)
                    else:
                        if mask & selectors.EVENT_READ:
                            self._read_tcp(attachment, conn)
                        if mask & selectors.EVENT_WRITE:
                            self._flush(attachment, conn)
                except Exception:  # one bad client or lookup must not stop the resolver of every container
                    log.exception("DNS server: error serving %s", attachment.key if attachment else kind)
            now = time.monotonic()
            if now - last_sweep > TCP_IDLE_TIMEOUT / 2:
                last_sweep = now
                self._sweep_idle(now)

    def _sweep_idle(self, now: float) -> None:
        with self._lock:
            attachments = list(self._attachments.values())
        for attachment in attachments:
            for conn in list(attachment.connections):
                if now - conn.last_active > TCP_IDLE_TIMEOUT:
                    self._close_connection(attachment, conn)

    def _read_udp(self, attachment: _Attachment) -> None:
        sock = attachment.udp
        for _ in range(_UDP_BURST):
            try:
                data, peer = sock.recvfrom(msg.MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. ICMP errors queued on the socket
                log.debug("DNS server: recvfrom in %s: %s", attachment.key, err)
                continue

            def reply(data: bytes, sock: socket.socket = sock, peer: tuple[str, int] = peer) -> None:
                if attachment.closed:
                    return
                try:
                    sock.sendto(data, peer)
                except OSError as err:  # a full socket buffer: UDP clients ask again
                    log.debug("DNS server: cannot answer %s: %s", peer, err)

            self._handle(attachment, data, False, reply)

    def _accept(self, attachment: _Attachment) -> None:
        try:
            sock, _ = attachment.tcp.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(attachment.connections) >= MAX_TCP_CONNECTIONS:
            oldest = min(attachment.connections, key=lambda c: c.last_active)
            self._close_connection(attachment, oldest)
        sock.setblocking(False)
        conn = _TcpConnection(sock)
        attachment.connections.add(conn)
        self._selector.register(sock, selectors.EVENT_READ, ("tcp", attachment, conn))

    def _read_tcp(self, attachment: _Attachment, conn: _TcpConnection) -> None:
        if conn.closed:
            return
        try:
            chunk = conn.sock.recv(msg.MAX_MESSAGE + 2)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_connection(attachment, conn)
            return
        conn.last_active = time.monotonic()
        conn.inbound += chunk
        while len(conn.inbound) >= 2:
            (length,) = struct.unpack_from("!H", conn.inbound)
            if len(conn.inbound) < 2 + length:
                break
            data = bytes(conn.inbound[2:2 + length])
            del conn.inbound[:2 + length]

            def reply(data: bytes, conn: _TcpConnection = conn) -> None:
                if conn.closed:
                    return
                conn.outbound += struct.pack("!H", len(data)) + data
                self._flush(attachment, conn)

            self._handle(attachment, data, True, reply)

    def _flush(self, attachment: _Attachment, conn: _TcpConnection) -> None:
        """Send what the socket takes now; the rest waits for the socket to become writable."""
        if conn.closed:
            return
        try:
            sent = conn.sock.send(conn.outbound) if conn.outbound else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            log.debug("DNS server: cannot answer over TCP in %s: %s", attachment.key, err)
            self._close_connection(attachment, conn)
            return
        del conn.outbound[:sent]
        if len(conn.outbound) > _MAX_OUTBOUND:
            # A client that sends queries but never reads the replies.
            self._close_connection(attachment, conn)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbound else 0)
        if self._selector.get_key(conn.sock).events != events:
            self._selector.modify(conn.sock, events, ("tcp", attachment, conn))

    # ---- answering ----------------------------------------------------------------------

    def _handle(self, attachment: _Attachment, data: bytes, tcp: bool, reply: Callable[[bytes], None]) -> None:
        try:
            query = msg.parse_query(data)
        except msg.MalformedMessage as err:
            log.debug("DNS server: malformed query in %s: %s", attachment.key, err)
            answer = msg.error_reply(data, msg.RCODE_FORMERR)
            if answer is not None:
                reply(answer)
            return
        try:
            answer = self._answer(attachment, query, msg.MAX_MESSAGE if tcp else query.udp_size)
        except Exception:
            log.exception("DNS server: lookup of %s for %s failed", query.qname, attachment.key)
            answer = msg.build_reply(query, rcode=msg.RCODE_SERVFAIL)
        if answer is not None:
            reply(answer)
            return
        if not self._forwards.acquire(blocking=False):
            log.warning("DNS server: more than %d queries forwarded at once; refusing %s",
                        MAX_CONCURRENT_FORWARDS, query.qname)
            reply(msg.build_reply(query, rcode=msg.RCODE_SERVFAIL))
            return
        # The thread gets its own fd on the namespace: detach() may close the attachment's meanwhile.
        netns_fd = os.dup(attachment.netns_fd) if attachment.forwards_from_container else -1
        threading.Thread(target=self._forward, args=(attachment, netns_fd, query, data, tcp, reply),
                         name="dns-forward", daemon=True).start()

    def _known(self, key: str, name: str) -> list[IPAddress] | None:
        found = self._lookup(key, name)
        if found is None and name == HOST_NAME and self._host_address is not None:
            return [self._host_address]
        return found

    def _answer(self, attachment: _Attachment, query: msg.Query, max_size: int) -> bytes | None:
        """The reply to a query the engine can answer itself, None to forward it."""
        if query.qclass != msg.CLASS_IN:
            return None
        name = query.name
        if query.qtype in (msg.TYPE_A, msg.TYPE_AAAA):
            found = self._known(attachment.key, name)
            if found is None:
                if attachment.ndots_set and "." not in name:
                    # The client will retry with its search domains; the bare name is not for upstream.
                    return msg.build_reply(query)
                return None
            version = 4 if query.qtype == msg.TYPE_A else 6
            chosen = [a for a in found if a.version == version]
            random.shuffle(chosen)
            return msg.build_reply(query, [msg.address_record(a) for a in chosen], ttl=RESPONSE_TTL,
                                   max_size=max_size)
        if query.qtype == msg.TYPE_MX:
            # A known name has no MX: an empty answer lets mailers fall back to its address (RFC 5321 5.1).
            return msg.build_reply(query) if self._known(attachment.key, name) is not None else None
        if query.qtype == msg.TYPE_PTR and self._reverse is not None:
            address = msg.ptr_address(name)
            host = self._reverse(attachment.key, address) if address is not None else None
            if not host:
                return None
            return msg.build_reply(query, [(msg.TYPE_PTR, msg.encode_name(host))], ttl=RESPONSE_TTL,
                                   max_size=max_size)
        return None

    # ---- forwarding ---------------------------------------------------------------------

    def _forward(self, attachment: _Attachment, netns_fd: int, query: msg.Query, data: bytes, tcp: bool,
                 reply: Callable[[bytes], None]) -> None:
        try:
            answer = ask_upstreams(attachment.upstreams, netns_fd, query, data, tcp, self._timeout)
        except Exception:
            log.exception("DNS server: forwarding %s for %s failed", query.qname, attachment.key)
            answer = msg.build_reply(query, rcode=msg.RCODE_SERVFAIL)
        finally:
            self._forwards.release()
            if netns_fd >= 0:
                os.close(netns_fd)
        self._post(reply, answer)
