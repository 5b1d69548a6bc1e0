"""DNS wire format (RFC 1035): just enough to read a query and write the embedded resolver's answers.

The resolver answers A, AAAA, MX and PTR questions itself and passes every
other message through untouched, so only the header and the question section
are parsed; answers are built from scratch with the question name compressed
to a pointer at offset 12.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

TYPE_A = 1
TYPE_PTR = 12
TYPE_MX = 15
TYPE_AAAA = 28
TYPE_OPT = 41
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
_OPCODE_MASK = 0x7800

HEADER = struct.Struct("!HHHHHH")
CLASSIC_UDP_SIZE = 512
MAX_MESSAGE = 65535
_MAX_LABELS = 128  # a name has at most 127 labels; bounds loops over hostile pointers


class MalformedMessage(ValueError):
    """The bytes are not a DNS message we can answer."""


@dataclass(frozen=True)
class Query:
    """The parts of a query message the resolver acts on."""

    id: int
    flags: int
    qname: str  # as sent, without the trailing dot, case kept
    qtype: int
    qclass: int
    question: bytes  # the question section's bytes, echoed in the reply
    udp_size: int  # the largest UDP reply the client accepts (EDNS0, at least 512)

    @property
    def name(self) -> str:
        """The lookup key: DNS names compare case-insensitively."""
        return self.qname.lower()


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """(dotted name, offset just past it in the original position), following compression pointers."""
    labels: list[str] = []
    end = -1
    for _ in range(_MAX_LABELS):
        if offset >= len(data):
            raise MalformedMessage("name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise MalformedMessage("truncated compression pointer")
            if end < 0:
                end = offset + 2
            target = ((length & 0x3F) << 8) | data[offset + 1]
            if target >= offset:
                raise MalformedMessage("compression pointer does not point backwards")
            offset = target
            continue
        if length & 0xC0:
            raise MalformedMessage("unknown label type")
        offset += 1
        if length == 0:
            return ".".join(labels), (end if end >= 0 else offset)
        if offset + length > len(data):
            raise MalformedMessage("label runs past the message")
        labels.append(data[offset:offset + length].decode("ascii", "replace"))
        offset += length
    raise MalformedMessage("too many labels")


def encode_name(name: str) -> bytes:
    """A dotted name in wire format (no compression)."""
    out = bytearray()
    for label in name.strip(".").split("."):
        if not label:
            continue
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if len(raw) > 63:
            raise ValueError(f"label too long in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def _edns_udp_size(data: bytes, offset: int, counts: tuple[int, int, int]) -> int:
    """The UDP payload size of an OPT record in the additional section, or 512."""
    ancount, nscount, arcount = counts
    try:
        for index in range(ancount + nscount + arcount):
            _, offset = _read_name(data, offset)
            rtype, rclass, _, rdlength = struct.unpack_from("!HHIH", data, offset)
            offset += 10 + rdlength
            if index >= ancount + nscount and rtype == TYPE_OPT:
                return max(CLASSIC_UDP_SIZE, int(rclass))
    except (struct.error, MalformedMessage):
        pass  # a broken trailer does not spoil a readable question
    return CLASSIC_UDP_SIZE


def parse_query(data: bytes) -> Query:
    """The query in `data`; MalformedMessage if it is not a one-question query."""
    if len(data) < HEADER.size:
        raise MalformedMessage("shorter than a header")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise MalformedMessage("a response, not a query")
    if qdcount != 1:
        raise MalformedMessage(f"{qdcount} questions")
    qname, offset = _read_name(data, HEADER.size)
    if offset + 4 > len(data):
        raise MalformedMessage("question runs past the message")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question = data[HEADER.size:offset + 4]
    udp_size = _edns_udp_size(data, offset + 4, (ancount, nscount, arcount)) if arcount else CLASSIC_UDP_SIZE
    return Query(ident, flags, qname, qtype, qclass, question, udp_size)


def _reply_flags(query_flags: int, rcode: int) -> int:
    return FLAG_QR | (query_flags & (_OPCODE_MASK | FLAG_RD)) | FLAG_RA | (rcode & 0xF)


def build_reply(query: Query, answers: Sequence[tuple[int, bytes]] = (), *, rcode: int = RCODE_NOERROR,
                ttl: int = 600, max_size: int = MAX_MESSAGE) -> bytes:
    """A reply to `query` with answer records (type, rdata) named like the question.

    Records that do not fit `max_size` are dropped and TC is set, as Docker does.
    """
    # The question name starts right after the header: every answer points there.
    records = [struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl, len(rdata)) + rdata for rtype, rdata in answers]
    flags = _reply_flags(query.flags, rcode)
    size = HEADER.size + len(query.question)
    kept: list[bytes] = []
    for record in records:
        if size + len(record) > max_size:
            flags |= FLAG_TC
            break
        kept.append(record)
        size += len(record)
    header = HEADER.pack(query.id, flags, 1, len(kept), 0, 0)
    return header + query.question + b"".join(kept)


def error_reply(data: bytes, rcode: int) -> bytes | None:
    """A bare reply with `rcode` to whatever query `data` holds; None if no header can be read."""
    if len(data) < HEADER.size:
        return None
    ident, flags = struct.unpack_from("!HH", data)
    if flags & FLAG_QR:
        return None  # never answer a response: that is how reflection loops start
    return HEADER.pack(ident, _reply_flags(flags, rcode), 0, 0, 0, 0)


def address_record(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, bytes]:
    """An A or AAAA answer for one address."""
    return (TYPE_A if address.version == 4 else TYPE_AAAA), address.packed


def ptr_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a reverse-lookup name stands for (d.c.b.a.in-addr.arpa, nibbles.ip6.arpa)."""
    lowered = name.lower().rstrip(".")
    try:
        if lowered.endswith(".in-addr.arpa"):
            parts = lowered[: -len(".in-addr.arpa")].split(".")
            if len(parts) != 4:
                return None
            return ipaddress.IPv4Address(".".join(reversed(parts)))
        if lowered.endswith(".ip6.arpa"):
            nibbles = lowered[: -len(".ip6.arpa")].split(".")
            if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
                return None
            return ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None


@dataclass(frozen=True)
class ReplyHeader:
    """What the forwarder needs from an upstream's reply."""

    id: int
    rcode: int
    truncated: bool
    authoritative: bool


def parse_reply_header(data: bytes) -> ReplyHeader:
    """The header of a reply; MalformedMessage if `data` is not one."""
    if len(data) < HEADER.size:
        raise MalformedMessage("shorter than a header")
    ident, flags = struct.unpack_from("!HH", data)
    if not flags & FLAG_QR:
        raise MalformedMessage("a query, not a reply")
    return ReplyHeader(ident, flags & 0xF, bool(flags & FLAG_TC), bool(flags & FLAG_AA))


def question_of(data: bytes) -> bytes | None:
    """The raw question section of a message, for matching a reply to its query."""
    try:
        if HEADER.unpack_from(data)[2] != 1:
            return None
        _, offset = _read_name(data, HEADER.size)
    except (struct.error, MalformedMessage):
        return None
    return data[HEADER.size:offset + 4].lower() if offset + 4 <= len(data) else None
