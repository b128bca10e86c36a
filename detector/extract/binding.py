"""DHCP and ARP: the address bindings that tie a device's MAC, IP and hostname together.

DHCP is parsed with dpkt (these packets are rare, so its full decode costs nothing that
matters); ARP's fixed 28-byte Ethernet/IPv4 body is read directly. dpkt is imported at
the first DHCP packet (its package loads every protocol it knows, longer than a small
replay runs), or by ``preload`` in a live worker before it drops privileges.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

DHCP_OPT_HOSTNAME = 12
DHCP_OPT_REQUESTED_IP = 50
DHCP_OPT_MESSAGE_TYPE = 53
DHCP_ACK = 5
#: RFC 1035 bounds a host name to 255 octets; a longer option is junk, not a name.
MAX_HOSTNAME = 255


@dataclass(frozen=True, slots=True)
class Binding:
    """What one DHCP or ARP packet says about a device: its MAC, and its IP and/or name."""

    mac: str
    ip: str | None
    hostname: str | None


def format_mac(raw: bytes) -> str:
    return raw.hex(":")


def preload() -> None:
    """Import dpkt now."""
    import dpkt  # noqa: F401


def parse_dhcp(payload: bytes) -> Binding | None:
    """A DHCP client message (hostname, requested address) or server ACK (assigned address)."""
    import dpkt

    try:
        msg = dpkt.dhcp.DHCP(payload)
    except (dpkt.UnpackError, struct.error, IndexError, ValueError):
        return None
    if msg.hrd != 1 or msg.hln != 6 or len(msg.chaddr) < 6:
        return None
    options = dict(msg.opts)
    hostname = None
    raw_name = options.get(DHCP_OPT_HOSTNAME, b"")
    if 0 < len(raw_name) <= MAX_HOSTNAME:
        hostname = _hostname(raw_name)
    ip = None
    msg_type = options.get(DHCP_OPT_MESSAGE_TYPE, b"")
    if msg.op == dpkt.dhcp.DHCP_OP_REPLY:
        if msg_type == bytes([DHCP_ACK]) and msg.yiaddr:
            ip = socket.inet_ntoa(struct.pack(">I", msg.yiaddr))
    elif len(options.get(DHCP_OPT_REQUESTED_IP, b"")) == 4:
        ip = socket.inet_ntoa(options[DHCP_OPT_REQUESTED_IP])
    elif msg.ciaddr:
        ip = socket.inet_ntoa(struct.pack(">I", msg.ciaddr))
    if ip is None and hostname is None:
        return None
    return Binding(format_mac(msg.chaddr[:6]), ip, hostname)


def _hostname(raw: bytes) -> str | None:
    """The name a client gave itself, as one printable line: every byte that is not
    printable ASCII is written ``\\xNN``, so a name with control bytes cannot break the
    summary table or a report row (and cannot pass for another name there)."""
    text = raw.rstrip(b"\x00").decode("ascii", "backslashreplace")
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text.lower() or None


def parse_arp(body: bytes) -> Binding | None:
    """The sender's MAC and IPv4 address of an Ethernet/IPv4 ARP request or reply."""
    if len(body) < 28 or body[0:8] not in (b"\x00\x01\x08\x00\x06\x04\x00\x01", b"\x00\x01\x08\x00\x06\x04\x00\x02"):
        return None
    sender_ip = body[14:18]
    if sender_ip == b"\x00\x00\x00\x00":  # an address probe (RFC 5227) binds nothing yet
        return None
    return Binding(format_mac(body[8:14]), socket.inet_ntoa(sender_ip), None)
