"""Forwarding to upstream nameservers: what the embedded DNS server does with names it does not know.

An upstream is asked from the agent's namespace when it is one of the engine's own
loopback nameservers, else from the container's namespace (a socket made there
stays there), as Docker does. At most three upstreams are tried, moving on after
SERVFAIL, REFUSED, a non-authoritative NXDOMAIN or a timeout; the last reply is
passed through. A truncated UDP reply is asked again over TCP.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..linux.netns import run_in_netns
from . import dns_message as msg

log = logging.getLogger(__name__)

DNS_PORT = 53
MAX_UPSTREAMS = 3
UPSTREAM_TIMEOUT = 4.0
FALLBACK_UPSTREAMS = ("8.8.8.8", "8.8.4.4")  # Docker's default when the host names none


@dataclass(frozen=True)
class Upstream:
    """An upstream nameserver, asked from the agent's namespace (`from_host`) or the container's."""

    address: str
    port: int = DNS_PORT
    from_host: bool = False

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ipaddress.ip_address(self.address).version == 6 else socket.AF_INET

    @classmethod
    def parse(cls, text: str, *, engine_side: bool = False) -> Upstream:
        """"1.2.3.4", "1.2.3.4:5353", "::1" or "[::1]:5353".

        The engine's own loopback nameservers (`engine_side`) are asked from the
        agent's namespace, where they listen; a container's `--dns 127.0.0.1` means
        a server inside the container, as in Docker.
        """
        text = text.strip()
        address, port = text, DNS_PORT
        if text.startswith("["):
            address, _, rest = text[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:]) if rest[1:].isdigit() else -1
        elif text.count(":") == 1:
            address, _, port_text = text.partition(":")
            port = int(port_text) if port_text.isdigit() else -1
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise InvalidArgument(f"{text!r} is not an IP address of a DNS server") from None
        if not 0 < port < 65536:
            raise InvalidArgument(f"invalid port in DNS server {text!r}")
        return cls(str(parsed), port, engine_side and parsed.is_loopback)


def upstreams_from_resolv_conf(text: str) -> list[Upstream]:
    """The nameservers of a resolv.conf, Docker's public fallback if it names none."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                found.append(Upstream.parse(fields[1], engine_side=True))
            except InvalidArgument:
                log.warning("ignoring nameserver %r in resolv.conf", fields[1])
    return found or [Upstream(addr) for addr in FALLBACK_UPSTREAMS]


def ask_upstreams(upstreams: list[Upstream], netns_fd: int, query: msg.Query, data: bytes, tcp: bool,
                  timeout: float) -> bytes:
    """The reply to pass on: the first good one of at most three upstreams, else the last."""
    last: bytes | None = None
    for upstream in upstreams:
        try:
            answer = _exchange(netns_fd, upstream, data, tcp, timeout)
            header = msg.parse_reply_header(answer)
            if header.truncated and not tcp:
                # Ask again over TCP; if even that is too big for the client's UDP
                # buffer, the truncated reply tells it to come back over TCP.
                try:
                    full = _exchange(netns_fd, upstream, data, True, timeout)
                    if len(full) <= query.udp_size:
                        answer, header = full, msg.parse_reply_header(full)
                except (OSError, msg.MalformedMessage) as err:
                    log.debug("DNS server: TCP retry with %s for %s: %s", upstream.address, query.qname, err)
        except (OSError, msg.MalformedMessage) as err:
            log.debug("DNS server: upstream %s for %s: %s", upstream.address, query.qname, err)
            continue
        last = answer
        if header.rcode == msg.RCODE_NOERROR:
            break
        if header.rcode == msg.RCODE_NXDOMAIN and header.authoritative:
            break
    return last if last is not None else msg.build_reply(query, rcode=msg.RCODE_SERVFAIL)

def _upstream_socket(netns_fd: int, upstream: Upstream, kind: int) -> socket.socket:
    if upstream.from_host:
        return socket.socket(upstream.family, kind)
    return run_in_netns(netns_fd, lambda: socket.socket(upstream.family, kind))

def _exchange(netns_fd: int, upstream: Upstream, data: bytes, tcp: bool, timeout: float) -> bytes:
    """One query and its reply with one upstream; OSError on timeout or failure."""
    deadline = time.monotonic() + timeout
    with _upstream_socket(netns_fd, upstream,
                               socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((upstream.address, upstream.port))
        if tcp:
            sock.sendall(struct.pack("!H", len(data)) + data)
            length = struct.unpack("!H", _recv_exact(sock, 2))[0]
            return _recv_exact(sock, length)
        sock.send(data)
        wanted_id, wanted_question = data[:2], msg.question_of(data)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply")
            sock.settimeout(remaining)
            answer = sock.recv(msg.MAX_MESSAGE)
            # A connected socket only hears from the upstream; still, a late reply
            # to an earlier query must not be taken for this one.
            question = msg.question_of(answer)
            if answer[:2] == wanted_id and question in (None, wanted_question):
                return answer


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            raise ConnectionError("upstream closed the connection")
        out += chunk
    return bytes(out)
