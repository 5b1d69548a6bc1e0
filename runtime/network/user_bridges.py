"""A user network's bridge and iptables chains, made real on this machine and undone.

The bridge (`br-<id12>` or the name the user chose) holds the gateway address with a
MAC derived from it; the chains `DOCKYARD-<id12>` (nat_rules.py) give Docker's
isolation between networks, masquerading and `enable_icc`. Everything here is
idempotent: engine start realises every recorded network again.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from ..errors import Conflict, InvalidArgument
from ..linux.netlink import NetlinkSocket
from . import nat_rules
from .network_store import NetworkRecord

BRIDGE_NF_CALL_IPTABLES = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def mac_for_ip(ip: str) -> str:
    """Docker's scheme: 02:42 then the address's four bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def chain_name(record: NetworkRecord) -> str:
    return f"DOCKYARD-{record.id[:12]}"


def realise(record: NetworkRecord, default_bridge: str) -> None:
    """Bridge with the gateway address, up; iptables chains. Idempotent (engine start)."""
    net = ipaddress.IPv4Network(record.subnet)
    with NetlinkSocket() as nl:
        nl.create_bridge(record.bridge)
        link = nl.link(record.bridge)
        if link is None or link.kind != "bridge":
            raise Conflict(f"{record.bridge} exists but is not a bridge")
        nl.batch([nl.set_link_msg(link.index, mac=mac_for_ip(record.gateway))])
        nl.add_address(link.index, record.gateway, net.prefixlen, exist_ok=True)
        nl.set_link(link.index, up=True)
    # Other user networks drop what enters them from here in their own chains; the
    # default bridge's chain accepts everything, so that direction is dropped here.
    nat_rules.install_network(chain_name(record), record.bridge, record.subnet,
                              internal=record.internal, icc=record.icc, masquerade=record.masquerade,
                              other_bridges=(default_bridge,))


def unrealise(record: NetworkRecord) -> None:
    """The chains and the bridge (its ports go with it)."""
    nat_rules.uninstall_network(chain_name(record))
    with NetlinkSocket() as nl:
        nl.delete_link(name=record.bridge)


def bridge_traffic_through_iptables(option: str) -> None:
    """enable_icc=false drops traffic between ports of one bridge in FORWARD, which sees
    bridged frames only with br_netfilter on (as dockerd turns it on); refused by name
    when the kernel cannot."""
    if not BRIDGE_NF_CALL_IPTABLES.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True)
    try:
        if BRIDGE_NF_CALL_IPTABLES.read_text().strip() != "1":
            BRIDGE_NF_CALL_IPTABLES.write_text("1\n")
    except OSError as err:
        raise InvalidArgument(f"{option}=false cannot be honoured here: bridged traffic does not pass "
                              f"through iptables (br_netfilter: {err.strerror})") from None
