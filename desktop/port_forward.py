"""Published container ports reachable on the host, like Docker Desktop.

Follows the guest engine's /events; whenever a container starts or stops,
re-reads the running containers' published ports (reconciling, so a missed
event or a reconnect cannot leave a stale forward) and:
- TCP: listens on the host at <bind address>:<HostPort>; each connection
  becomes a `direct-tcpip` channel to the guest's 127.0.0.1:<HostPort>,
  where the engine publishes the port.
- UDP: SSH cannot carry datagrams, so the machine manager's callback adds a
  QEMU user-net `hostfwd` for it instead.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from desktop.host_socket import ChannelPipe
from desktop.http_over_channel import HttpExchange, decode_json, iter_lines
from desktop.ssh_link import LinkError, SshLink, close_channel
from runtime.errors import DockyardError

log = logging.getLogger(__name__)

UdpForward = Callable[[str, int, int, bool], None]

# Container actions after which the set of published ports may change.
RECONCILE_ACTIONS = {"start", "restart", "die", "stop", "kill", "destroy", "unpause", "pause"}
EVENTS_PATH = "/events?filters=" + urllib.parse.quote(json.dumps({"type": ["container"]}))


@dataclass(frozen=True)
class PublishedPort:
    """One port published by a running container in the guest."""

    proto: str  # "tcp" or "udp"
    host_port: int
    guest_port: int


def published_ports(containers: list[dict]) -> set[PublishedPort]:
    """The published ports in a GET /containers/json answer (IPv4/IPv6 duplicates merged)."""
    ports: set[PublishedPort] = set()
    for c in containers:
        for p in c.get("Ports") or []:
            public = p.get("PublicPort")
            if not public:
                continue
            ports.add(PublishedPort(p.get("Type", "tcp"), int(public), int(public)))
    return ports


class _TcpListener:
    """Accepts host connections on one port and pipes each to the guest."""

    def __init__(self, link: SshLink, bind_address: str, port: PublishedPort) -> None:
        self.link = link
        self.port = port
        self.sock = socket.create_server((bind_address, port.host_port), reuse_port=False)
        self._pipes: set[ChannelPipe] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, name=f"fwd-tcp-{port.host_port}", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            chan = self.link.open_tcp("127.0.0.1", self.port.guest_port)
        except LinkError as exc:
            log.warning("port %d: cannot reach the guest: %s", self.port.host_port, exc)
            client.close()
            return
        pipe = ChannelPipe(client, chan, self._done)
        with self._lock:
            closed = self._closed
            if not closed:
                self._pipes.add(pipe)
        if closed:
            # Outside the lock: close() reports back through _done, which takes it too.
            pipe.abort()
            pipe.close()
            return
        pipe.start()

    def _done(self, pipe: ChannelPipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pipes = list(self._pipes)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for pipe in pipes:
            pipe.abort()


class PortForwarder:
    """Keeps host-side forwards in step with the guest's published ports."""

    def __init__(self, link: SshLink, udp_forward: UdpForward | None = None, *,
                 bind_address: str = "127.0.0.1", socket_path: str = "/run/dockyard/docker.sock",
                 retry_s: float = 1.0) -> None:
        self.link = link
        self.udp_forward = udp_forward
        self.bind_address = bind_address
        self.socket_path = socket_path
        self.retry_s = retry_s
        self.active: set[PublishedPort] = set()
        self.failed: dict[PublishedPort, str] = {}
        self._tcp: dict[PublishedPort, _TcpListener] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._events_chan: paramiko.Channel | None = None
        self._thread: threading.Thread | None = None
        self.reconcile_count = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="port-forwarder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        chan = self._events_chan
        if chan is not None:
            close_channel(chan)  # wakes the blocked event read
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._apply(set())

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                chan = self.link.open_streamlocal(self.socket_path)
                self._events_chan = chan
                if self._stop.is_set():
                    close_channel(chan)
                    return
                ex = HttpExchange(chan)
                ex.send("GET", EVENTS_PATH)
                if ex.read_head().status != 200:
                    raise LinkError(f"the guest engine refused {EVENTS_PATH}")
                # Subscribe first, then read the state: nothing falls in between.
                self.reconcile()
                for line in iter_lines(ex.iter_body()):
                    event = json.loads(line)
                    if event.get("Type", "container") == "container" and \
                            (event.get("Action") or event.get("status")) in RECONCILE_ACTIONS:
                        self.reconcile()
                if not self._stop.is_set():
                    log.info("guest event stream ended; resubscribing")
            except (DockyardError, OSError, EOFError, ValueError, paramiko.SSHException) as exc:
                if self._stop.is_set():
                    return
                log.warning("following guest events failed (%s); retrying in %.0f s", exc, self.retry_s)
                self._stop.wait(self.retry_s)
            except Exception:  # noqa: BLE001 - a bug must not silently end port forwarding
                log.exception("port forwarder failed; retrying in %.0f s", self.retry_s)
                self._stop.wait(self.retry_s)
            finally:
                if self._events_chan is not None:
                    close_channel(self._events_chan)
                    self._events_chan = None

    def reconcile(self) -> None:
        """Read the running containers' ports and add/remove forwards to match."""
        status, _, body = self.link.request("GET", "/containers/json", socket_path=self.socket_path)
        if status != 200:
            raise LinkError(f"GET /containers/json answered {status}")
        containers = decode_json(body)
        self._apply(published_ports(containers if isinstance(containers, list) else []))
        self.reconcile_count += 1

    def _apply(self, wanted: set[PublishedPort]) -> None:
        with self._lock:
            for port in sorted(self.active - wanted, key=lambda p: (p.proto, p.host_port)):
                self._remove(port)
            for port in sorted(wanted - self.active, key=lambda p: (p.proto, p.host_port)):
                self._add(port)
            for port in list(self.failed):
                if port not in wanted:
                    del self.failed[port]

    def _add(self, port: PublishedPort) -> None:
        try:
            if port.proto == "tcp":
                self._tcp[port] = _TcpListener(self.link, self.bind_address, port)
            elif port.proto == "udp" and self.udp_forward is not None:
                self.udp_forward("udp", port.host_port, port.guest_port, True)
            else:
                raise DockyardError(f"no way to forward {port.proto} ports")
        except Exception as exc:  # noqa: BLE001 - bind errors, or whatever the UDP callback raises
            # Usually the host port is taken by a host program: report, go on.
            if self.failed.get(port) is None:
                log.warning("cannot publish %s port %d on the host: %s", port.proto, port.host_port, exc)
            self.failed[port] = str(exc)
            return
        self.failed.pop(port, None)
        self.active.add(port)
        log.info("forwarding host %s:%d/%s to the guest", self.bind_address, port.host_port, port.proto)

    def _remove(self, port: PublishedPort) -> None:
        self.active.discard(port)
        if port.proto == "tcp":
            listener = self._tcp.pop(port, None)
            if listener is not None:
                listener.close()
        elif self.udp_forward is not None:
            try:
                self.udp_forward("udp", port.host_port, port.guest_port, False)
            except Exception as exc:  # noqa: BLE001 - the callback is the machine backend's code
                log.warning("removing the udp forward for %d failed: %s", port.host_port, exc)
        log.info("stopped forwarding %s port %d", port.proto, port.host_port)
