"""Choosing a user network's subnet: Docker's default pools, minus everything in use.

Docker's local default pools are 172.17.0.0/16 … 172.31.0.0/16 (one /16 each) and
then 192.168.0.0/16 in /20 slices. A candidate is skipped if it overlaps a route of
this machine (the host's, or the guest's inside the VM), our default bridge, or
another network. `--default-address-pool` style overrides come in as `pools`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import Conflict, InvalidArgument

ROUTE_TABLE = Path("/proc/net/route")
DEFAULT_POOLS: tuple[tuple[str, int], ...] = tuple(
    [(f"172.{n}.0.0/16", 16) for n in range(17, 32)] + [("192.168.0.0/16", 20)])

Net = ipaddress.IPv4Network


def host_routes(route_table: Path = ROUTE_TABLE) -> list[Net]:
    """Destinations of this machine's IPv4 routes, default route left out."""
    routes: list[Net] = []
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(fields[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(fields[7], 16)))
        net = Net(f"{dest}/{mask}", strict=False)
        if net.prefixlen:
            routes.append(net)
    return routes


def candidates(pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> Iterator[Net]:
    for base, size in pools:
        yield from Net(base).subnets(new_prefix=size)


def choose_subnet(taken: Iterable[Net], pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> Net:
    """The first pool slice that overlaps nothing in `taken` (plus the host's routes)."""
    busy = list(taken) + host_routes()
    for net in candidates(pools):
        if not any(net.overlaps(other) for other in busy):
            return net
    raise InvalidArgument("could not find an available, non-overlapping IPv4 address pool "
                          "among the defaults to assign to the network")


def check_requested(subnet: str, gateway: str, ip_range: str,
                    taken: dict[str, Net]) -> tuple[Net, str, str]:
    """Validate --subnet/--gateway/--ip-range as dockerd does: (subnet, gateway, ip_range)."""
    try:
        net = Net(subnet, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid CIDR address: {subnet}") from None
    if net.num_addresses < 4:
        raise InvalidArgument(f"invalid subnet {subnet}: too small for a gateway and containers")
    for other in taken.values():
        if net.overlaps(other):
            raise Conflict("Pool overlaps with other one on this address space")
    if gateway:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise InvalidArgument(f"invalid gateway address {gateway}") from None
        if gw not in net:
            raise InvalidArgument(f"no matching subnet for gateway {gateway}")
    else:
        gw = net.network_address + 1
    rng = ""
    if ip_range:
        try:
            r = Net(ip_range, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid CIDR address: {ip_range}") from None
        if not r.subnet_of(net):
            raise InvalidArgument(f"no matching subnet for range {ip_range}")
        rng = str(r)
    return net, str(gw), rng
