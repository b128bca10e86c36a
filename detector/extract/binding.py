"""DHCP, DHCPv6, ARP and neighbour discovery: the bindings that tie a device's MAC, its
addresses and the names it gives itself together.

DHCP is parsed with dpkt (these packets are rare, so its full decode costs nothing that
matters); ARP's fixed 28-byte Ethernet/IPv4 body is read directly, and so are DHCPv6
(RFC 8415) and neighbour solicitations and advertisements (RFC 4861), which dpkt does not
parse: both are type-length-value walks, each bounded by the bytes it was given. dpkt is
imported at the first DHCP packet (its package loads every protocol it knows, longer than
a small replay runs), or by ``preload`` in a live worker before it drops privileges.

Besides the hostname (option 12), DHCP tells what outlives an address: the client
identifier (option 61), the client's FQDN (option 81) and its vendor class (option 60);
DHCPv6 the client's DUID (option 1) and FQDN (option 39). A device whose MAC is
randomised per network keeps these, so the device table and an inventory can follow it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

DHCP_OPT_HOSTNAME = 12
DHCP_OPT_REQUESTED_IP = 50
DHCP_OPT_MESSAGE_TYPE = 53
DHCP_OPT_VENDOR_CLASS = 60
DHCP_OPT_CLIENT_ID = 61
DHCP_OPT_CLIENT_FQDN = 81
DHCP_ACK = 5
#: RFC 4702 section 2.1: the E flag, set when the name is in DNS wire format.
FQDN_FLAG_E = 0x04
#: RFC 1035 bounds a host name to 255 octets; a longer option is junk, not a name.
MAX_HOSTNAME = 255

#: DHCPv6 (RFC 8415): message types, and the options read here.
DHCP6_PORTS = frozenset({546, 547})
DHCP6_CLIENT_MESSAGES = frozenset({1, 3, 4, 5, 6, 8, 9, 11})  # SOLICIT ... INFORMATION-REQUEST
#: Client messages whose IA addresses the client holds now (a SOLICIT or REQUEST only asks).
DHCP6_HOLDING = frozenset({4, 5, 6})  # CONFIRM, RENEW, REBIND
DHCP6_REPLY = 7
DHCP6_RELAY_FORW, DHCP6_RELAY_REPL = 12, 13
D6_CLIENTID, D6_IA_NA, D6_IA_TA, D6_IAADDR, D6_RELAY_MSG, D6_FQDN, D6_CLIENT_LINKLAYER = 1, 3, 4, 5, 9, 39, 79
#: Relays nest one message in another; RFC 8415 allows 32 hops, a capture sees few.
MAX_RELAY_DEPTH = 8
#: RFC 8415 section 11.1: a DUID is at most 128 octets; RFC 2132: option 61 at most 255.
MAX_DUID = 128
MAX_CLIENT_ID = 255
#: ICMPv6 neighbour discovery (RFC 4861): types and the link-layer address options.
ICMP6_NEIGHBOR_SOLICIT, ICMP6_NEIGHBOR_ADVERT = 135, 136
ND_SOURCE_LINKADDR, ND_TARGET_LINKADDR = 1, 2


@dataclass(frozen=True, slots=True)
class Binding:
    """What one DHCP, DHCPv6, ARP or neighbour-discovery packet (or one lease record) says
    about a device: its MAC (None when only a DHCPv6 DUID names it), an address, and the
    names and identifiers it gave. ``ts`` is set for a lease record: when it took effect."""

    mac: str | None
    ip: str | None
    hostname: str | None
    client_id: str | None = None
    fqdn: str | None = None
    vendor_class: str | None = None
    duid: str | None = None
    ts: float | None = None


def format_mac(raw: bytes) -> str:
    return raw.hex(":")


def is_randomised(mac: str) -> bool:
    """Whether a MAC is locally administered (IEEE 802 U/L bit), as the per-network random
    MACs of current phones and laptops are: it names the device on this network only."""
    return len(mac) >= 2 and int(mac[:2], 16) & 0x02 != 0


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
    raw_id = options.get(DHCP_OPT_CLIENT_ID, b"")
    client_id = format_id(raw_id) if 0 < len(raw_id) <= MAX_CLIENT_ID else None
    fqdn = _client_fqdn(options.get(DHCP_OPT_CLIENT_FQDN, b""))
    raw_vendor = options.get(DHCP_OPT_VENDOR_CLASS, b"")
    vendor_class = printable(raw_vendor) if raw_vendor else None
    ip = None
    msg_type = options.get(DHCP_OPT_MESSAGE_TYPE, b"")
    if msg.op == dpkt.dhcp.DHCP_OP_REPLY:
        if msg_type == bytes([DHCP_ACK]) and msg.yiaddr:
            ip = socket.inet_ntoa(struct.pack(">I", msg.yiaddr))
    elif len(options.get(DHCP_OPT_REQUESTED_IP, b"")) == 4:
        ip = socket.inet_ntoa(options[DHCP_OPT_REQUESTED_IP])
    elif msg.ciaddr:
        ip = socket.inet_ntoa(struct.pack(">I", msg.ciaddr))
    if ip is None and hostname is None and client_id is None and fqdn is None and vendor_class is None:
        return None
    return Binding(format_mac(msg.chaddr[:6]), ip, hostname, client_id, fqdn, vendor_class)


def format_id(raw: bytes) -> str:
    """A client identifier or DUID as colon-separated hex, the form dnsmasq, ISC dhcpd and
    Kea write in their lease files (and so the form an inventory holds)."""
    return raw.hex(":")


def printable(raw: bytes) -> str | None:
    """Bytes a client chose, as one printable line (see ``_hostname``), case kept."""
    text = raw.rstrip(b"\x00").decode("ascii", "backslashreplace")
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text or None


def _client_fqdn(raw: bytes) -> str | None:
    """The name of a DHCP client FQDN option (RFC 4702): flags, two obsolete RCODE bytes,
    then the name, in DNS wire format when the E flag is set, else as text."""
    if len(raw) < 4:
        return None
    if raw[0] & FQDN_FLAG_E:
        return wire_name(raw[3:])
    return _hostname(raw[3:]) if len(raw) - 3 <= MAX_HOSTNAME else None


def wire_name(raw: bytes) -> str | None:
    """A domain name in uncompressed DNS wire format (RFC 1035 3.1), as DHCPv6 option 39
    and DHCP option 81 carry it; a partial name (no root label) is allowed (RFC 4704)."""
    labels: list[str] = []
    pos = 0
    while pos < len(raw) and raw[pos]:
        length = raw[pos]
        if length > 63 or pos + 1 + length > len(raw):
            return None
        labels.append(raw[pos + 1 : pos + 1 + length].decode("ascii", "backslashreplace"))
        pos += 1 + length
    name = ".".join(labels)
    if not labels or len(name) > MAX_HOSTNAME:
        return None
    return _hostname(name.encode("ascii", "backslashreplace"))


def _hostname(raw: bytes) -> str | None:
    """The name a client gave itself, as one printable line: every byte that is not
    printable ASCII is written ``\\xNN``, so a name with control bytes cannot break the
    summary table or a report row (and cannot pass for another name there)."""
    text = printable(raw)
    return text.lower() if text else None


def parse_arp(body: bytes) -> Binding | None:
    """The sender's MAC and IPv4 address of an Ethernet/IPv4 ARP request or reply."""
    if len(body) < 28 or body[0:8] not in (b"\x00\x01\x08\x00\x06\x04\x00\x01", b"\x00\x01\x08\x00\x06\x04\x00\x02"):
        return None
    sender_ip = body[14:18]
    if sender_ip == b"\x00\x00\x00\x00":  # an address probe (RFC 5227) binds nothing yet
        return None
    return Binding(format_mac(body[8:14]), socket.inet_ntoa(sender_ip), None)


def _options6(data: bytes) -> list[tuple[int, bytes]]:
    """The (code, value) pairs of a DHCPv6 option area; stops at the first option that
    runs past the end (what came before it is kept)."""
    options = []
    pos = 0
    while pos + 4 <= len(data):
        code, length = struct.unpack_from(">HH", data, pos)
        if pos + 4 + length > len(data):
            break
        options.append((code, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return options


def _ia_addresses(options: list[tuple[int, bytes]]) -> list[str]:
    """The addresses of the IA_NA and IA_TA options with a valid lifetime (0: released)."""
    addresses = []
    for code, value in options:
        if code not in (D6_IA_NA, D6_IA_TA):
            continue
        header = 12 if code == D6_IA_NA else 4  # IAID, T1, T2 | IAID
        for inner, body in _options6(value[header:]):
            if inner == D6_IAADDR and len(body) >= 24 and struct.unpack_from(">I", body, 20)[0]:
                addresses.append(socket.inet_ntop(socket.AF_INET6, body[:16]))
    return addresses


def parse_dhcpv6(payload: bytes, src_mac: bytes | None, dst_mac: bytes | None) -> tuple[Binding, ...]:
    """What a DHCPv6 message says of its client: one binding per address it holds or is
    given (a REPLY's, or a RENEW, REBIND or CONFIRM's own), or one without an address.

    The client's MAC is the frame's source for a client message and its destination for
    a server's; a relayed message has it from the relay's client link-layer option (RFC
    6939) or not at all, when the DUID alone names the device."""
    message, mac = payload, None
    for _ in range(MAX_RELAY_DEPTH):
        if len(message) < 1 or message[0] not in (DHCP6_RELAY_FORW, DHCP6_RELAY_REPL):
            break
        if len(message) < 34:
            return ()
        inner = None
        for code, value in _options6(message[34:]):
            if code == D6_RELAY_MSG:
                inner = value
            elif code == D6_CLIENT_LINKLAYER and len(value) == 8 and value[:2] == b"\x00\x01":
                mac = format_mac(value[2:])
        if inner is None:
            return ()
        message, src_mac, dst_mac = inner, None, None
    else:
        return ()
    if len(message) < 4:
        return ()
    kind = message[0]
    if kind in DHCP6_CLIENT_MESSAGES:
        frame_mac = src_mac
    elif kind == DHCP6_REPLY:
        frame_mac = dst_mac
    else:
        return ()
    if mac is None and frame_mac is not None and len(frame_mac) == 6 and not frame_mac[0] & 0x01:
        mac = format_mac(frame_mac)  # (a multicast destination names no client)
    options = _options6(message[4:])
    duid = fqdn = None
    for code, value in options:
        if code == D6_CLIENTID and 0 < len(value) <= MAX_DUID:
            duid = format_id(value)
        elif code == D6_FQDN and len(value) >= 2:
            fqdn = wire_name(value[1:])
    if duid is None and mac is None:
        return ()
    addresses = _ia_addresses(options) if kind == DHCP6_REPLY or kind in DHCP6_HOLDING else []
    if not addresses:
        return (Binding(mac, None, None, fqdn=fqdn, duid=duid),) if duid is not None or fqdn is not None else ()
    return tuple(Binding(mac, address, None, fqdn=fqdn, duid=duid) for address in addresses)


def parse_ndp(icmp: bytes, src_ip: bytes, src_mac: bytes | None) -> Binding | None:
    """The MAC and IPv6 address a neighbour solicitation or advertisement ties together.

    An advertisement binds its target to its target link-layer option (else the frame's
    source); a solicitation binds its source address to its source link-layer option,
    or, sent from the unspecified address (duplicate address detection, RFC 4862 5.4),
    the address being claimed to the frame's source: every new SLAAC or privacy address
    is announced so. Link-local and multicast addresses carry no traffic worth naming."""
    if len(icmp) < 24 or icmp[0] not in (ICMP6_NEIGHBOR_SOLICIT, ICMP6_NEIGHBOR_ADVERT) or icmp[1] != 0:
        return None
    target = icmp[8:24]
    linkaddr = None
    want = ND_TARGET_LINKADDR if icmp[0] == ICMP6_NEIGHBOR_ADVERT else ND_SOURCE_LINKADDR
    pos = 24
    while pos + 8 <= len(icmp):
        kind, units = icmp[pos], icmp[pos + 1]
        if units == 0 or pos + units * 8 > len(icmp):  # RFC 4861 4.6: a zero length is invalid
            return None
        if kind == want and units == 1:
            linkaddr = icmp[pos + 2 : pos + 8]
        pos += units * 8
    if icmp[0] == ICMP6_NEIGHBOR_ADVERT:
        address = target
    elif src_ip == bytes(16):
        address, linkaddr = target, None  # DAD carries no link-layer option (RFC 4861 4.3)
    else:
        address = src_ip
    mac = linkaddr if linkaddr is not None else src_mac
    if mac is None or len(mac) != 6 or mac[0] & 0x01 or len(address) != 16:
        return None
    if address[0] == 0xFF or (address[0] == 0xFE and address[1] & 0xC0 == 0x80) or address == bytes(16):
        return None
    return Binding(format_mac(mac), socket.inet_ntop(socket.AF_INET6, address), None)
