"""Link, VLAN, IP and transport headers: from a captured frame to a ``Packet``.

Pure functions over bytes. Only the headers are read; the transport payload is handed
on as a slice for the extractors. Every way a frame can be dropped here is counted in
the ``stats`` counter the caller passes, under ``skip.<reason>``.

Supported: Ethernet II with any stack of 802.1Q / 802.1ad / QinQ tags, MPLS and PPPoE
session frames, Linux cooked SLL and SLL2, raw IPv4/IPv6, BSD null/loopback, PPP, Linux
NFLOG; IPv4 with
options, IPv6 with extension headers; IP-in-IP, GRE, VXLAN and GTP-U tunnels (the inner packet
is what a device sent). Non-first IP fragments carry no transport header and are counted
and skipped; first fragments are decoded with the bytes they carry.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import NamedTuple

from detector.counters import (
    SKIP_BAD_IP, SKIP_BAD_TCP, SKIP_NON_FIRST_FRAGMENT, SKIP_NON_IP, SKIP_OTHER_TRANSPORT, SKIP_SHORT_FRAME,
    SKIP_UNKNOWN_LINKTYPE,
)

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_PPP,
        LINKTYPE_NFLOG,
        LINKTYPE_RAW,
        LINKTYPE_RAW_OPENBSD,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
ETH_VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})
ETH_MPLS = frozenset({0x8847, 0x8848})
ETH_PPPOE_SESSION = 0x8864
ETH_TRANSPARENT_BRIDGING = 0x6558
PPP_IPV4 = b"\x00\x21"
PPP_IPV6 = b"\x00\x57"
NFULA_PAYLOAD = 9

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
#: Neighbour solicitations and advertisements (RFC 4861): they bind a MAC to an IPv6 address.
ICMPV6_NEIGHBOR_TYPES = frozenset({135, 136})
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
IPV6_EXTENSION_HEADERS = frozenset({0, 43, 60, 135, 139, 140})
IPV6_FRAGMENT = 44
IPV6_AH = 51
VXLAN_PORT = 4789
GTP_U_PORT = 2152
GTP_G_PDU = 0xFF
#: Tunnels inside tunnels are legal but rare; this bounds the work a crafted frame can cause.
MAX_ENCAPSULATION = 3
# One unpack per header instead of a slice and int.from_bytes per field.
_IPV4 = struct.Struct("!BxHxxHxB")  # version/IHL, total length, flags/fragment offset, protocol
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HHIxxxxBB")  # ports, sequence number, data offset, flags


class Packet(NamedTuple):
    """The headers of one TCP or UDP packet (or an ARP body, with ``l4 == 0``, or an
    ICMPv6 neighbour solicitation or advertisement, with ``l4 == IPPROTO_ICMPV6``).

    Addresses are kept as raw bytes: formatting them costs time and only the few
    packets that produce an observation need the text form.
    """

    src_mac: bytes | None
    dst_mac: bytes | None
    vlan: int | None
    src_ip: bytes
    dst_ip: bytes
    l4: int
    sport: int
    dport: int
    seq: int
    flags: int
    payload: bytes


ARP = 0


def decode(linktype: int, frame: bytes, stats: Counter[str]) -> Packet | None:
    """Decode one frame; None (counted) when it carries nothing an extractor reads."""
    src_mac = dst_mac = None
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        dst_mac, src_mac = frame[0:6], frame[6:12]
        return _ethernet_payload(frame, 12, src_mac, dst_mac, None, stats, 0)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW_OPENBSD):
        return _ip(frame, 0, None, None, None, stats, 0)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        # The address field is the sender's; for an Ethernet device that is its MAC.
        if frame[2:4] == b"\x00\x01" and frame[4:6] == b"\x00\x06":
            src_mac = frame[6:12]
        return _ethernet_payload(frame, 14, src_mac, None, None, stats, 0)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        if frame[8:10] == b"\x00\x01" and frame[11] == 6:
            src_mac = frame[12:18]
        return _ethertype(frame, int.from_bytes(frame[0:2], "big"), 20, src_mac, None, None, stats, 0)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        family = int.from_bytes(frame[0:4], "big" if linktype == LINKTYPE_LOOP else "little")
        if family > 0xFFFF:  # written on a host of the other byte order
            family = int.from_bytes(frame[0:4], "little" if linktype == LINKTYPE_LOOP else "big")
        if family == 2 or family in (10, 24, 28, 30):
            return _ip(frame, 4, None, None, None, stats, 0)
        stats[SKIP_NON_IP] += 1
        return None
    if linktype == LINKTYPE_PPP:
        pos = 2 if frame[:2] == b"\xff\x03" else 0  # address and control, unless compressed away
        if frame[pos : pos + 2] in (PPP_IPV4, PPP_IPV6):
            return _ip(frame, pos + 2, None, None, None, stats, 0)
        stats[SKIP_NON_IP] += 1
        return None
    if linktype == LINKTYPE_NFLOG:
        return _nflog(frame, stats)
    stats[SKIP_UNKNOWN_LINKTYPE] += 1
    return None


def _nflog(frame: bytes, stats: Counter[str]) -> Packet | None:
    """Linux NFLOG: a 4-byte header, then TLVs in host byte order; the packet is NFULA_PAYLOAD."""
    pos, end = 4, len(frame)
    while pos + 4 <= end:
        length = int.from_bytes(frame[pos : pos + 2], "little")
        if length < 4:
            break
        if int.from_bytes(frame[pos + 2 : pos + 4], "little") & 0x7FFF == NFULA_PAYLOAD:
            return _ip(frame[: pos + length], pos + 4, None, None, None, stats, 0)
        pos += (length + 3) & ~3
    stats[SKIP_NON_IP] += 1
    return None


def _gtp_u_payload(frame: bytes, pos: int, end: int) -> int | None:
    """Offset of the user's IP packet in a GTPv1-U G-PDU (mobile and CAPWAP-style backhaul)."""
    if pos + 8 > end or frame[pos] >> 5 != 1 or frame[pos + 1] != GTP_G_PDU:
        return None
    flags = frame[pos]
    pos += 8
    if flags & 0x07:  # sequence number, N-PDU number and next extension type follow
        if pos + 4 > end:
            return None
        next_type = frame[pos + 3]
        pos += 4
        while next_type:  # each extension header: length in 4-byte units, last byte = next type
            if pos >= end or not frame[pos]:
                return None
            length = frame[pos] * 4
            if pos + length > end:
                return None
            next_type = frame[pos + length - 1]
            pos += length
    return pos


def _ethernet_payload(
    frame: bytes, pos: int, src_mac: bytes | None, dst_mac: bytes | None, vlan: int | None,
    stats: Counter[str], depth: int,
) -> Packet | None:
    """Walk VLAN tags from the ethertype at ``pos``; the innermost tag is the segment's VLAN."""
    end = len(frame)
    while True:
        if pos + 2 > end:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        ethertype = frame[pos] << 8 | frame[pos + 1]
        if ethertype in ETH_VLAN_TAGS:
            if pos + 6 > end:
                stats[SKIP_SHORT_FRAME] += 1
                return None
            vlan = (frame[pos + 2] & 0x0F) << 8 | frame[pos + 3]
            pos += 4
            continue
        return _ethertype(frame, ethertype, pos + 2, src_mac, dst_mac, vlan, stats, depth)


def _ethertype(
    frame: bytes, ethertype: int, pos: int, src_mac: bytes | None, dst_mac: bytes | None,
    vlan: int | None, stats: Counter[str], depth: int,
) -> Packet | None:
    if ethertype == ETH_IPV4 or ethertype == ETH_IPV6:
        return _ip(frame, pos, src_mac, dst_mac, vlan, stats, depth)
    if ethertype == ETH_ARP:
        return Packet(src_mac, dst_mac, vlan, b"", b"", ARP, 0, 0, 0, 0, frame[pos:])
    if ethertype in ETH_MPLS:
        while pos + 4 <= len(frame):
            bottom = frame[pos + 2] & 0x01
            pos += 4
            if bottom:
                return _ip(frame, pos, src_mac, dst_mac, vlan, stats, depth)
        stats[SKIP_SHORT_FRAME] += 1
        return None
    if ethertype == ETH_PPPOE_SESSION:
        if pos + 8 <= len(frame) and frame[pos + 6 : pos + 8] in (PPP_IPV4, PPP_IPV6):
            return _ip(frame, pos + 8, src_mac, dst_mac, vlan, stats, depth)
    stats[SKIP_NON_IP] += 1
    return None


def _ip(
    frame: bytes, pos: int, src_mac: bytes | None, dst_mac: bytes | None, vlan: int | None,
    stats: Counter[str], depth: int,
) -> Packet | None:
    if pos >= len(frame):
        stats[SKIP_SHORT_FRAME] += 1
        return None
    version = frame[pos] >> 4
    if version == 4:
        if pos + 20 > len(frame):
            stats[SKIP_SHORT_FRAME] += 1
            return None
        version_ihl, total, fragment, proto = _IPV4.unpack_from(frame, pos)
        ihl = (version_ihl & 0x0F) * 4
        if ihl < 20 or total < ihl:
            stats[SKIP_BAD_IP] += 1
            return None
        if fragment & 0x1FFF:
            stats[SKIP_NON_FIRST_FRAGMENT] += 1
            return None
        src, dst = frame[pos + 12 : pos + 16], frame[pos + 16 : pos + 20]
        end = min(len(frame), pos + total)  # drops Ethernet padding
        pos += ihl
    elif version == 6:
        if pos + 40 > len(frame):
            stats[SKIP_SHORT_FRAME] += 1
            return None
        proto = frame[pos + 6]
        src, dst = frame[pos + 8 : pos + 24], frame[pos + 24 : pos + 40]
        end = min(len(frame), pos + 40 + int.from_bytes(frame[pos + 4 : pos + 6], "big"))
        pos += 40
        while proto in IPV6_EXTENSION_HEADERS or proto == IPV6_FRAGMENT or proto == IPV6_AH:
            if pos + 8 > end:
                stats[SKIP_BAD_IP] += 1
                return None
            if proto == IPV6_FRAGMENT:
                if int.from_bytes(frame[pos + 2 : pos + 4], "big") & 0xFFF8:
                    stats[SKIP_NON_FIRST_FRAGMENT] += 1
                    return None
                length = 8
            elif proto == IPV6_AH:
                length = (frame[pos + 1] + 2) * 4
            else:
                length = (frame[pos + 1] + 1) * 8
            proto = frame[pos]
            pos += length
    else:
        stats[SKIP_NON_IP] += 1
        return None

    if proto == IPPROTO_UDP:
        if pos + 8 > end:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        sport, dport = _PORTS.unpack_from(frame, pos)
        if dport == VXLAN_PORT and depth < MAX_ENCAPSULATION and pos + 16 + 14 <= end:
            inner = pos + 16
            return _ethernet_payload(
                frame[:end], inner + 12, frame[inner + 6 : inner + 12], frame[inner : inner + 6],
                vlan, stats, depth + 1,
            )
        if dport == GTP_U_PORT and depth < MAX_ENCAPSULATION:
            inner = _gtp_u_payload(frame, pos + 8, end)
            if inner is not None:
                return _ip(frame[:end], inner, src_mac, dst_mac, vlan, stats, depth + 1)
        return Packet(src_mac, dst_mac, vlan, src, dst, IPPROTO_UDP, sport, dport, 0, 0, frame[pos + 8 : end])
    if proto == IPPROTO_TCP:
        if pos + 20 > end:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        sport, dport, seq, offset, flags = _TCP.unpack_from(frame, pos)
        offset = (offset >> 4) * 4
        if offset < 20:
            stats[SKIP_BAD_TCP] += 1
            return None
        return Packet(src_mac, dst_mac, vlan, src, dst, IPPROTO_TCP, sport, dport, seq, flags, frame[pos + offset : end])
    if proto == IPPROTO_ICMPV6 and version == 6 and pos < end and frame[pos] in ICMPV6_NEIGHBOR_TYPES:
        return Packet(src_mac, dst_mac, vlan, src, dst, IPPROTO_ICMPV6, 0, 0, 0, 0, frame[pos:end])
    if depth < MAX_ENCAPSULATION:
        if proto == IPPROTO_IPIP or proto == IPPROTO_IPV6:
            return _ip(frame[:end], pos, src_mac, dst_mac, vlan, stats, depth + 1)
        if proto == IPPROTO_GRE and pos + 4 <= end:
            flags = frame[pos]
            header = 4 + 4 * (bool(flags & 0x80) + bool(flags & 0x20) + bool(flags & 0x10))
            ethertype = int.from_bytes(frame[pos + 2 : pos + 4], "big")
            if ethertype == ETH_TRANSPARENT_BRIDGING:
                inner = pos + header
                return _ethernet_payload(
                    frame[:end], inner + 12, frame[inner + 6 : inner + 12], frame[inner : inner + 6],
                    vlan, stats, depth + 1,
                )
            return _ethertype(frame[:end], ethertype, pos + header, src_mac, dst_mac, vlan, stats, depth + 1)
    stats[SKIP_OTHER_TRANSPORT] += 1
    return None
