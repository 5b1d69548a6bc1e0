"""A small rtnetlink client (NETLINK_ROUTE over a raw socket): links, veths, addresses, routes.

Only what container networking needs. A socket is bound to the network namespace of
the thread that created it, which lets one process configure many namespaces without
switching: open a socket inside a namespace once, keep using it from any thread.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from dataclasses import dataclass, field

# netlink message header and flags (linux/netlink.h)
_NLMSG_HDR = struct.Struct("=IHHII")
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3

# rtnetlink message types (linux/rtnetlink.h)
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24

# struct ifinfomsg and its attributes (linux/if_link.h)
_IFINFOMSG = struct.Struct("=BxHiII")
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
NLA_F_NESTED = 0x8000

# struct ifaddrmsg (linux/if_addr.h)
_IFADDRMSG = struct.Struct("=BBBBI")
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4

# struct rtmsg (linux/rtnetlink.h)
_RTMSG = struct.Struct("=BBBBBBBBI")
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_RTA_HDR = struct.Struct("=HH")


class NetlinkError(OSError):
    """The kernel refused a request; `errno` is the kernel's error number."""


@dataclass
class LinkInfo:
    """One network interface as RTM_GETLINK reports it."""

    index: int
    name: str
    flags: int
    master: int = 0
    kind: str = ""
    mac: str = ""
    attrs: dict[int, bytes] = field(default_factory=dict, repr=False)


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """Encode one rtattr (header + payload, padded to 4 bytes)."""
    length = _RTA_HDR.size + len(payload)
    return _RTA_HDR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def attr_nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Decode a run of rtattrs into {type: payload} (nested flag stripped)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + _RTA_HDR.size <= len(data):
        length, kind = _RTA_HDR.unpack_from(data, pos)
        if length < _RTA_HDR.size:
            break
        out[kind & ~NLA_F_NESTED] = data[pos + _RTA_HDR.size:pos + length]
        pos += _align(length)
    return out


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def _mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


class NetlinkSocket:
    """A NETLINK_ROUTE socket; requests are serialised by a lock so threads may share it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transport -----------------------------------------------------------
    def _frame(self, msg_type: int, flags: int, body: bytes) -> tuple[int, bytes]:
        self._seq += 1
        return self._seq, _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), msg_type, flags, self._seq, 0) + body

    def _receive(self) -> list[tuple[int, int, int, bytes]]:
        data = self._sock.recv(1 << 16)
        out = []
        pos = 0
        while pos + _NLMSG_HDR.size <= len(data):
            length, msg_type, flags, seq, _pid = _NLMSG_HDR.unpack_from(data, pos)
            out.append((msg_type, flags, seq, data[pos + _NLMSG_HDR.size:pos + length]))
            pos += _align(length)
        return out

    def batch(self, requests: list[tuple[int, int, bytes]],
              ignore: tuple[int, ...] = ()) -> None:
        """Send several (type, flags, body) requests in one write and check every ack.

        Errors whose errno is in `ignore` (e.g. EEXIST) count as success; the first
        other error is raised after all acks have been read, so the socket stays in step.
        """
        with self._lock:
            pending: dict[int, int] = {}
            frames = []
            for msg_type, flags, body in requests:
                seq, frame = self._frame(msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, body)
                pending[seq] = msg_type
                frames.append(frame)
            self._sock.sendall(b"".join(frames))
            first_error: NetlinkError | None = None
            while pending:
                for msg_type, _flags, seq, payload in self._receive():
                    if msg_type != NLMSG_ERROR or seq not in pending:
                        continue
                    del pending[seq]
                    code = -struct.unpack_from("=i", payload)[0]
                    if code and code not in ignore and first_error is None:
                        first_error = NetlinkError(code, f"netlink: {os.strerror(code)}")
            if first_error is not None:
                raise first_error

    def request(self, msg_type: int, flags: int, body: bytes, ignore: tuple[int, ...] = ()) -> None:
        self.batch([(msg_type, flags, body)], ignore)

    def dump(self, msg_type: int, body: bytes) -> list[tuple[int, bytes]]:
        """A NLM_F_DUMP request: every (type, payload) until NLMSG_DONE."""
        with self._lock:
            seq, frame = self._frame(msg_type, NLM_F_REQUEST | NLM_F_DUMP, body)
            self._sock.sendall(frame)
            out: list[tuple[int, bytes]] = []
            while True:
                for rtype, _flags, rseq, payload in self._receive():
                    if rseq != seq:
                        continue
                    if rtype == NLMSG_DONE:
                        return out
                    if rtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code:
                            raise NetlinkError(code, f"netlink dump: {os.strerror(code)}")
                        continue
                    out.append((rtype, payload))

    # links ---------------------------------------------------------------
    def links(self) -> list[LinkInfo]:
        result = []
        for _rtype, payload in self.dump(RTM_GETLINK, ifinfo()):
            _fam, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
            attrs = parse_attrs(payload[_IFINFOMSG.size:])
            kind = ""
            if IFLA_LINKINFO in attrs:
                kind = parse_attrs(attrs[IFLA_LINKINFO]).get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
            master = struct.unpack("=I", attrs[IFLA_MASTER])[0] if IFLA_MASTER in attrs else 0
            result.append(LinkInfo(index=index, name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
                                   flags=flags, master=master, kind=kind,
                                   mac=_mac_str(attrs.get(IFLA_ADDRESS, b"")), attrs=attrs))
        return result

    def link(self, name: str) -> LinkInfo | None:
        for info in self.links():
            if info.name == name:
                return info
        return None

    def create_bridge(self, name: str) -> None:
        """Create a bridge; an existing one of that name is left as is."""
        body = ifinfo() + attr_str(IFLA_IFNAME, name) + attr_nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, ignore=(errno.EEXIST,))

    def create_veth(self, name: str, peer_name: str, peer_netns_fd: int | None = None,
                    master: int = 0, up: bool = False, mtu: int = 0) -> None:
        """One veth pair: `name` here (optionally enslaved and up), `peer_name` in `peer_netns_fd`;
        both ends get `mtu` when it is given."""
        peer_attrs = attr_str(IFLA_IFNAME, peer_name)
        if peer_netns_fd is not None:
            peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        if mtu:
            peer_attrs += attr_u32(IFLA_MTU, mtu)
        body = ifinfo(flags=IFF_UP if up else 0, change=IFF_UP if up else 0) + attr_str(IFLA_IFNAME, name)
        if mtu:
            body += attr_u32(IFLA_MTU, mtu)
        if master:
            body += attr_u32(IFLA_MASTER, master)
        body += attr_nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                            attr_nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, ifinfo() + peer_attrs)))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_link_msg(self, index: int, up: bool | None = None, mac: str | None = None,
                     name: str | None = None, master: int | None = None) -> tuple[int, int, bytes]:
        """The request that changes a link; pass it to batch() or set_link()."""
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        body = ifinfo(index, flags, change)
        if mac is not None:
            body += attr(IFLA_ADDRESS, mac_bytes(mac))
        if name is not None:
            body += attr_str(IFLA_IFNAME, name)
        if master is not None:
            body += attr_u32(IFLA_MASTER, master)
        return RTM_NEWLINK, 0, body

    def set_link(self, index: int, up: bool | None = None, mac: str | None = None,
                 name: str | None = None, master: int | None = None) -> None:
        """Change a link now; see set_link_msg."""
        self.batch([self.set_link_msg(index, up=up, mac=mac, name=name, master=master)])

    def delete_link(self, index: int = 0, name: str | None = None) -> bool:
        """Delete a link by index or name; False if it did not exist."""
        body = ifinfo(index) + (attr_str(IFLA_IFNAME, name) if name else b"")
        try:
            self.request(RTM_DELLINK, 0, body)
        except NetlinkError as err:
            if err.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # addresses and routes --------------------------------------------------
    @staticmethod
    def add_address_msg(index: int, address: str, prefix_len: int) -> tuple[int, int, bytes]:
        ip = ipaddress.IPv4Address(address)
        net = ipaddress.IPv4Network(f"{address}/{prefix_len}", strict=False)
        body = (_IFADDRMSG.pack(socket.AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE, index)
                + attr(IFA_LOCAL, ip.packed) + attr(IFA_ADDRESS, ip.packed))
        if prefix_len < 31:
            body += attr(IFA_BROADCAST, net.broadcast_address.packed)
        return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body

    def add_address(self, index: int, address: str, prefix_len: int, exist_ok: bool = False) -> None:
        self.batch([self.add_address_msg(index, address, prefix_len)],
                   ignore=(errno.EEXIST,) if exist_ok else ())

    def addresses(self, index: int) -> list[tuple[str, int]]:
        """IPv4 (address, prefix) pairs on link `index`."""
        out = []
        for _rtype, payload in self.dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
            _fam, prefix, _flags, _scope, link_index = _IFADDRMSG.unpack_from(payload)
            if link_index != index:
                continue
            attrs = parse_attrs(payload[_IFADDRMSG.size:])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                out.append((str(ipaddress.IPv4Address(raw)), prefix))
        return out

    @staticmethod
    def default_route_msg(gateway: str, oif: int = 0) -> tuple[int, int, bytes]:
        body = (_RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                            RTN_UNICAST, 0)
                + attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed))
        if oif:
            body += attr_u32(RTA_OIF, oif)
        return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body
