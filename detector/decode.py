"""Link, VLAN, IP and transport headers: from a captured frame to a ``Packet``.

Pure functions over bytes. Only the headers are read; the transport payload is handed
on as a slice for the extractors. Every way a frame can be dropped here is counted in
the ``stats`` counter the caller passes, under ``skip.<reason>``.

Supported: Ethernet II with any stack of 802.1Q / 802.1ad / QinQ tags, MPLS and PPPoE
session frames, Linux cooked SLL and SLL2, raw IPv4/IPv6, BSD null/loopback, PPP, Linux
NFLOG; Cisco VN-Tag and IEEE 802.1BR E-Tag; IPv4 with options, IPv6 with extension headers.

Tunnels are opened and the inner packet is what a device sent: IP-in-IP, GRE (with
transparent Ethernet bridging), ERSPAN types I, II and III (GRE protocols 0x88BE and
0x22EB: a switch's remote SPAN), Aruba's GRE (an Aruba controller's 802.11 frames), and
over UDP, by port (``UdpTunnels``, defaults ``UDP_TUNNEL_PORTS``): VXLAN (cloud traffic
mirrors), Geneve (cloud gateway load balancers), GTP-U (mobile backhaul), TZSP (small
routers' packet streams, Ethernet or 802.11 inside), GRE-in-UDP, and CAPWAP data
(enterprise Wi-Fi: the access points' 802.11 frames carried to the controller). For 802.11
frames the device's MAC is read from the 802.11 addresses, so a phone is the phone and not
its access point. CAPWAP control is counted and skipped. A UDP datagram on a tunnel port whose
header does not hold is read as the plain datagram it then is.

Non-first IP fragments carry no transport header and are counted and skipped; first
fragments are decoded with the bytes they carry.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from detector.counters import (
    SKIP_BAD_IP, SKIP_BAD_TCP, SKIP_CAPWAP_CONTROL, SKIP_NON_FIRST_FRAGMENT, SKIP_NON_IP, SKIP_OTHER_TRANSPORT,
    SKIP_SHORT_FRAME, SKIP_UNKNOWN_LINKTYPE,
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
#: Cisco VN-Tag and IEEE 802.1BR E-Tag: a tag between the MACs and the ethertype, like 802.1Q's
#: but longer (the tag's own ethertype included).
ETH_LONG_TAGS = {0x8926: 6, 0x893F: 8}
ETH_ERSPAN_II = 0x88BE  # type I too, when the GRE header has no sequence number
ETH_ERSPAN_III = 0x22EB
#: Aruba controllers' GRE protocol types, each an 802.11 frame inside: 0x8200..0x8370 by 0x10, and 0x9000.
ARUBA_FIRST, ARUBA_LAST, ARUBA_OTHER = 0x8200, 0x8370, 0x9000
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
GTP_G_PDU = 0xFF
#: The UDP tunnels, by the codes the C skim shares (skim_c/triage.c); CAPWAP is matched on
#: either port (the controller answers from 5246/5247 to the access point's port), the others
#: on the destination port.
VXLAN, GTP_U, GENEVE, CAPWAP, CAPWAP_CONTROL, TZSP, GRE_IN_UDP = 1, 2, 3, 4, 5, 6, 7
UDP_TUNNEL_NAMES = {"vxlan": VXLAN, "gtp-u": GTP_U, "geneve": GENEVE, "capwap": CAPWAP,
                    "capwap-control": CAPWAP_CONTROL, "tzsp": TZSP, "gre-in-udp": GRE_IN_UDP}
#: IANA's ports (VXLAN 4789, GTP-U 2152, Geneve 6081, CAPWAP 5246/5247, TZSP 37008, GRE-in-UDP 4754).
UDP_TUNNEL_PORTS = {VXLAN: 4789, GTP_U: 2152, GENEVE: 6081, CAPWAP: 5247, CAPWAP_CONTROL: 5246, TZSP: 37008,
                    GRE_IN_UDP: 4754}
EITHER_PORT = frozenset({CAPWAP, CAPWAP_CONTROL})
#: A source port opens CAPWAP only towards a port at or above this one (an access point's
#: ephemeral port): a client whose own port happens to be 5246 or 5247 still reaches its
#: resolver on 53 as itself.
FIRST_UNPRIVILEGED_PORT = 1024
#: Which tunnel a UDP port opens: port -> code.
UdpTunnels = Mapping[int, int]
TZSP_ETHERNET, TZSP_80211 = 1, 18
TZSP_PADDING, TZSP_END = 0, 1
CAPWAP_WBID_80211 = 1
LLC_SNAP = (b"\xaa\xaa\x03\x00\x00\x00", b"\xaa\xaa\x03\x00\x00\xf8")
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


def udp_tunnels(extra: Iterable[tuple[str, int]] = ()) -> dict[int, int]:
    """The default tunnel ports plus ``extra`` (name, port) pairs: port -> tunnel code.

    Raises ValueError for an unknown tunnel name or a port given to two tunnels.
    """
    ports = {port: code for code, port in UDP_TUNNEL_PORTS.items()}
    for name, port in extra:
        code = UDP_TUNNEL_NAMES.get(name)
        if code is None:
            raise ValueError(f"unknown tunnel {name!r} (one of {', '.join(UDP_TUNNEL_NAMES)})")
        if ports.get(port, code) != code:
            raise ValueError(f"UDP port {port} is already the {tunnel_name(ports[port])} port")
        ports[port] = code
    return ports


def tunnel_name(code: int) -> str:
    return next(name for name, value in UDP_TUNNEL_NAMES.items() if value == code)


#: The defaults, for callers that add no ports.
DEFAULT_TUNNELS: UdpTunnels = udp_tunnels()


def decode(linktype: int, frame: bytes, stats: Counter[str], tunnels: UdpTunnels = DEFAULT_TUNNELS) -> Packet | None:
    """Decode one frame; None (counted) when it carries nothing an extractor reads.
    ``tunnels``: which UDP ports open which tunnel (``udp_tunnels``)."""
    src_mac = dst_mac = None
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        dst_mac, src_mac = frame[0:6], frame[6:12]
        return _ethernet_payload(frame, 12, src_mac, dst_mac, None, stats, tunnels, 0)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW_OPENBSD):
        return _ip(frame, 0, None, None, None, stats, tunnels, 0)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        # The address field is the sender's; for an Ethernet device that is its MAC.
        if frame[2:4] == b"\x00\x01" and frame[4:6] == b"\x00\x06":
            src_mac = frame[6:12]
        return _ethernet_payload(frame, 14, src_mac, None, None, stats, tunnels, 0)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        if frame[8:10] == b"\x00\x01" and frame[11] == 6:
            src_mac = frame[12:18]
        return _ethertype(frame, int.from_bytes(frame[0:2], "big"), 20, src_mac, None, None, stats, tunnels, 0)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            stats[SKIP_SHORT_FRAME] += 1
            return None
        family = int.from_bytes(frame[0:4], "big" if linktype == LINKTYPE_LOOP else "little")
        if family > 0xFFFF:  # written on a host of the other byte order
            family = int.from_bytes(frame[0:4], "little" if linktype == LINKTYPE_LOOP else "big")
        if family == 2 or family in (10, 24, 28, 30):
            return _ip(frame, 4, None, None, None, stats, tunnels, 0)
        stats[SKIP_NON_IP] += 1
        return None
    if linktype == LINKTYPE_PPP:
        pos = 2 if frame[:2] == b"\xff\x03" else 0  # address and control, unless compressed away
        if frame[pos : pos + 2] in (PPP_IPV4, PPP_IPV6):
            return _ip(frame, pos + 2, None, None, None, stats, tunnels, 0)
        stats[SKIP_NON_IP] += 1
        return None
    if linktype == LINKTYPE_NFLOG:
        return _nflog(frame, stats, tunnels)
    stats[SKIP_UNKNOWN_LINKTYPE] += 1
    return None


def _nflog(frame: bytes, stats: Counter[str], tunnels: UdpTunnels) -> Packet | None:
    """Linux NFLOG: a 4-byte header, then TLVs in host byte order; the packet is NFULA_PAYLOAD."""
    pos, end = 4, len(frame)
    while pos + 4 <= end:
        length = int.from_bytes(frame[pos : pos + 2], "little")
        if length < 4:
            break
        if int.from_bytes(frame[pos + 2 : pos + 4], "little") & 0x7FFF == NFULA_PAYLOAD:
            return _ip(frame[: pos + length], pos + 4, None, None, None, stats, tunnels, 0)
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


def _geneve_payload(frame: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """RFC 8926: (protocol type, offset of the inner packet), or None for a header that does not hold."""
    if pos + 8 > end or frame[pos] >> 6:  # version 0
        return None
    inner = pos + 8 + (frame[pos] & 0x3F) * 4  # options, in 4-byte units
    if inner > end:
        return None
    return frame[pos + 2] << 8 | frame[pos + 3], inner


def _tzsp_payload(frame: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """TZSP (version 1, a received or transmitted packet): (encapsulation, offset of the frame)
    after the tagged fields, or None. The tags end at TAG_END; each other tag but padding has
    a length byte."""
    if pos + 4 > end or frame[pos] != 1 or frame[pos + 1] > 1:
        return None
    encapsulation = frame[pos + 2] << 8 | frame[pos + 3]
    pos += 4
    while pos < end:
        tag = frame[pos]
        if tag == TZSP_END:
            return encapsulation, pos + 1
        if tag == TZSP_PADDING:
            pos += 1
        elif pos + 2 > end:
            return None
        else:
            pos += 2 + frame[pos + 1]
    return None


def _capwap_payload(frame: bytes, pos: int, end: int) -> tuple[bool, int] | None:
    """RFC 5415 CAPWAP data: (whether the payload is an 802.11 frame rather than an 802.3
    one, its offset), or None for a header that does not hold, a DTLS-protected packet, a
    keep-alive, or a frame of another radio binding. A non-first fragment's offset is -1."""
    if pos + 8 > end or frame[pos] != 0:  # version 0, a plain (not DTLS) header
        return None
    header = (frame[pos + 1] >> 3) * 4
    native = frame[pos + 2] & 0x01  # T: the radio's own frame format (WBID) rather than 802.3
    wbid = frame[pos + 2] >> 1 & 0x1F
    flags = frame[pos + 3]
    if header < 8 or pos + header > end or flags & 0x08:  # K: a keep-alive, no frame
        return None
    if native and wbid != CAPWAP_WBID_80211:
        return None
    if flags & 0x80 and (frame[pos + 6] << 8 | frame[pos + 7]) >> 3:  # F, and a fragment offset
        return bool(native), -1
    return bool(native), pos + header


def _dot11(
    frame: bytes, pos: int, end: int, vlan: int | None, stats: Counter[str], tunnels: UdpTunnels, depth: int,
) -> Packet | None:
    """An IEEE 802.11 data frame with an LLC/SNAP header: its packet, with the addresses of
    the station that sent it and the one it goes to (the access point's own address, the
    BSSID, is neither unless it is an end of the exchange)."""
    if pos + 24 > end:
        stats[SKIP_SHORT_FRAME] += 1
        return None
    control, ds_flags = frame[pos], frame[pos + 1]
    if control & 0x03:  # no 802.11 version but 0: Cisco access points send the two bytes swapped
        control, ds_flags = ds_flags, control
    subtype = control >> 4
    # A data frame (type 2, version 0) that carries data and is not protected (encrypted).
    if control & 0x0F != 0x08 or subtype & 0x04 or ds_flags & 0x40:
        stats[SKIP_NON_IP] += 1
        return None
    ds = ds_flags & 0x03  # To DS, From DS
    header = 30 if ds == 3 else 24
    if subtype & 0x08:  # QoS data: QoS control, then HT control when Order is set
        header += 6 if ds_flags & 0x80 else 2
    a1, a2, a3 = frame[pos + 4 : pos + 10], frame[pos + 10 : pos + 16], frame[pos + 16 : pos + 22]
    if ds == 0:
        dst_mac, src_mac = a1, a2
    elif ds == 1:  # to the access point: station, BSSID, destination
        dst_mac, src_mac = a3, a2
    elif ds == 2:  # from the access point: destination, BSSID, source
        dst_mac, src_mac = a1, a3
    else:  # a wireless bridge: receiver, transmitter, destination, source
        dst_mac, src_mac = a3, frame[pos + 24 : pos + 30]
    llc = pos + header
    if llc + 8 > end:
        stats[SKIP_SHORT_FRAME] += 1
        return None
    if frame[llc : llc + 6] not in LLC_SNAP:
        stats[SKIP_NON_IP] += 1
        return None
    ethertype = frame[llc + 6] << 8 | frame[llc + 7]
    return _ethertype(frame[:end], ethertype, llc + 8, src_mac, dst_mac, vlan, stats, tunnels, depth)


def _inner_ethernet(
    frame: bytes, pos: int, end: int, vlan: int | None, stats: Counter[str], tunnels: UdpTunnels, depth: int,
) -> Packet | None | bool:
    """An Ethernet frame inside a tunnel: its addresses are the device's. False when it is
    shorter than an Ethernet header (a UDP tunnel's datagram is then read as a plain one)."""
    if pos + 14 > end:
        return False
    return _ethernet_payload(frame[:end], pos + 12, frame[pos + 6 : pos + 12], frame[pos : pos + 6], vlan, stats,
                             tunnels, depth)


def _ethernet_payload(
    frame: bytes, pos: int, src_mac: bytes | None, dst_mac: bytes | None, vlan: int | None,
    stats: Counter[str], tunnels: UdpTunnels, depth: int,
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
        if ethertype in ETH_LONG_TAGS:
            pos += ETH_LONG_TAGS[ethertype]
            continue
        return _ethertype(frame, ethertype, pos + 2, src_mac, dst_mac, vlan, stats, tunnels, depth)


def _ethertype(
    frame: bytes, ethertype: int, pos: int, src_mac: bytes | None, dst_mac: bytes | None,
    vlan: int | None, stats: Counter[str], tunnels: UdpTunnels, depth: int,
) -> Packet | None:
    if ethertype == ETH_IPV4 or ethertype == ETH_IPV6:
        return _ip(frame, pos, src_mac, dst_mac, vlan, stats, tunnels, depth)
    if ethertype == ETH_ARP:
        return Packet(src_mac, dst_mac, vlan, b"", b"", ARP, 0, 0, 0, 0, frame[pos:])
    if ethertype in ETH_MPLS:
        while pos + 4 <= len(frame):
            bottom = frame[pos + 2] & 0x01
            pos += 4
            if bottom:
                return _ip(frame, pos, src_mac, dst_mac, vlan, stats, tunnels, depth)
        stats[SKIP_SHORT_FRAME] += 1
        return None
    if ethertype == ETH_PPPOE_SESSION:
        if pos + 8 <= len(frame) and frame[pos + 6 : pos + 8] in (PPP_IPV4, PPP_IPV6):
            return _ip(frame, pos + 8, src_mac, dst_mac, vlan, stats, tunnels, depth)
    stats[SKIP_NON_IP] += 1
    return None


def _udp_tunnel(
    frame: bytes, kind: int, pos: int, end: int, src_mac: bytes | None, dst_mac: bytes | None, vlan: int | None,
    stats: Counter[str], tunnels: UdpTunnels, depth: int,
) -> Packet | None | bool:
    """The packet inside the UDP tunnel ``kind`` whose header is at ``pos``; False when the
    header does not hold (the datagram is then read as a plain one)."""
    if kind == VXLAN:
        return _inner_ethernet(frame, pos + 8, end, vlan, stats, tunnels, depth)
    if kind == GTP_U:
        inner = _gtp_u_payload(frame, pos, end)
        if inner is None:
            return False
        return _ip(frame[:end], inner, src_mac, dst_mac, vlan, stats, tunnels, depth)
    if kind == GENEVE:
        found = _geneve_payload(frame, pos, end)
        if found is None:
            return False
        protocol, inner = found
        if protocol == ETH_TRANSPARENT_BRIDGING:
            return _inner_ethernet(frame, inner, end, vlan, stats, tunnels, depth)
        return _ethertype(frame[:end], protocol, inner, src_mac, dst_mac, vlan, stats, tunnels, depth)
    if kind == TZSP:
        found = _tzsp_payload(frame, pos, end)
        if found is None:
            return False
        encapsulation, inner = found
        if encapsulation == TZSP_80211:
            return _dot11(frame, inner, end, vlan, stats, tunnels, depth)
        if encapsulation != TZSP_ETHERNET:
            return False
        return _inner_ethernet(frame, inner, end, vlan, stats, tunnels, depth)
    if kind == CAPWAP:
        capwap = _capwap_payload(frame, pos, end)
        if capwap is None:
            return False
        native, inner = capwap
        if inner < 0:
            stats[SKIP_NON_FIRST_FRAGMENT] += 1
            return None
        if native:
            return _dot11(frame, inner, end, vlan, stats, tunnels, depth)
        return _inner_ethernet(frame, inner, end, vlan, stats, tunnels, depth)
    if kind == GRE_IN_UDP:  # RFC 8086
        if pos + 4 > end:
            return False
        return _gre(frame, pos, end, src_mac, dst_mac, vlan, stats, tunnels, depth)
    # CAPWAP_CONTROL: the access points' management, no user's packet; its preamble is a
    # plain (0) or DTLS (1) header, anything else is not CAPWAP.
    if pos >= end or frame[pos] > 1:
        return False
    stats[SKIP_CAPWAP_CONTROL] += 1
    return None


def _erspan(
    frame: bytes, protocol: int, sequenced: bool, pos: int, end: int, vlan: int | None, stats: Counter[str],
    tunnels: UdpTunnels, depth: int,
) -> Packet | None:
    """The mirrored Ethernet frame of an ERSPAN packet whose header (if any) is at ``pos``.
    Type I has no header (GRE 0x88BE without a sequence number); type II an 8-byte one
    (version 1), type III a 12-byte one (version 2) and an 8-byte platform subheader when
    its O flag is set. The header's VLAN is the mirrored port's, which a tag still in the
    frame overrides."""
    if protocol == ETH_ERSPAN_II and not sequenced:
        inner = pos
    else:
        version = 1 if protocol == ETH_ERSPAN_II else 2
        header = 8 if version == 1 else 12
        if pos + header > end or frame[pos] >> 4 != version:
            stats[SKIP_NON_IP] += 1
            return None
        tag = (frame[pos] & 0x0F) << 8 | frame[pos + 1]
        vlan = tag or vlan
        inner = pos + header
        if version == 2:
            if (frame[pos + 10] >> 2) & 0x1F:  # frame type: only 0, Ethernet, is a mirrored frame
                stats[SKIP_NON_IP] += 1
                return None
            if frame[pos + 11] & 0x01:
                inner += 8
    packet = _inner_ethernet(frame, inner, end, vlan, stats, tunnels, depth)
    if packet is False:
        stats[SKIP_SHORT_FRAME] += 1
        return None
    return packet


def _ip(
    frame: bytes, pos: int, src_mac: bytes | None, dst_mac: bytes | None, vlan: int | None,
    stats: Counter[str], tunnels: UdpTunnels, depth: int,
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
        if depth < MAX_ENCAPSULATION:
            kind = tunnels.get(dport)
            if kind is None and dport >= FIRST_UNPRIVILEGED_PORT:
                kind = tunnels.get(sport)
                if kind not in EITHER_PORT:
                    kind = None
            if kind is not None:
                inner = _udp_tunnel(frame, kind, pos + 8, end, src_mac, dst_mac, vlan, stats, tunnels, depth + 1)
                if inner is not False:
                    return inner
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
            return _ip(frame[:end], pos, src_mac, dst_mac, vlan, stats, tunnels, depth + 1)
        if proto == IPPROTO_GRE and pos + 4 <= end:
            return _gre(frame, pos, end, src_mac, dst_mac, vlan, stats, tunnels, depth + 1)
    stats[SKIP_OTHER_TRANSPORT] += 1
    return None


def _gre(
    frame: bytes, pos: int, end: int, src_mac: bytes | None, dst_mac: bytes | None, vlan: int | None,
    stats: Counter[str], tunnels: UdpTunnels, depth: int,
) -> Packet | None:
    """The packet inside a GRE header (at least 4 bytes at ``pos``): bridged Ethernet, ERSPAN,
    an Aruba controller's 802.11 frame, or what its protocol type names."""
    flags = frame[pos]
    header = 4 + 4 * (bool(flags & 0x80) + bool(flags & 0x20) + bool(flags & 0x10))
    ethertype = frame[pos + 2] << 8 | frame[pos + 3]
    if ethertype == ETH_TRANSPARENT_BRIDGING:
        inner = pos + header
        return _ethernet_payload(
            frame[:end], inner + 12, frame[inner + 6 : inner + 12], frame[inner : inner + 6], vlan, stats, tunnels,
            depth,
        )
    if ethertype == ETH_ERSPAN_II or ethertype == ETH_ERSPAN_III:
        return _erspan(frame, ethertype, bool(flags & 0x10), pos + header, end, vlan, stats, tunnels, depth)
    if ARUBA_FIRST <= ethertype <= ARUBA_LAST and not ethertype & 0x0F or ethertype == ARUBA_OTHER:
        return _dot11(frame, pos + header, end, vlan, stats, tunnels, depth)
    return _ethertype(frame[:end], ethertype, pos + header, src_mac, dst_mac, vlan, stats, tunnels, depth)
