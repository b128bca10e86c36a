#!/usr/bin/env python3
"""Write the fixture captures under ``pcaps/`` and their ground truth under ``pcaps/expected/``.

Run ``python pcaps/make_fixtures.py`` to rewrite every capture, expected file and the
README table; ``--verify`` instead checks each expected file against tshark's dissectors.

Why a script and not checked-in captures alone: every capture is small and built from
first principles (scapy for the IP/UDP/TCP/ARP/DHCP headers and checksums, hand-written
DNS messages, TLS ClientHellos and file formats), so each case can be read here, and the
expected names are computed from what was built - never from running the detector.

Determinism is part of the contract: fixed timestamps from 2026-03-02T09:00:00Z, seeded
``random.Random`` (string seeds are hashed with SHA-512, not Python's salted ``hash``),
fixed TCP ISNs and ports, gzip with mtime 0. Rerunning gives byte-identical files.

Addresses are only 198.18.0.0/15 (clients 198.18.10.0/24 on staff VLAN 10 and
198.18.20.0/24 on guest VLAN 20, servers and resolvers 198.19.0.0/16), fd00::/8 for IPv6
and locally administered MACs, so the captures can be replayed into test namespaces.
The DHCP exchanges necessarily also use 0.0.0.0 and 255.255.255.255.

Expected file format (``pcaps/expected/<stem>.json``, stem = file name up to its first
dot): a JSON list of ``{"proto", "name", "client_ip", "frame"}`` where ``frame`` is the
1-based number of the packet that completed the name (the TCP segment that completed the
ClientHello, HTTP request head or DNS message in stream order as the segments arrive),
sorted by frame and then by order within the message or stream.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import random
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from collections.abc import Callable, Iterable

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert, IPOption_RR, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    PadN,
    RouterAlert,
    fragment6,
)
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.layers.l2 import ARP, GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"

#: 2026-03-02T09:00:00Z, the start of every capture, in nanoseconds.
T0_NS = int(datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
SNAPLEN = 262144

# Link types (https://www.tcpdump.org/linktypes.html).
LT_NULL, LT_ETHERNET, LT_RAW, LT_LOOP, LT_SLL, LT_USER0, LT_IPV4, LT_IPV6, LT_SLL2 = (
    0,
    1,
    101,
    108,
    113,
    147,
    228,
    229,
    276,
)
# BSD address families for IPv6 seen in DLT_NULL/DLT_LOOP headers: NetBSD/OpenBSD, FreeBSD, Darwin.
AF_INET, AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN = 2, 24, 28, 30

GW_MAC = "02:00:00:00:00:01"  # the router every client talks through
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
SERVICE_VLAN = 100  # outer 802.1ad tag of the QinQ capture
UP, DOWN = True, False  # direction: client -> server, server -> client

RESOLVER = "198.19.0.53"
RESOLVER6 = "fd00:19::53"
DHCP_SERVER = "198.19.0.67"

# DNS record types.
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, DNAME, OPT, SVCB, HTTPS = 1, 2, 5, 6, 12, 15, 16, 28, 39, 41, 64, 65


def norm(name: str) -> str:
    """The form every extractor reports: lowercase, no trailing dot."""
    return name.rstrip(".").lower()


# --------------------------------------------------------------------------- hosts, captures


@dataclass(frozen=True)
class Host:
    """A client device: its address, MAC and the VLAN its frames are tagged with."""

    ip: str
    mac: str
    vlan: int | None = None


def client(ip: str, v4_twin: str | None = None) -> Host:
    """A client whose MAC is 02:00 followed by the bytes of its IPv4 address (or of ``v4_twin``,
    for the IPv6 address of a dual-stack device); 198.18.10.x is on VLAN 10, 198.18.20.x on VLAN 20."""
    octets = ipaddress.IPv4Address(v4_twin or ip).packed
    mac = "02:00:" + ":".join(f"{b:02x}" for b in octets)
    return Host(ip, mac, {10: 10, 20: 20}.get(octets[2]))


@dataclass
class Frame:
    """One captured packet: timestamp, bytes, pcapng interface and whether it is a Simple Packet Block."""

    ts_ns: int
    data: bytes
    iface: int = 0
    simple: bool = False


@dataclass
class Capture:
    """A capture under construction: frames, the names they must yield, and how to write them."""

    filename: str
    about: str
    link: str = "eth"
    linktype: int = LT_ETHERNET
    fmt: str = "pcap"  # "pcap" or "pcapng"
    nanos: bool = False
    big_endian: bool = False
    #: pcapng interfaces: (linktype, if_tsresol exponent, if_name).
    interfaces: list[tuple[int, int, str]] = field(default_factory=list)
    #: extra tshark arguments for --verify (decode-as for non-standard ports and the like).
    tshark_args: tuple[str, ...] = ()
    expected_file: bool = True
    frames: list[Frame] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    now_ns: int = T0_NS
    ipid: int = 0x1000

    def __post_init__(self) -> None:
        self.rng = random.Random(self.filename)

    @property
    def stem(self) -> str:
        return self.filename.split(".", 1)[0]

    def step(self, seconds: float) -> None:
        """Let time pass without a packet."""
        self.now_ns += round(seconds * 1e9)

    def raw(self, data: bytes, *, gap: float = 0.001, iface: int = 0, simple: bool = False) -> int:
        """Append an already framed packet; return its 1-based frame number."""
        self.step(gap)
        self.frames.append(Frame(self.now_ns, bytes(data), iface, simple))
        return len(self.frames)

    def l3(self, src: str, dst: str, *, ttl: int = 64, df: bool = False) -> Packet:
        """An IPv4 or IPv6 header with a deterministic IP ID."""
        if ":" in src:
            return IPv6(src=src, dst=dst, hlim=ttl)
        self.ipid = (self.ipid + 1) & 0xFFFF
        return IP(src=src, dst=dst, ttl=ttl, id=self.ipid, flags="DF" if df else 0)

    def send(
        self,
        pkt: Packet,
        host: Host,
        up: bool,
        *,
        gap: float = 0.001,
        link: str | None = None,
        iface: int = 0,
        simple: bool = False,
        af6: int = AF_INET6_BSD,
    ) -> int:
        """Frame an IP packet from (``up``) or to ``host`` for this capture's link layer."""
        src_mac, dst_mac = (host.mac, GW_MAC) if up else (GW_MAC, host.mac)
        data = encapsulate(link or self.link, bytes(pkt), src_mac, dst_mac, host.vlan, up, af6, self.big_endian)
        return self.raw(data, gap=gap, iface=iface, simple=simple)

    def expect(self, frame: int, proto: str, names: Iterable[str], client_ip: str) -> None:
        """Record names the packet ``frame`` must yield, in message order."""
        ip = str(ipaddress.ip_address(client_ip))
        for name in names:
            self.events.append({"proto": proto, "name": norm(name), "client_ip": ip, "frame": frame})


def encapsulate(
    link: str, ip: bytes, src_mac: str, dst_mac: str, vlan: int | None, up: bool, af6: int, big: bool
) -> bytes:
    """Put a link-layer header in front of an IP packet."""
    v6 = ip[0] >> 4 == 6
    ethertype = 0x86DD if v6 else 0x0800
    if link == "eth":
        return bytes(Ether(src=src_mac, dst=dst_mac, type=ethertype) / Raw(ip))
    if link == "vlan":
        return bytes(Ether(src=src_mac, dst=dst_mac, type=0x8100) / Dot1Q(vlan=vlan, type=ethertype) / Raw(ip))
    if link == "qinq":
        return bytes(
            Ether(src=src_mac, dst=dst_mac, type=0x88A8)
            / Dot1AD(vlan=SERVICE_VLAN, type=0x8100)
            / Dot1Q(vlan=vlan, type=ethertype)
            / Raw(ip)
        )
    mac8 = bytes.fromhex(src_mac.replace(":", "")).ljust(8, b"\0")
    pkttype = 4 if up else 0  # outgoing / addressed to this host
    if link == "sll":
        return struct.pack(">HHH8sH", pkttype, 1, 6, mac8, ethertype) + ip
    if link == "sll2":
        return struct.pack(">HHIHBB8s", ethertype, 0, 3, 1, pkttype, 6, mac8) + ip
    if link in ("raw", "ipv4", "ipv6"):
        return ip
    if link == "null":  # host byte order of the writer, i.e. the file's byte order
        return struct.pack(">I" if big else "<I", af6 if v6 else AF_INET) + ip
    if link == "loop":  # always network byte order
        return struct.pack(">I", af6 if v6 else AF_INET) + ip
    if link in TUNNELS:
        return tunnel_frame(link, ip, src_mac, dst_mac, vlan, up)
    raise ValueError(link)


# --------------------------------------------------------------------------- tunnels to the sensor

#: Who sends the tunnels: a switch mirroring to the sensor (ERSPAN, VXLAN, Geneve, TZSP, GRE),
#: and an access point and its wireless controller (CAPWAP), each with its own MAC.
MIRROR_SRC, MIRROR_DST = "198.19.250.1", "198.19.250.2"
AP_IP, CONTROLLER_IP = "198.19.251.10", "198.19.251.1"
AP_PORT = 12380  # the access point's ephemeral CAPWAP data port
BSSID = "02:00:00:00:fb:0a"  # the access point's radio: never the device
MIRROR_MAC, SENSOR_MAC = "02:00:00:00:fa:01", "02:00:00:00:fa:02"
TUNNELS = ("vxlan", "geneve", "erspan-i", "erspan-ii", "erspan-iii", "gretap", "gre-in-udp", "gre-aruba", "tzsp",
           "tzsp-80211", "capwap")


def dot11_data(ip: bytes, src_mac: str, dst_mac: str, up: bool, *, cisco: bool) -> bytes:
    """An 802.11 QoS data frame between a station and the router behind the access point:
    To DS from the station (addresses BSSID, station, router), From DS to it (station, BSSID,
    router), with an LLC/SNAP header. ``cisco``: the frame control bytes swapped, as Cisco
    access points send them inside CAPWAP."""
    control = bytes([0x88, 0x01 if up else 0x02])
    if cisco:
        control = control[::-1]
    mac = lambda text: bytes.fromhex(text.replace(":", ""))  # noqa: E731
    addresses = (BSSID, src_mac, dst_mac) if up else (dst_mac, BSSID, src_mac)
    ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return (control + b"\x00\x00" + b"".join(map(mac, addresses)) + b"\x00\x00" + b"\x00\x00"
            + b"\xaa\xaa\x03\x00\x00\x00" + struct.pack("!H", ethertype) + ip)


def tunnel_frame(kind: str, ip: bytes, src_mac: str, dst_mac: str, vlan: int | None, up: bool) -> bytes:
    """A device's IP packet as a remote sensor receives it: its Ethernet frame (or 802.11
    frame) inside the tunnel ``kind``, inside the outer Ethernet/IPv4 of the tunnel's ends."""
    ethertype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    tagged = Ether(src=src_mac, dst=dst_mac) / Dot1Q(vlan=vlan, type=ethertype) / Raw(ip) if vlan else \
        Ether(src=src_mac, dst=dst_mac, type=ethertype) / Raw(ip)
    untagged = bytes(Ether(src=src_mac, dst=dst_mac, type=ethertype) / Raw(ip))
    mirror = Ether(src=MIRROR_MAC, dst=SENSOR_MAC) / IP(src=MIRROR_SRC, dst=MIRROR_DST, id=0)
    if kind == "vxlan":
        return bytes(mirror / UDP(sport=49152, dport=4789) / VXLAN(vni=1010) / tagged)
    if kind == "geneve":
        return bytes(mirror / UDP(sport=49152, dport=6081) / GENEVE(vni=1010, proto=0x6558) / tagged)
    if kind == "erspan-i":  # no ERSPAN header: a GRE packet without a sequence number
        return bytes(mirror / GRE(proto=0x88BE) / tagged)
    if kind == "erspan-ii":  # the port's VLAN in the header, the mirrored frame untagged
        return bytes(mirror / GRE(seqnum_present=1, sequence_number=1) / ERSPAN_II(vlan=vlan or 0, session_id=7)
                     / Raw(untagged))
    if kind == "erspan-iii":
        return bytes(mirror / GRE(seqnum_present=1, sequence_number=1, proto=0x22EB)
                     / ERSPAN_III(vlan=vlan or 0, session_id=7, hw=3) / Raw(untagged))
    if kind == "gretap":  # GRE with a key, transparent Ethernet bridging
        return bytes(mirror / GRE(key_present=1, key=1010, proto=0x6558) / tagged)
    if kind == "gre-in-udp":  # RFC 8086: a GRE header (bridged Ethernet) as a UDP payload
        return bytes(mirror / UDP(sport=49152, dport=4754) / GRE(proto=0x6558) / tagged)
    if kind == "gre-aruba":  # an Aruba access point to its controller: GRE 0x8200, the 802.11 frame
        return bytes(Ether(src=MIRROR_MAC, dst=SENSOR_MAC) / IP(src=AP_IP, dst=CONTROLLER_IP, id=0)
                     / GRE(proto=0x8200) / Raw(dot11_data(ip, src_mac, dst_mac, up, cisco=False)))
    if kind == "tzsp":  # a router's packet stream: received-packet type, Ethernet, end of tags
        return bytes(mirror / UDP(sport=49152, dport=37008) / Raw(b"\x01\x00\x00\x01\x01") / tagged)
    if kind == "tzsp-80211":  # a radio's: 802.11, with a signal-strength tag
        return bytes(mirror / UDP(sport=49152, dport=37008) / Raw(b"\x01\x00\x00\x12\x0a\x01\xc4\x01"
                                                                 + dot11_data(ip, src_mac, dst_mac, up, cisco=False)))
    # CAPWAP data (RFC 5415): HLEN 4 words with the wireless-specific field (RSSI, SNR),
    # binding IEEE 802.11, native frame format; access point <-> controller, both ways.
    header = bytes([0, 4 << 3, 1 << 1 | 1, 0x20]) + bytes(4) + b"\x04\xbf\x23\x00" + bytes(4)
    outer = Ether(src=MIRROR_MAC, dst=SENSOR_MAC) / (
        IP(src=AP_IP, dst=CONTROLLER_IP, id=0) / UDP(sport=AP_PORT, dport=5247) if up
        else IP(src=CONTROLLER_IP, dst=AP_IP, id=0) / UDP(sport=5247, dport=AP_PORT))
    return bytes(outer / Raw(header + dot11_data(ip, src_mac, dst_mac, up, cisco=True)))


TUNNEL_ABOUT = {
    "vxlan": "VXLAN (UDP 4789, a cloud traffic mirror): tagged Ethernet frames inside",
    "geneve": "Geneve (UDP 6081, a cloud gateway load balancer): Ethernet frames inside",
    "erspan-i": "ERSPAN type I (GRE 0x88BE without sequence numbers): a switch's remote SPAN",
    "erspan-ii": "ERSPAN type II (GRE 0x88BE, 8-byte header with the port's VLAN): a switch's remote SPAN",
    "erspan-iii": "ERSPAN type III (GRE 0x22EB, 12-byte header): a switch's remote SPAN",
    "gretap": "GRE with a key carrying Ethernet (0x6558): a Linux gretap mirror",
    "gre-in-udp": "GRE-in-UDP (UDP 4754, RFC 8086) carrying bridged Ethernet",
    "gre-aruba": "Aruba controller tunnel (GRE 0x8200): 802.11 frames both ways; the device is the station",
    "tzsp": "TZSP (UDP 37008): a router streaming what it forwards, Ethernet inside",
    "tzsp-80211": "TZSP (UDP 37008) from a radio: 802.11 data frames inside",
    "capwap": "CAPWAP data (UDP 5247) between an access point and its controller: 802.11 frames "
              "(Cisco byte order), both ways; the device's MAC is the station's, not the access point's",
}


def build_tunnels() -> list[Capture]:
    """One capture per tunnel: the link captures' DNS, then a ClientHello and an HTTP request."""
    caps = []
    for kind in TUNNELS:
        cap = link_capture(f"tunnel-{kind}.pcap", TUNNEL_ABOUT[kind], kind, LT_ETHERNET)
        # An MSS that leaves room for the tunnel's headers: the outer frames fit a 1500-byte link.
        tls_connect(cap, STAFF2, TIKTOK_API, "api16-normal-useast5.us.tiktokv.com",
                    client_hello("api16-normal-useast5.us.tiktokv.com", f"tunnel-{kind}"), mss=1360)
        http_get(cap, GUEST, TIKTOK_CDN, "Host: v16m.tiktokcdn.com", "v16m.tiktokcdn.com")
        caps.append(cap)
    return caps


# --------------------------------------------------------------------------- file formats


def pcap_bytes(cap: Capture) -> bytes:
    """A classic pcap file: µs or ns magic, little- or big-endian header and records."""
    e = ">" if cap.big_endian else "<"
    magic = 0xA1B23C4D if cap.nanos else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, SNAPLEN, cap.linktype)]
    for f in cap.frames:
        sec, frac = divmod(f.ts_ns, 1_000_000_000)
        if not cap.nanos:
            frac //= 1000
        out.append(struct.pack(e + "IIII", sec, frac, len(f.data), len(f.data)) + f.data)
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _options(e: str, opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    body = b"".join(struct.pack(e + "HH", code, len(value)) + _pad4(value) for code, value in opts)
    return body + struct.pack(e + "HH", 0, 0)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body = _pad4(body)
    total = len(body) + 12
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def pcapng_bytes(cap: Capture) -> bytes:
    """A pcapng section: SHB, one IDB per interface, EPBs or SPBs, and an ISB per interface."""
    e = ">" if cap.big_endian else "<"
    shb = struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(e, [(4, b"tiktok-detector pcaps/make_fixtures.py")])
    out = [_block(e, 0x0A0D0D0A, shb)]
    for linktype, tsresol, name in cap.interfaces:
        opts = [(2, name.encode())]
        if tsresol != 6:
            opts.append((9, bytes([tsresol])))
        out.append(_block(e, 1, struct.pack(e + "HHI", linktype, 0, SNAPLEN) + _options(e, opts)))
    counts = [0] * len(cap.interfaces)
    for f in cap.frames:
        counts[f.iface] += 1
        if f.simple:
            out.append(_block(e, 3, struct.pack(e + "I", len(f.data)) + f.data))
            continue
        units = f.ts_ns // 10 ** (9 - cap.interfaces[f.iface][1])
        header = struct.pack(e + "IIIII", f.iface, units >> 32, units & 0xFFFFFFFF, len(f.data), len(f.data))
        out.append(_block(e, 6, header + f.data))
    end = cap.frames[-1].ts_ns if cap.frames else T0_NS
    for iface, (_lt, tsresol, _name) in enumerate(cap.interfaces):
        units = end // 10 ** (9 - tsresol)
        isb = struct.pack(e + "III", iface, units >> 32, units & 0xFFFFFFFF)
        out.append(_block(e, 5, isb + _options(e, [(4, struct.pack(e + "Q", counts[iface]))])))
    return b"".join(out)


# --------------------------------------------------------------------------- DNS


@dataclass(frozen=True)
class RR:
    """One resource record; ``data`` depends on the type (address, name, or a tuple)."""

    name: str
    rtype: int
    data: object = None
    ttl: int = 300
    rclass: int = 1


class _DnsWriter:
    """Writes a DNS message, compressing names (RFC 1035 4.1.4) when asked.

    Every suffix written uncompressed becomes a pointer target, so later names point into
    questions, owner names and CNAME/NS/MX/SOA rdata - and chains of pointers arise naturally.
    DNAME (RFC 6672) and SVCB/HTTPS (RFC 9460) targets are never compressed, as required.
    """

    def __init__(self, compress: bool) -> None:
        self.buf = bytearray()
        self.targets: dict[str, int] | None = {} if compress else None

    def name(self, name: str, compressible: bool = True) -> None:
        labels = [label for label in name.rstrip(".").split(".") if label]
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if self.targets is not None and compressible:
                if suffix in self.targets:
                    self.buf += struct.pack(">H", 0xC000 | self.targets[suffix])
                    return
                if len(self.buf) < 0x3FFF:
                    self.targets[suffix] = len(self.buf)
            raw = labels[i].encode("ascii")
            self.buf.append(len(raw))
            self.buf += raw
        self.buf.append(0)

    def rr(self, rr: RR) -> None:
        self.name(rr.name)
        self.buf += struct.pack(">HHI", rr.rtype, rr.rclass, rr.ttl)
        start = len(self.buf)
        self.buf += b"\0\0"
        t, d = rr.rtype, rr.data
        if t == A:
            self.buf += ipaddress.IPv4Address(d).packed
        elif t == AAAA:
            self.buf += ipaddress.IPv6Address(d).packed
        elif t in (NS, CNAME, PTR):
            self.name(d)
        elif t == DNAME:
            self.name(d, compressible=False)
        elif t == MX:
            self.buf += struct.pack(">H", d[0])
            self.name(d[1])
        elif t == SOA:
            self.name(d[0])
            self.name(d[1])
            self.buf += struct.pack(">IIIII", *d[2:])
        elif t == TXT:
            for s in d:
                self.buf += bytes([len(s)]) + s
        elif t in (SVCB, HTTPS):
            priority, target, params = d
            self.buf += struct.pack(">H", priority)
            self.name(target, compressible=False)
            for key, value in sorted(params):
                self.buf += struct.pack(">HH", key, len(value)) + value
        elif t == OPT:
            for code, value in d or ():
                self.buf += struct.pack(">HH", code, len(value)) + value
        else:
            raise ValueError(t)
        struct.pack_into(">H", self.buf, start, len(self.buf) - start - 2)


def dns_message(
    qid: int,
    questions: list[tuple[str, int]],
    answers: Iterable[RR] = (),
    authority: Iterable[RR] = (),
    additional: Iterable[RR] = (),
    *,
    qr: bool,
    rcode: int = 0,
    compress: bool = True,
) -> bytes:
    """A complete DNS message (RD set; RA set on responses)."""
    answers, authority, additional = list(answers), list(authority), list(additional)
    flags = (int(qr) << 15) | (1 << 8) | (int(qr) << 7) | rcode
    w = _DnsWriter(compress)
    w.buf += struct.pack(">HHHHHH", qid, flags, len(questions), len(answers), len(authority), len(additional))
    for name, qtype in questions:
        w.name(name)
        w.buf += struct.pack(">HH", qtype, 1)
    for rr in (*answers, *authority, *additional):
        w.rr(rr)
    return bytes(w.buf)


def edns(payload_size: int = 1232, options: Iterable[tuple[int, bytes]] = ()) -> RR:
    """An EDNS(0) OPT pseudo-record for the additional section."""
    return RR(".", OPT, list(options), ttl=0, rclass=payload_size)


def alpn_param(*protocols: str) -> tuple[int, bytes]:
    """The SvcParam ``alpn`` (key 1)."""
    return 1, b"".join(bytes([len(p)]) + p.encode() for p in protocols)


def answer_names(answers: Iterable[RR]) -> list[str]:
    """What ``dns-answer`` reports for an answer section: owner names, CNAME/DNAME targets and
    SVCB/HTTPS TargetNames other than ".", deduplicated, in message order."""
    seen: list[str] = []
    for rr in answers:
        names = [rr.name]
        if rr.rtype in (CNAME, DNAME):
            names.append(rr.data)
        elif rr.rtype in (SVCB, HTTPS):
            names.append(rr.data[1])
        for name in names:
            n = norm(name)
            if n and n not in seen:
                seen.append(n)
    return seen


def dns_udp(
    cap: Capture,
    host: Host,
    questions: str | list[tuple[str, int]],
    answers: Iterable[RR] = (),
    *,
    server: str | None = None,
    authority: Iterable[RR] = (),
    rcode: int = 0,
    respond: bool = True,
    gap: float = 0.5,
    rtt: float = 0.012,
    compress: bool = True,
    one_way: bool = False,
    **send_kw,
) -> tuple[int, int | None]:
    """A DNS query over UDP from ``host`` and (optionally) its response; records expected names.
    ``one_way``: the tap sees the response only (no query frame is written), whose questions
    are then reported as seen in the response only."""
    if isinstance(questions, str):
        questions = [(questions, AAAA if ":" in host.ip else A)]
    server = server or (RESOLVER6 if ":" in host.ip else RESOLVER)
    qid, sport = cap.rng.randrange(1 << 16), cap.rng.randrange(49152, 65536)
    answers = list(answers)
    query = dns_message(qid, questions, qr=False)
    f_query = 0
    if not one_way:
        f_query = cap.send(cap.l3(host.ip, server) / UDP(sport=sport, dport=53) / Raw(query), host, UP, gap=gap,
                           **send_kw)
        cap.expect(f_query, "dns-query", [q for q, _ in questions], host.ip)
    if not respond:
        return f_query, None
    response = dns_message(qid, questions, answers, authority, qr=True, rcode=rcode, compress=compress)
    pkt = cap.l3(server, host.ip, ttl=62) / UDP(sport=53, dport=sport) / Raw(response)
    f_resp = cap.send(pkt, host, DOWN, gap=rtt if not one_way else gap, **send_kw)
    cap.expect(f_resp, "dns-answer", answer_names(answers), host.ip)
    if one_way:
        for name, _ in questions:
            cap.events.append({"proto": "dns-query", "name": norm(name), "client_ip": str(ipaddress.ip_address(host.ip)),
                               "frame": f_resp, "seen": "response-only"})
    return f_query, f_resp


def a_chain(name: str, *hops: str, addrs: Iterable[str] = ("198.19.1.10",), ttl: int = 300) -> list[RR]:
    """An answer section ``name CNAME hop1 CNAME hop2 ... A addr...``."""
    rrs, owner = [], name
    for hop in hops:
        rrs.append(RR(owner, CNAME, hop, ttl))
        owner = hop
    rrs += [RR(owner, AAAA if ":" in a else A, a, ttl) for a in addrs]
    return rrs


# --------------------------------------------------------------------------- TCP


class _Side:
    """One direction of a TCP connection: ISN, what has been sent, and names awaiting completion."""

    def __init__(self, isn: int) -> None:
        self.isn = isn
        self.next = 0
        self.ranges: list[tuple[int, int]] = []
        self.fin = False
        self.markers: list[list] = []  # [end offset, [(proto, name)], fired]

    def contiguous(self) -> int:
        """Stream bytes present without a gap from offset 0 - what a reassembler can use."""
        end = 0
        for start, stop in sorted(self.ranges):
            if start > end:
                break
            end = max(end, stop)
        return end


class TcpFlow:
    """A TCP connection between a client and a server, segment by segment.

    Names are registered with :meth:`expect` at a stream offset; the first segment after
    which the stream is contiguous up to that offset is the frame that completes them.
    """

    def __init__(
        self, cap: Capture, host: Host, server: str, dport: int, *, rtt: float = 0.02, mss: int | None = None
    ) -> None:
        self.cap, self.host, self.server, self.dport, self.rtt = cap, host, server, dport, rtt
        self.sport = cap.rng.randrange(49152, 65536)
        self.sides = {UP: _Side(cap.rng.getrandbits(32)), DOWN: _Side(cap.rng.getrandbits(32))}
        self.mss = mss or (1440 if ":" in server else 1460)

    def _segment(self, up: bool, flags: str, seq: int, payload: bytes = b"", *, gap: float, options=()) -> int:
        other = self.sides[not up]
        ack = (other.isn + 1 + other.contiguous() + int(other.fin)) % (1 << 32) if "A" in flags else 0
        src, dst = (self.host.ip, self.server) if up else (self.server, self.host.ip)
        sport, dport = (self.sport, self.dport) if up else (self.dport, self.sport)
        tcp = TCP(
            sport=sport,
            dport=dport,
            flags=flags,
            seq=seq % (1 << 32),
            ack=ack,
            window=502 if up else 501,
            options=list(options),
        )
        pkt = self.cap.l3(src, dst, ttl=64 if up else 57, df=True) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        return self.cap.send(pkt, self.host, up, gap=gap)

    def handshake(self, gap: float = 0.5) -> None:
        """SYN, SYN-ACK, ACK."""
        opts = [("MSS", self.mss), ("NOP", None), ("WScale", 7), ("NOP", None), ("NOP", None), ("SAckOK", b"")]
        c, s = self.sides[UP], self.sides[DOWN]
        self._segment(UP, "S", c.isn, gap=gap, options=opts)
        self._segment(DOWN, "SA", s.isn, gap=self.rtt / 2, options=opts)
        self._segment(UP, "A", c.isn + 1, gap=self.rtt / 2)

    def expect(self, up: bool, end: int, proto: str, name: str) -> None:
        """``name`` is complete once stream bytes [0, end) of direction ``up`` are present."""
        self.sides[up].markers.append([end, [(proto, name)], False])

    def data(self, up: bool, payload: bytes, *, offset: int | None = None, gap: float = 0.0002) -> int:
        """Send ``payload`` at stream ``offset`` (default: right after the last byte sent)."""
        side = self.sides[up]
        off = side.next if offset is None else offset
        frame = self._segment(up, "PA", side.isn + 1 + off, payload, gap=gap)
        side.ranges.append((off, off + len(payload)))
        side.next = max(side.next, off + len(payload))
        have = side.contiguous()
        for marker in side.markers:
            if not marker[2] and marker[0] <= have:
                marker[2] = True
                for proto, name in marker[1]:
                    self.cap.expect(frame, proto, [name], self.host.ip)
        return frame

    def segments(
        self, up: bool, payload: bytes, cuts: Iterable[int], *, order: Iterable[int] | None = None, gap: float = 0.0002
    ) -> list[int]:
        """Send ``payload`` cut at the given offsets, the pieces in ``order`` (default: in order)."""
        bounds = [0, *cuts, len(payload)]
        pieces = [(bounds[i], payload[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]
        base = self.sides[up].next
        return [self.data(up, pieces[i][1], offset=base + pieces[i][0], gap=gap) for i in (order or range(len(pieces)))]

    def ack(self, up: bool, gap: float | None = None) -> int:
        """A pure ACK from direction ``up``."""
        side = self.sides[up]
        return self._segment(up, "A", side.isn + 1 + side.next, gap=self.rtt / 2 if gap is None else gap)

    def close(self) -> None:
        """FIN from the client, FIN from the server, final ACK."""
        c, s = self.sides[UP], self.sides[DOWN]
        self._segment(UP, "FA", c.isn + 1 + c.next, gap=0.05)
        c.fin = True
        self._segment(DOWN, "FA", s.isn + 1 + s.next, gap=self.rtt / 2)
        s.fin = True
        self._segment(UP, "A", c.isn + 2 + c.next, gap=self.rtt / 2)


def mss_cuts(length: int, mss: int) -> list[int]:
    """Where a sender with this MSS cuts a payload of ``length`` bytes."""
    return list(range(mss, length, mss))


# --------------------------------------------------------------------------- TLS and HTTP


def _u16(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _u16s(values: Iterable[int]) -> bytes:
    return b"".join(struct.pack(">H", v) for v in values)


def client_hello(
    sni: str | None,
    seed: str,
    *,
    pq: bool = True,
    ticket: int = 0,
    sni_after_key_share: bool = False,
    ech: bool = False,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
) -> bytes:
    """A TLS 1.3 ClientHello record built byte by byte like a current browser's.

    ``pq`` adds an X25519MLKEM768 key share (1216 bytes) as Chrome and Firefox do since 2024,
    so the record no longer fits one 1460-byte segment; ``ticket`` adds a session ticket of
    that many bytes; ``ech`` adds an encrypted_client_hello (0xfe0d) outer extension.
    """
    rng = random.Random(seed)
    groups = ([0x11EC] if pq else []) + [0x001D, 0x0017, 0x0018]
    shares = b""
    if pq:
        shares += struct.pack(">H", 0x11EC) + _u16(rng.randbytes(1216))
    shares += struct.pack(">H", 0x001D) + _u16(rng.randbytes(32))
    sni_ext = (0x0000, _u16(b"\x00" + _u16(sni.encode()))) if sni is not None else None
    exts: list[tuple[int, bytes]] = [
        (0x0017, b""),  # extended_master_secret
        (0xFF01, b"\x00"),  # renegotiation_info
        (0x000A, _u16(_u16s(groups))),  # supported_groups
        (0x000B, b"\x01\x00"),  # ec_point_formats
        (0x0023, rng.randbytes(ticket)),  # session_ticket
        (0x0010, _u16(b"".join(bytes([len(p)]) + p.encode() for p in alpn))),  # ALPN
        (0x0005, b"\x01\x00\x00\x00\x00"),  # status_request
        (0x000D, _u16(_u16s([0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]))),
        (0x0012, b""),  # signed_certificate_timestamp
        (0x0033, _u16(shares)),  # key_share
        (0x002D, b"\x01\x01"),  # psk_key_exchange_modes
        (0x002B, b"\x04\x03\x04\x03\x03"),  # supported_versions
        (0x001B, b"\x02\x00\x02"),  # compress_certificate: brotli
    ]
    if sni_ext:
        exts.insert(len(exts) if sni_after_key_share else 0, sni_ext)
    if ech:
        ech_body = b"\x00" + struct.pack(">HHB", 0x0001, 0x0001, rng.randrange(256))
        ech_body += _u16(rng.randbytes(32)) + _u16(rng.randbytes(239))
        exts.append((0xFE0D, ech_body))
    ciphers = [
        0x1301,
        0x1302,
        0x1303,
        0xC02B,
        0xC02F,
        0xC02C,
        0xC030,
        0xCCA9,
        0xCCA8,
        0xC013,
        0xC014,
        0x009C,
        0x009D,
        0x002F,
        0x0035,
    ]
    extensions = b"".join(struct.pack(">H", t) + _u16(v) for t, v in exts)
    body = (
        b"\x03\x03"
        + rng.randbytes(32)
        + b"\x20"
        + rng.randbytes(32)
        + _u16(_u16s(ciphers))
        + b"\x01\x00"
        + _u16(extensions)
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + _u16(handshake)


def tls_connect(
    cap: Capture,
    host: Host,
    server: str,
    sni: str,
    hello: bytes,
    *,
    port: int = 443,
    mss: int | None = None,
    gap: float = 0.5,
) -> TcpFlow:
    """Handshake, the ClientHello in as many segments as the MSS needs, and the server's ACK."""
    flow = TcpFlow(cap, host, server, port, mss=mss)
    flow.handshake(gap=gap)
    flow.expect(UP, len(hello), "tls-sni", sni)
    flow.segments(UP, hello, mss_cuts(len(hello), flow.mss))
    flow.ack(DOWN)
    return flow


def hello_flow(cap: Capture, host: Host, server: str, sni: str | None, seed: str, *, ech: bool = False,
               port: int = 443) -> TcpFlow:
    """Handshake and a one-segment ClientHello that may carry no server name (or ECH), then
    the server's ACK: what a connection showing no name, or only an outer one, looks like."""
    flow = TcpFlow(cap, host, server, port)
    flow.handshake()
    hello = client_hello(sni, seed, pq=False, ech=ech)
    if sni:
        flow.expect(UP, len(hello), "tls-sni", sni)
    flow.data(UP, hello)
    flow.ack(DOWN)
    return flow


def http_request(
    host_line: str, path: str = "/", *, version: str = "HTTP/1.1", method: str = "GET", ua: str = "Mozilla/5.0"
) -> bytes:
    """An HTTP/1.x request head; ``host_line`` is the whole Host header line as sent."""
    lines = [f"{method} {path} {version}", host_line, f"User-Agent: {ua}", "Accept: */*", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("ascii")


def http_get(
    cap: Capture, host: Host, server: str, host_line: str, expected: str, *, port: int = 80, gap: float = 0.5, **kw
) -> TcpFlow:
    """A full HTTP exchange whose request carries ``host_line``; ``expected`` is the name it yields."""
    flow = TcpFlow(cap, host, server, port)
    flow.handshake(gap=gap)
    request = http_request(host_line, **kw)
    flow.expect(UP, len(request), "http-host", expected)
    flow.data(UP, request)
    flow.ack(DOWN)
    flow.data(DOWN, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", gap=0.003)
    flow.close()
    return flow


# --------------------------------------------------------------------------- hosts used below

STAFF = client("198.18.10.21")
STAFF2 = client("198.18.10.34")
GUEST = client("198.18.20.101")
STAFF6 = client("fd00:10::21", v4_twin="198.18.10.21")
GUEST6 = client("fd00:20::101", v4_twin="198.18.20.101")
TIKTOK_WEB = "198.19.1.10"
TIKTOK_API = "198.19.1.20"
TIKTOK_CDN = "198.19.1.30"
TIKTOK_WEB6 = "fd00:19::1:10"
INNOCENT = "198.19.2.10"


# --------------------------------------------------------------------------- link and file layers


def link_capture(filename: str, about: str, link: str, linktype: int, **kw) -> Capture:
    """The standard link-layer content: a TikTok query and its answer, an innocent query, both families."""
    cap = Capture(filename, about, link=link, linktype=linktype, **kw)
    v6 = link not in ("ipv4",)
    v4 = link not in ("ipv6",)
    if v4:
        dns_udp(cap, STAFF, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
        dns_udp(cap, GUEST, "en.wikipedia.org", respond=False)
    if v6:
        dns_udp(cap, STAFF6, "m.tiktok.com", a_chain("m.tiktok.com", addrs=[TIKTOK_WEB6]))
        dns_udp(cap, GUEST6, "www.usa.gov", respond=False)
    return cap


def build_link_layers() -> list[Capture]:
    caps = [
        link_capture("eth.pcap", "Ethernet II (DLT 1), IPv4 and IPv6 DNS queries and a response", "eth", LT_ETHERNET),
        link_capture("vlan.pcap", "802.1Q tags: staff VLAN 10 and guest VLAN 20", "vlan", LT_ETHERNET),
        link_capture(
            "qinq.pcap", "802.1ad outer tag (0x88a8, S-VLAN 100) + 802.1Q inner tag (VLAN 10/20)", "qinq", LT_ETHERNET
        ),
        link_capture(
            "sll.pcap", "Linux cooked capture v1 (DLT 113), outgoing and incoming packet types", "sll", LT_SLL
        ),
        link_capture("sll2.pcap", "Linux cooked capture v2 (DLT 276)", "sll2", LT_SLL2),
        link_capture("raw.pcap", "Raw IP (DLT 101): IPv4 and IPv6 packets in one file", "raw", LT_RAW),
        link_capture("raw-ipv4.pcap", "LINKTYPE_IPV4 (228): raw IPv4 only", "ipv4", LT_IPV4),
        link_capture("raw-ipv6.pcap", "LINKTYPE_IPV6 (229): raw IPv6 only", "ipv6", LT_IPV6),
        link_capture(
            "loop.pcap", "DLT_LOOP (108): address family in network byte order (AF 2, AF 24 for IPv6)", "loop", LT_LOOP
        ),
        link_capture(
            "ns.pcap", "Nanosecond pcap (magic 0xa1b23c4d), sub-microsecond timestamps", "eth", LT_ETHERNET, nanos=True
        ),
        link_capture(
            "bigendian.pcap",
            "Big-endian pcap header and record headers (magic a1 b2 c3 d4 on disk)",
            "eth",
            LT_ETHERNET,
            big_endian=True,
        ),
        link_capture(
            "null-bigendian.pcap",
            "DLT_NULL written by a big-endian host: AF 2 and AF 24 in big-endian",
            "null",
            LT_NULL,
            big_endian=True,
        ),
    ]
    for cap in caps:
        if cap.nanos:  # make the sub-microsecond part visible
            for i, f in enumerate(cap.frames):
                f.ts_ns += 123 + i

    null = Capture(
        "null.pcap",
        "DLT_NULL (0), little-endian host: AF 2, and IPv6 as AF 24, 28 and 30",
        link="null",
        linktype=LT_NULL,
    )
    dns_udp(null, STAFF, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
    dns_udp(null, GUEST, "en.wikipedia.org", respond=False)
    for af, name in (
        (AF_INET6_BSD, "m.tiktok.com"),
        (AF_INET6_FREEBSD, "www.usa.gov"),
        (AF_INET6_DARWIN, "vm.tiktok.com"),
    ):
        dns_udp(null, STAFF6, name, respond=False, af6=af)
    caps.append(null)

    multi = Capture(
        "multi-iface.pcapng",
        "pcapng: two IDBs (Ethernet, µs; raw IP, if_tsresol=9), EPBs on both, a Simple Packet Block, ISBs",
        fmt="pcapng",
        interfaces=[(LT_ETHERNET, 6, "span0"), (LT_RAW, 9, "tun0")],
    )
    dns_udp(multi, STAFF, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
    dns_udp(multi, GUEST, "api16-normal-c-useast1a.tiktokv.com", respond=False, link="raw", iface=1)
    dns_udp(multi, STAFF6, "www.gov.uk", respond=False, link="raw", iface=1)
    dns_udp(multi, STAFF2, "en.wikipedia.org", respond=False, simple=True)
    dns_udp(multi, GUEST, "v16m.tiktokcdn.com", respond=False)
    multi.frames[-1].ts_ns += 789  # sub-µs on the Ethernet interface: must be truncated to µs, not lost
    caps.append(multi)

    big_ng = Capture(
        "bigendian-ng.pcapng",
        "pcapng section written big-endian (byte-order magic 1a2b3c4d on disk)",
        fmt="pcapng",
        big_endian=True,
        interfaces=[(LT_ETHERNET, 6, "eth0")],
    )
    dns_udp(big_ng, STAFF, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
    dns_udp(big_ng, GUEST, "www.gov.uk", respond=False)
    caps.append(big_ng)

    gz = link_capture("eth-gzip.pcap.gz", "The Ethernet capture compressed with gzip (.pcap.gz)", "eth", LT_ETHERNET)
    caps.append(gz)

    truncated = Capture(
        "truncated.pcap", "File ends in the middle of the last record's data: names before the cut only"
    )
    dns_udp(truncated, STAFF, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
    dns_udp(truncated, GUEST, "www.gov.uk", respond=False)
    before_cut = len(truncated.events)
    dns_udp(truncated, STAFF2, "vm.tiktok.com", respond=False)  # file_bytes() cuts this record in half
    del truncated.events[before_cut:]
    caps.append(truncated)

    user0 = Capture(
        "unknown-linktype.pcap",
        "Link type 147 (USER0) carrying Ethernet frames: unsupported, no names",
        linktype=LT_USER0,
    )
    dns_udp(user0, STAFF, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
    user0.events.clear()
    caps.append(user0)

    garbage = Capture(
        "garbage.pcap",
        "4 KiB of seeded random bytes: not a capture; the reader must fail with one clear error",
        expected_file=False,
    )
    caps.append(garbage)
    return caps


# --------------------------------------------------------------------------- network layer


def build_network_layer() -> list[Capture]:
    opts = Capture(
        "ipv4-options.pcap", "IPv4 headers with options (Record Route + Router Alert, IHL 9; Router Alert alone, IHL 6)"
    )
    for name, options in (
        ("www.tiktok.com", [IPOption_RR(routers=["0.0.0.0", "0.0.0.0"]), IPOption_Router_Alert()]),
        ("www.gov.uk", [IPOption_Router_Alert()]),
    ):
        qid, sport = opts.rng.randrange(1 << 16), opts.rng.randrange(49152, 65536)
        ip = IP(src=STAFF.ip, dst=RESOLVER, id=0x2000 + qid % 256, options=options)
        f = opts.send(
            ip / UDP(sport=sport, dport=53) / Raw(dns_message(qid, [(name, A)], qr=False)), STAFF, UP, gap=0.5
        )
        opts.expect(f, "dns-query", [name], STAFF.ip)
    # A response with options too, so the dns-answer direction crosses the longer header.
    qid, sport = opts.rng.randrange(1 << 16), opts.rng.randrange(49152, 65536)
    ip = IP(src=STAFF.ip, dst=RESOLVER, id=0x2100, options=[IPOption_NOP(), IPOption_Router_Alert()])
    f = opts.send(
        ip / UDP(sport=sport, dport=53) / Raw(dns_message(qid, [("m.tiktok.com", A)], qr=False)), STAFF, UP, gap=0.5
    )
    opts.expect(f, "dns-query", ["m.tiktok.com"], STAFF.ip)
    answers = a_chain("m.tiktok.com", addrs=[TIKTOK_WEB])
    ip = IP(src=RESOLVER, dst=STAFF.ip, id=0x2101, options=[IPOption_Router_Alert()])
    f = opts.send(
        ip / UDP(sport=53, dport=sport) / Raw(dns_message(qid, [("m.tiktok.com", A)], answers, qr=True)), STAFF, DOWN
    )
    opts.expect(f, "dns-answer", answer_names(answers), STAFF.ip)

    ext = Capture(
        "ipv6-ext.pcap", "IPv6 hop-by-hop + destination options headers before UDP (and before TCP for a ClientHello)"
    )
    for name, chain in (
        (
            "www.tiktok.com",
            IPv6ExtHdrHopByHop(options=[RouterAlert()]) / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")]),
        ),
        ("www.gov.uk", IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")])),
    ):
        qid, sport = ext.rng.randrange(1 << 16), ext.rng.randrange(49152, 65536)
        pkt = (
            IPv6(src=STAFF6.ip, dst=RESOLVER6, hlim=64)
            / chain
            / UDP(sport=sport, dport=53)
            / Raw(dns_message(qid, [(name, AAAA)], qr=False))
        )
        f = ext.send(pkt, STAFF6, UP, gap=0.5)
        ext.expect(f, "dns-query", [name], STAFF6.ip)
    # TLS over IPv6 with a hop-by-hop header in every client segment.
    flow = TcpFlow(ext, STAFF6, TIKTOK_WEB6, 443)
    hello = client_hello("www.tiktok.com", "ipv6-ext", pq=False)
    flow.handshake()
    side = flow.sides[UP]
    tcp = TCP(sport=flow.sport, dport=443, flags="PA", seq=side.isn + 1, ack=flow.sides[DOWN].isn + 1, window=502)
    pkt = (
        IPv6(src=STAFF6.ip, dst=TIKTOK_WEB6, hlim=64)
        / IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0\0\0\0")])
        / tcp
        / Raw(hello)
    )
    f = ext.send(pkt, STAFF6, UP, gap=0.0002)
    side.ranges.append((0, len(hello)))
    side.next = len(hello)
    ext.expect(f, "tls-sni", ["www.tiktok.com"], STAFF6.ip)
    flow.ack(DOWN)

    frag = Capture(
        "ipv4-fragments.pcap",
        "A DNS query fragmented in IPv4 (EDNS padding makes it 600 B): the first fragment carries UDP header and "
        "question "
        "and yields the name; non-first fragments are skipped. Second datagram arrives last-fragment-first.",
        tshark_args=("-o", "ip.defragment:FALSE"),
    )
    for name, reverse in (("www.tiktok.com", False), ("v16m.tiktokcdn.com", True)):
        qid, sport = frag.rng.randrange(1 << 16), frag.rng.randrange(49152, 65536)
        query = dns_message(qid, [(name, A)], additional=[edns(options=[(12, bytes(560))])], qr=False)
        datagram = (
            IP(src=STAFF.ip, dst=RESOLVER, id=0x3000 + len(frag.frames), ttl=64)
            / UDP(sport=sport, dport=53)
            / Raw(query)
        )
        pieces = fragment(datagram, fragsize=256)
        question_end = 8 + 12 + len(name) + 2 + 4  # UDP header, DNS header, QNAME, QTYPE and QCLASS
        assert len(pieces) == 3 and question_end <= len(pieces[0].payload)
        numbered = []
        for piece in reversed(pieces) if reverse else pieces:
            numbered.append((frag.send(piece, STAFF, UP, gap=0.0001 if numbered else 0.5), piece))
        first = next(f for f, p in numbered if p.frag == 0)
        frag.expect(first, "dns-query", [name], STAFF.ip)
    dns_udp(frag, STAFF, "www.gov.uk", respond=False)

    frag6 = Capture(
        "ipv6-fragments.pcap",
        "A DNS query in IPv6 fragments (Fragment header): the first fragment yields the name, the others are skipped",
        tshark_args=("-o", "ipv6.defragment:FALSE"),
    )
    qid, sport = frag6.rng.randrange(1 << 16), frag6.rng.randrange(49152, 65536)
    query = dns_message(qid, [("www.tiktok.com", AAAA)], additional=[edns(options=[(12, bytes(560))])], qr=False)
    datagram = (
        IPv6(src=STAFF6.ip, dst=RESOLVER6, hlim=64)
        / IPv6ExtHdrFragment(id=0x4242)
        / UDP(sport=sport, dport=53)
        / Raw(query)
    )
    for i, piece in enumerate(fragment6(datagram, 400)):
        f = frag6.send(piece, STAFF6, UP, gap=0.0001 if i else 0.5)
        if i == 0:
            frag6.expect(f, "dns-query", ["www.tiktok.com"], STAFF6.ip)
    dns_udp(frag6, STAFF6, "www.gov.uk", respond=False)
    return [opts, ext, frag, frag6]


# --------------------------------------------------------------------------- DNS


def build_dns() -> list[Capture]:
    chain = Capture(
        "dns-cname-chain.pcap",
        "www.tiktok.com CNAME www.tiktok.com.edgesuite.net CNAME a1.w10.akamai.net A x2: "
        "owners and targets, deduplicated",
    )
    dns_udp(
        chain,
        STAFF,
        "www.tiktok.com",
        a_chain(
            "www.tiktok.com", "www.tiktok.com.edgesuite.net", "a1.w10.akamai.net", addrs=["198.19.3.1", "198.19.3.2"]
        ),
    )
    dns_udp(chain, STAFF, "en.wikipedia.org", a_chain("en.wikipedia.org", "dyna.wikimedia.org", addrs=["198.19.2.10"]))

    https = Capture(
        "dns-https.pcap", "HTTPS (65) and SVCB (64) answers: TargetName reported, '.' (ServiceMode self) not; AliasMode"
    )
    dns_udp(
        https,
        STAFF,
        [("www.tiktok.com", HTTPS)],
        [RR("www.tiktok.com", HTTPS, (1, "tiktok-svc.tiktokcdn.com", [alpn_param("h2", "h3")]))],
    )
    dns_udp(
        https,
        STAFF,
        [("www.wikipedia.org", HTTPS)],
        [RR("www.wikipedia.org", HTTPS, (1, ".", [alpn_param("h2", "h3"), (4, bytes([198, 19, 2, 10]))]))],
    )
    dns_udp(
        https, GUEST, [("m.tiktok.com", HTTPS)], [RR("m.tiktok.com", HTTPS, (0, "m.tiktok.com.tiktokcdn-eu.com", []))]
    )
    dns_udp(
        https,
        STAFF,
        [("_dns.resolver.arpa", SVCB)],
        [
            RR(
                "_dns.resolver.arpa",
                SVCB,
                (1, "dns.resolver.example.gov", [alpn_param("dot"), (3, struct.pack(">H", 853))]),
            )
        ],
    )

    dname = Capture(
        "dns-dname.pcap", "DNAME (39) with its synthesised CNAME: DNAME owner and target, CNAME owner and target"
    )
    dns_udp(
        dname,
        GUEST,
        "api16-normal-c-useast1a.tiktokv.com",
        [
            RR("tiktokv.com", DNAME, "tiktokv.us"),
            RR("api16-normal-c-useast1a.tiktokv.com", CNAME, "api16-normal-c-useast1a.tiktokv.us", ttl=0),
            RR("api16-normal-c-useast1a.tiktokv.us", A, TIKTOK_API),
        ],
    )
    dns_udp(
        dname,
        STAFF,
        "www.agency.example.gov",
        [
            RR("agency.example.gov", DNAME, "agency.example.net"),
            RR("www.agency.example.gov", CNAME, "www.agency.example.net", ttl=0),
            RR("www.agency.example.net", A, INNOCENT),
        ],
    )

    comp = Capture(
        "dns-compression.pcap",
        "Compression pointers: into the question, into CNAME rdata, pointer chains; "
        "a 2-question query; an uncompressed response; NS/SOA outside the answer section",
    )
    dns_udp(
        comp,
        STAFF,
        "v16m.tiktokcdn.com",
        [
            RR(
                "v16m.tiktokcdn.com", CNAME, "v16m.tiktokcdn.com.c.bytefcdn.com"
            ),  # target ends in a pointer to the question
            RR("v16m.tiktokcdn.com.c.bytefcdn.com", CNAME, "a.c.bytefcdn.com"),  # owner is a pointer into rdata
            RR("a.c.bytefcdn.com", CNAME, "x.a.c.bytefcdn.com"),  # pointer to a name that ends in a pointer
            RR("x.a.c.bytefcdn.com", A, TIKTOK_CDN),
        ],
        authority=[RR("bytefcdn.com", NS, "ns1.bytefcdn.com")],
    )
    dns_udp(
        comp,
        STAFF,
        [("www.tiktok.com", A), ("www.tiktok.com", AAAA)],  # second question is one pointer
        a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]),
    )
    dns_udp(
        comp,
        GUEST,
        "m.tiktok.com",
        a_chain("m.tiktok.com", "m.tiktok.com.edgesuite.net", addrs=[TIKTOK_WEB]),
        compress=False,
    )
    dns_udp(
        comp,
        STAFF,
        "missing.tiktok.com",
        [],
        rcode=3,
        authority=[
            RR("tiktok.com", SOA, ("ns1.tiktok.com", "hostmaster.tiktok.com", 2026030201, 3600, 600, 604800, 300))
        ],
    )

    case = Capture("dns-0x20-case.pcap", "Mixed-case names (DNS 0x20 and CNAME targets): reported lowercased")
    dns_udp(
        case, STAFF, "wWw.TiKtOk.CoM", a_chain("wWw.TiKtOk.CoM", "WWW.TikTok.com.EdgeSuite.net", addrs=[TIKTOK_WEB])
    )

    innocent = Capture(
        "dns-innocent.pcap", "Only innocent names: A/AAAA, NS (owner only, targets not reported), MX, TXT, NXDOMAIN"
    )
    dns_udp(innocent, STAFF, "www.google.com", [RR("www.google.com", A, "198.19.4.1")])
    dns_udp(
        innocent,
        STAFF6,
        "www.wikipedia.org",
        a_chain("www.wikipedia.org", "dyna.wikimedia.org", addrs=["fd00:19::2:10"]),
    )
    dns_udp(
        innocent,
        GUEST,
        [("gov.uk", NS)],
        [RR("gov.uk", NS, "ns1.example.gov.uk"), RR("gov.uk", NS, "ns2.example.gov.uk")],
    )
    dns_udp(innocent, STAFF, [("example.gov", MX)], [RR("example.gov", MX, (10, "mail.example.gov"))])
    dns_udp(innocent, STAFF, [("example.gov", TXT)], [RR("example.gov", TXT, [b"v=spf1 -all"])])
    dns_udp(innocent, GUEST, "wpad.guest.example", [], rcode=3)

    return [chain, https, dname, comp, case, innocent, build_dns_tcp()]


def build_proxy_and_bare_requests() -> Capture:
    """A load balancer's PROXY header (v1) before a ClientHello, and a request line without an
    HTTP version that still carries a Host header. (Version 2 headers, which tshark 4.0 does
    not read through, are tested on crafted frames: tests/test_proxy.py.)"""
    cap = Capture("proxy-protocol.pcap", "PROXY protocol v1 before a ClientHello (a load balancer to its "
                  "backend); an HTTP request line without a version, with a Host header")
    sni = "api16-normal-c-useast1a.tiktokv.com"
    header = b"PROXY TCP4 198.18.10.21 198.19.1.20 52176 443\r\n"
    flow = TcpFlow(cap, STAFF, TIKTOK_API, 443)
    flow.handshake()
    stream = header + client_hello(sni, "proxy-1")
    flow.expect(UP, len(stream), "tls-sni", sni)
    flow.segments(UP, stream, mss_cuts(len(stream), flow.mss))
    flow.ack(DOWN)
    flow = TcpFlow(cap, STAFF2, TIKTOK_WEB, 80)
    flow.handshake()
    request = b"GET /share/video\r\nHost: www.tiktok.com\r\n\r\n"
    flow.expect(UP, len(request), "http-host", "www.tiktok.com")
    flow.data(UP, request)
    flow.ack(DOWN)
    flow.close()
    return cap


def build_one_way() -> Capture:
    """What a tap that sees only the resolver's side gives: answers, most of them NXDOMAIN
    (a resolver blocking TikTok), one repeated; every device that looked a TikTok name up is
    named by the question its answer repeats."""
    cap = Capture("dns-one-way.pcap", "The resolver's answers only (a one-way tap): NXDOMAIN and A answers "
                  "whose queries were not captured; each question reported once, as seen in the response only")
    dns_udp(cap, STAFF, "www.tiktok.com", [], rcode=3, one_way=True)
    dns_udp(cap, GUEST, "m.tiktok.com", a_chain("m.tiktok.com", addrs=[TIKTOK_WEB]), one_way=True)
    _, repeated = dns_udp(cap, STAFF2, "api16-normal-c-useast1a.tiktokv.com", [], rcode=3, one_way=True)
    cap.raw(cap.frames[repeated - 1].data, gap=1.0)  # the resolver's answer again: the same transaction
    dns_udp(cap, STAFF6, "v16m.tiktokcdn.com", [], rcode=3, one_way=True)
    dns_udp(cap, GUEST6, "en.wikipedia.org", a_chain("en.wikipedia.org", addrs=["198.19.2.10"]), one_way=True)
    return cap


def build_dns_tcp() -> Capture:
    cap = Capture(
        "dns-tcp.pcap",
        "DNS over TCP: handshake; two length-prefixed queries in one segment; "
        "one response split over two segments; a second response in one segment",
    )
    flow = TcpFlow(cap, STAFF, RESOLVER, 53, rtt=0.012)
    flow.handshake()
    q1 = (cap.rng.randrange(1 << 16), "www.tiktok.com")
    q2 = (cap.rng.randrange(1 << 16), "www.gov.uk")
    stream = b""
    for qid, name in (q1, q2):
        msg = dns_message(qid, [(name, A)], qr=False)
        stream += _u16(msg)
        flow.expect(UP, len(stream), "dns-query", name)
    flow.data(UP, stream)
    answers1 = a_chain(
        "www.tiktok.com", "www.tiktok.com.edgesuite.net", "a1.w10.akamai.net", addrs=["198.19.3.1", "198.19.3.2"]
    )
    answers2 = [RR("www.gov.uk", A, INNOCENT)]
    r1 = _u16(dns_message(q1[0], [(q1[1], A)], answers1, qr=True))
    r2 = _u16(dns_message(q2[0], [(q2[1], A)], answers2, qr=True))
    for name in answer_names(answers1):
        flow.expect(DOWN, len(r1), "dns-answer", name)
    for name in answer_names(answers2):
        flow.expect(DOWN, len(r1) + len(r2), "dns-answer", name)
    flow.segments(DOWN, r1, [40], gap=flow.rtt)
    flow.ack(UP)
    flow.data(DOWN, r2, gap=0.001)
    flow.ack(UP)
    flow.close()
    return cap


# --------------------------------------------------------------------------- devices


def dhcp_frames(
    cap: Capture, host: Host, hostname: str, xid: int, *, relay: str, discover: bool = True, link: str = "eth"
) -> None:
    """A DHCP exchange (DORA, or REQUEST/ACK only) for ``host`` through a relay at ``relay``."""

    def framed(pkt: Packet, up: bool) -> int:
        src_mac, dst_mac = (host.mac, BROADCAST_MAC) if up else (GW_MAC, BROADCAST_MAC)
        if link == "vlan":
            frame = Ether(src=src_mac, dst=dst_mac) / Dot1Q(vlan=host.vlan) / pkt
        else:
            frame = Ether(src=src_mac, dst=dst_mac) / pkt
        return cap.raw(bytes(frame), gap=0.004 if not up else 0.3)

    chaddr = bytes.fromhex(host.mac.replace(":", ""))
    client_opts = [
        ("client_id", b"\x01" + chaddr),
        ("hostname", hostname.encode()),
        ("param_req_list", [1, 3, 6, 15, 119, 252]),
    ]

    def from_client(kind: str) -> Packet:
        opts = [("message-type", kind), *client_opts, ("requested_addr", host.ip)]
        if kind == "request" and discover:
            opts.append(("server_id", DHCP_SERVER))
        return (
            IP(src="0.0.0.0", dst="255.255.255.255", ttl=64, id=0)
            / UDP(sport=68, dport=67)
            / BOOTP(op=1, chaddr=chaddr, xid=xid, flags=0x8000)
            / DHCP(options=[*opts, "end"])
        )

    def from_server(kind: str) -> Packet:
        opts = [
            ("message-type", kind),
            ("server_id", DHCP_SERVER),
            ("lease_time", 28800),
            ("subnet_mask", "255.255.255.0"),
            ("router", relay),
            ("name_server", RESOLVER),
            "end",
        ]
        return (
            IP(src=relay, dst="255.255.255.255", ttl=64, id=0)
            / UDP(sport=67, dport=68)
            / BOOTP(op=2, chaddr=chaddr, xid=xid, flags=0x8000, yiaddr=host.ip, siaddr=DHCP_SERVER, giaddr=relay)
            / DHCP(options=opts)
        )

    if discover:
        framed(from_client("discover"), UP)
        framed(from_server("offer"), DOWN)
    framed(from_client("request"), UP)
    framed(from_server("ack"), DOWN)


def build_devices() -> list[Capture]:
    cap = Capture(
        "dhcp-arp.pcap",
        "DHCP DORA with hostname (option 12) and requested address, ACK with yiaddr; "
        "ARP request/reply binding a second MAC to its IP; then DNS from both hosts",
    )
    alice = Host("198.18.10.23", "02:00:00:0a:00:17", None)
    printer = Host("198.18.10.42", "02:00:00:0a:00:2a", None)
    dhcp_frames(cap, alice, "alice-phone", 0x5A1CE001, relay="198.18.10.1")
    arp_request = Ether(src=GW_MAC, dst=BROADCAST_MAC) / ARP(
        op=1, hwsrc=GW_MAC, psrc="198.18.10.1", hwdst="00:00:00:00:00:00", pdst=printer.ip
    )
    arp_reply = Ether(src=printer.mac, dst=GW_MAC) / ARP(
        op=2, hwsrc=printer.mac, psrc=printer.ip, hwdst=GW_MAC, pdst="198.18.10.1"
    )
    cap.raw(bytes(arp_request), gap=0.5)
    cap.raw(bytes(arp_reply), gap=0.0005)
    dns_udp(cap, alice, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
    dns_udp(cap, printer, "time.example.gov", [RR("time.example.gov", A, INNOCENT)])
    dns_udp(cap, alice, "v16m.tiktokcdn.com", respond=False)
    return [cap]


# --------------------------------------------------------------------------- TLS and HTTP


def build_tls_http() -> list[Capture]:
    caps = []
    big = lambda sni, seed, **kw: client_hello(sni, seed, pq=True, ticket=352, **kw)  # noqa: E731 - ~1.9 kB

    one = Capture(
        "tls-one-segment.pcap",
        "ClientHello (X25519 only, ~0.5 kB) in one segment after a full handshake; an innocent one too",
    )
    tls_connect(one, STAFF, TIKTOK_WEB, "www.tiktok.com", client_hello("www.tiktok.com", "one-1", pq=False))
    tls_connect(one, GUEST, INNOCENT, "en.wikipedia.org", client_hello("en.wikipedia.org", "one-2", pq=False))
    caps.append(one)

    two = Capture(
        "tls-two-segments.pcap",
        "~1.9 kB post-quantum ClientHello (X25519MLKEM768 key share) cut at MSS 1460 into two segments",
    )
    tls_connect(two, STAFF, TIKTOK_WEB, "www.tiktok.com", big("www.tiktok.com", "two"))
    caps.append(two)

    three = Capture(
        "tls-three-segments.pcap", "~1.9 kB ClientHello in three segments of 700 bytes (a path with MSS 700)"
    )
    tls_connect(
        three,
        GUEST,
        TIKTOK_API,
        "api16-normal-c-useast1a.tiktokv.com",
        big("api16-normal-c-useast1a.tiktokv.com", "three"),
        mss=700,
    )
    caps.append(three)

    late = Capture(
        "tls-sni-in-second-segment.pcap",
        "server_name extension placed after the 1.2 kB key share, so the SNI itself only arrives in the second segment",
    )
    hello = big("www.tiktok.com", "late", sni_after_key_share=True)
    assert hello.index(b"www.tiktok.com") > 1460
    tls_connect(late, STAFF, TIKTOK_WEB, "www.tiktok.com", hello)
    caps.append(late)

    ooo = Capture(
        "tls-out-of-order.pcap", "Three-segment ClientHello sent in order 1, 3, 2: completed by the late middle segment"
    )
    hello = big("www.tiktok.com", "ooo")
    flow = TcpFlow(ooo, STAFF, TIKTOK_WEB, 443, mss=700)
    flow.handshake()
    flow.expect(UP, len(hello), "tls-sni", "www.tiktok.com")
    flow.segments(UP, hello, [700, 1400], order=[0, 2, 1])
    flow.ack(DOWN)
    caps.append(ooo)

    rtx = Capture(
        "tls-retransmit.pcap",
        "First segment retransmitted before the second; second retransmitted after completion: one event",
    )
    hello = big("www.tiktok.com", "rtx")
    flow = TcpFlow(rtx, STAFF, TIKTOK_WEB, 443)
    flow.handshake()
    flow.expect(UP, len(hello), "tls-sni", "www.tiktok.com")
    flow.data(UP, hello[:1460], offset=0)
    flow.data(UP, hello[:1460], offset=0, gap=0.2)  # RTO retransmission
    flow.data(UP, hello[1460:], offset=1460)
    flow.data(UP, hello[1460:], offset=1460, gap=0.2)  # spurious retransmission after the ClientHello is complete
    flow.ack(DOWN)
    caps.append(rtx)

    v6 = Capture("tls-ipv6.pcap", "IPv6 TCP handshake and a two-segment ClientHello (MSS 1440)")
    tls_connect(v6, STAFF6, TIKTOK_WEB6, "www.tiktok.com", big("www.tiktok.com", "v6"))
    caps.append(v6)

    ech = Capture(
        "tls-ech.pcap",
        "ClientHelloOuter with encrypted_client_hello (0xfe0d): the event carries the public (outer) name",
    )
    tls_connect(
        ech, STAFF, "198.19.5.1", "cloudflare-ech.com", client_hello("cloudflare-ech.com", "ech", pq=True, ech=True)
    )
    caps.append(ech)

    blind = Capture(
        "blind-spots.pcap",
        "where the sensor is blind: iCloud Private Relay's DNS check, DoH to dns.google, DoT to dns.quad9.net "
        "on port 853, and an innocent TLS connection (visibility signatures)",
    )
    dns_udp(blind, STAFF, "mask.icloud.com", a_chain("mask.icloud.com", addrs=["198.19.9.1"]))
    tls_connect(blind, STAFF2, "198.19.8.8", "dns.google", client_hello("dns.google", "blind-doh", pq=False))
    # DNS over TLS, to a resolver a signature names and to ones none does (blind spots by the
    # port, 853; `names` lists DoT beside any SNI), and DNS over QUIC.
    for host, sni, server, seed in ((GUEST, "dns.quad9.net", "198.19.9.9", "blind-dot"),
                                    (STAFF, "resolver.corp.example", "198.19.9.54", "blind-dot-54"),
                                    (STAFF, None, "198.19.9.55", "blind-dot-55")):
        flow = TcpFlow(blind, host, server, 853)
        flow.handshake()
        hello = client_hello(sni, seed, pq=False)
        if sni:
            flow.expect(UP, len(hello), "tls-sni", sni)
        flow.expect(UP, len(hello), "dot", f"{server}:853")
        flow.data(UP, hello)
        flow.ack(DOWN)
    tls_connect(blind, GUEST, INNOCENT, "en.wikipedia.org", client_hello("en.wikipedia.org", "blind-none", pq=False))
    initial = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + blind.rng.randbytes(8) + b"\x00\x00" + b"\x44\xb0"
    initial += blind.rng.randbytes(1200 - len(initial))
    frame = blind.send(blind.l3(STAFF2.ip, "198.19.9.56") / UDP(sport=51515, dport=853) / Raw(initial), STAFF2, UP)
    blind.expect(frame, "doq", ["198.19.9.56:853"], STAFF2.ip)
    caps.append(blind)

    inferred = Capture(
        "dns-address-inference.pcap",
        "a DNS answer gives a client TikTok's address; that client then connects there with no SNI and with ECH "
        "(the name is inferred from the answer), with another name (not inferred), and another client without "
        "the answer connects there too (not inferred)",
    )
    dns_udp(inferred, STAFF, "www.tiktok.com", a_chain("www.tiktok.com", addrs=[TIKTOK_WEB]))
    for host, sni, seed, ech in ((STAFF, None, "infer-none", False), (STAFF, "cloudflare-ech.com", "infer-ech", True),
                                 (STAFF, "en.wikipedia.org", "infer-other", False), (GUEST, None, "infer-guest", False)):
        hello_flow(inferred, host, TIKTOK_WEB, sni, seed, ech=ech)
    caps.append(inferred)

    by_address = Capture(
        "address-entries.pcap",
        "TLS connections judged by their server's address (visibility.toml's resolver addresses): no SNI to "
        "1.1.1.1 (DNS over HTTPS to an IP-literal URL) and ECH to 2606:4700:4700::1111 (encrypted-dns blind "
        "spots); a named one to 1.1.1.1 and no SNI to an address no entry holds (nothing)",
    )
    for host, sni, server, seed, ech in ((STAFF, None, "1.1.1.1", "addr-doh", False),
                                         (STAFF6, "cloudflare-ech.com", "2606:4700:4700::1111", "addr-ech", True),
                                         (GUEST, "one.one.one.one", "1.1.1.1", "addr-named", False),
                                         (GUEST, None, INNOCENT, "addr-innocent", False)):
        hello_flow(by_address, host, server, sni, seed, ech=ech)
    caps.append(by_address)

    tunnel = Capture(
        "tunnels.pcap",
        "VPN handshakes, each a blind spot: a WireGuard handshake initiation on port 51820, an IKEv2 "
        "IKE_SA_INIT to 500, an OpenVPN hard reset over UDP and over TCP to 1194, a PPTP "
        "Start-Control-Connection-Request to 1723; and what must not pass "
        "for them: a WireGuard response, ESP on 4500, another OpenVPN opcode, an IKEv2 responder's refusal "
        "(INVALID_KE_PAYLOAD) to port 500",
    )
    rng = tunnel.rng
    wg_init = b"\x01\x00\x00\x00" + bytes(rng.randrange(256) for _ in range(144))
    frame = tunnel.send(tunnel.l3(STAFF.ip, "198.19.7.1") / UDP(sport=41641, dport=51820) / Raw(wg_init), STAFF, UP)
    tunnel.expect(frame, "wireguard", ["198.19.7.1:51820"], STAFF.ip)
    wg_response = b"\x02\x00\x00\x00" + bytes(88)
    tunnel.send(tunnel.l3("198.19.7.1", STAFF.ip) / UDP(sport=51820, dport=41641) / Raw(wg_response), STAFF, DOWN)
    ike = bytes(rng.randrange(256) for _ in range(8)) + bytes(8) + bytes([33, 0x20, 34, 0x08]) + bytes(4)
    body = bytes(40)
    ike += (28 + len(body)).to_bytes(4, "big") + body
    frame = tunnel.send(tunnel.l3(STAFF2.ip, "198.19.7.2") / UDP(sport=500, dport=500) / Raw(ike), STAFF2, UP)
    tunnel.expect(frame, "ike", ["198.19.7.2:500"], STAFF2.ip)
    esp = (0x1234ABCD).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(60)
    tunnel.send(tunnel.l3(STAFF2.ip, "198.19.7.2") / UDP(sport=4500, dport=4500) / Raw(esp), STAFF2, UP)
    reset = bytes([7 << 3]) + bytes(rng.randrange(256) for _ in range(8)) + bytes([0, 0, 0, 0, 0])
    frame = tunnel.send(tunnel.l3(GUEST.ip, "198.19.7.3") / UDP(sport=50111, dport=1194) / Raw(reset), GUEST, UP)
    tunnel.expect(frame, "openvpn", ["198.19.7.3:1194"], GUEST.ip)
    data = bytes([9 << 3]) + bytes(40)
    tunnel.send(tunnel.l3(GUEST.ip, "198.19.7.3") / UDP(sport=50111, dport=1194) / Raw(data), GUEST, UP)
    flow = TcpFlow(tunnel, STAFF, "198.19.7.4", 1194)
    flow.handshake()
    framed = len(reset).to_bytes(2, "big") + reset
    flow.expect(UP, len(framed), "openvpn", "198.19.7.4:1194")
    flow.data(UP, framed)
    flow = TcpFlow(tunnel, GUEST, "198.19.7.5", 1723)
    flow.handshake()
    start = ((156).to_bytes(2, "big") + b"\x00\x01\x1a\x2b\x3c\x4d\x00\x01\x00\x00" + b"\x01\x00\x00\x00"
             + (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
             + b"ras-client".ljust(64, b"\x00") + b"".ljust(64, b"\x00"))
    flow.expect(UP, len(start), "pptp", "198.19.7.5:1723")
    flow.data(UP, start)
    # The IKEv2 responder refuses the initiator's group (INVALID_KE_PAYLOAD, RFC 7296 1.3,
    # asking for ECP-256): an IKE_SA_INIT response, still with a zero responder SPI, back to
    # the initiator's port 500. The gateway is not a device starting a VPN.
    notify = bytes([0, 0]) + (10).to_bytes(2, "big") + bytes([0, 0]) + (17).to_bytes(2, "big") + (19).to_bytes(2, "big")
    refusal = ike[:8] + bytes(8) + bytes([41, 0x20, 34, 0x20]) + bytes(4) + (28 + len(notify)).to_bytes(4, "big") + notify
    tunnel.send(tunnel.l3("198.19.7.2", STAFF2.ip) / UDP(sport=500, dport=500) / Raw(refusal), STAFF2, DOWN)
    caps.append(tunnel)

    port = Capture(
        "tls-nonstandard-port.pcap",
        "ClientHello to TCP port 8443 (SNI is extracted on any port)",
        tshark_args=("-d", "tcp.port==8443,tls"),
    )
    tls_connect(port, GUEST, TIKTOK_WEB, "www.tiktok.com", client_hello("www.tiktok.com", "port", pq=False), port=8443)
    caps.append(port)

    not_tls = Capture(
        "tls-non-tls-0x16.pcap",
        "Flows to 443 whose first byte is 0x16 but that are not a ClientHello: bad version, "
        "oversized record length, a Certificate handshake, a ClientHello whose cipher list overruns it: no names",
    )
    junk = random.Random("non-tls")
    bogus_hello_body = (
        b"\x03\x03" + junk.randbytes(32) + b"\x00" + b"\xff\xfe" + b"\x00\x00" + _u16(b"\x00" + _u16(b"www.tiktok.com"))
    )
    for payload in (
        b"\x16\x42\x42\x00\x20" + junk.randbytes(32),
        b"\x16\x03\x01\xff\xff" + junk.randbytes(200),
        b"\x16\x03\x03\x00\x24\x0b\x00\x00\x20" + junk.randbytes(32),
        b"\x16\x03\x01" + _u16(b"\x01" + len(bogus_hello_body).to_bytes(3, "big") + bogus_hello_body),
    ):
        flow = TcpFlow(not_tls, STAFF, TIKTOK_WEB, 443)
        flow.handshake()
        flow.data(UP, payload)
        flow.ack(DOWN)
    caps.append(not_tls)

    mid = Capture(
        "tls-midstream.pcap", "Capture starts mid-connection (no SYN): a one-segment and a two-segment ClientHello"
    )
    for sni, hello, cuts in (
        ("www.tiktok.com", client_hello("www.tiktok.com", "mid-1", pq=False), []),
        ("v16m.tiktokcdn.com", big("v16m.tiktokcdn.com", "mid-2"), [1460]),
    ):
        flow = TcpFlow(mid, GUEST, TIKTOK_CDN, 443)
        flow.expect(UP, len(hello), "tls-sni", sni)
        mid.step(0.5)
        flow.segments(UP, hello, cuts)
        flow.ack(DOWN)
    caps.append(mid)

    http = Capture(
        "http-host.pcap",
        "HTTP/1.x to port 80: Host without port, with :80, mixed case with trailing dot, lowercase "
        "header name on HTTP/1.0",
    )
    http_get(http, STAFF, TIKTOK_WEB, "Host: www.tiktok.com", "www.tiktok.com")
    http_get(http, STAFF, TIKTOK_WEB, "Host: m.tiktok.com:80", "m.tiktok.com", path="/share/video/1")
    http_get(
        http, GUEST, TIKTOK_CDN, "Host: P16-Sign-VA.TikTokCDN.com.", "p16-sign-va.tiktokcdn.com", path="/obj/x.jpeg"
    )
    http_get(http, GUEST, INNOCENT, "host: www.usa.gov", "www.usa.gov", version="HTTP/1.0")
    caps.append(http)

    alt = Capture(
        "http-nonstandard-port.pcap",
        "HTTP on port 8080 (Host with :8080) and on port 8000 (Host without port)",
        tshark_args=("-d", "tcp.port==8000,http"),
    )
    http_get(alt, STAFF, TIKTOK_WEB, "Host: www.tiktok.com:8080", "www.tiktok.com", port=8080)
    http_get(alt, GUEST, INNOCENT, "Host: intranet.example.gov", "intranet.example.gov", port=8000)
    caps.append(alt)
    return caps


# --------------------------------------------------------------------------- the demo sample


def build_sample() -> Capture:
    """A small office morning on a trunk port: staff VLAN 10, guest VLAN 20, Ethernet + 802.1Q."""
    cap = Capture(
        "sample-office.pcapng",
        "Demo: an office morning on a trunk (802.1Q, VLAN 10 staff / 20 guest): DHCP for 5 devices, "
        "innocent DNS/TLS/HTTP, "
        "TikTok DNS, a split ClientHello, an HTTP Host, repeats from one phone, a comms-office Mac on staff",
        link="vlan",
        fmt="pcapng",
        interfaces=[(LT_ETHERNET, 6, "trunk0")],
    )
    laptop = client("198.18.10.21")
    phone = client("198.18.10.34")
    comms = client("198.18.10.50")
    android = client("198.18.20.101")
    ipad = client("198.18.20.102")
    for i, (host, name, relay, dora) in enumerate(
        (
            (laptop, "alice-laptop", "198.18.10.1", True),
            (phone, "bob-iphone", "198.18.10.1", False),
            (comms, "comms-office-mac", "198.18.10.1", True),
            (android, "Galaxy-S23", "198.18.20.1", True),
            (ipad, "visitor-ipad", "198.18.20.1", False),
        )
    ):
        cap.step(1.5)
        dhcp_frames(cap, host, name, 0x0FF1CE00 + i, relay=relay, discover=dora, link="vlan")

    google = a_chain("www.google.com", addrs=["198.19.4.1"])
    office = a_chain(
        "outlook.office365.com", "outlook.ms-acdc.office.com", "fra-efz.ms-acdc.office.com", addrs=["198.19.4.20"]
    )
    wiki = a_chain("en.wikipedia.org", "dyna.wikimedia.org", addrs=["198.19.2.10"])
    tiktok = a_chain(
        "www.tiktok.com", "www.tiktok.com.edgesuite.net", "a1.w10.akamai.net", addrs=["198.19.3.1", "198.19.3.2"]
    )
    tiktok_api = a_chain(
        "api16-normal-c-useast1a.tiktokv.com", "api16-normal-c-useast1a.tiktokv.com.ttdns2.com", addrs=[TIKTOK_API]
    )
    tiktok_cdn = a_chain("v16m.tiktokcdn.com", "v16m.tiktokcdn.com.c.bytefcdn.com", addrs=[TIKTOK_CDN])

    # 09:00:10 the laptop starts the day.
    cap.step(2)
    dns_udp(cap, laptop, "www.google.com", google)
    tls_connect(cap, laptop, "198.19.4.1", "www.google.com", client_hello("www.google.com", "s-google", pq=True))
    dns_udp(cap, laptop, "outlook.office365.com", office)
    tls_connect(
        cap, laptop, "198.19.4.20", "outlook.office365.com", client_hello("outlook.office365.com", "s-outlook", pq=True)
    )
    dns_udp(cap, laptop, [("www.google.com", AAAA)], [RR("www.google.com", AAAA, "fd00:19::4:1")])
    # The phone checks in; TikTok in the background.
    cap.step(3)
    dns_udp(cap, phone, "www.tiktok.com", tiktok)
    tls_connect(
        cap, phone, "198.19.3.1", "www.tiktok.com", client_hello("www.tiktok.com", "s-tt-1", pq=True, ticket=352)
    )
    # Guest Android: captive-portal check over HTTP, then TikTok API and CDN.
    cap.step(2)
    dns_udp(cap, android, "connectivitycheck.gstatic.com", [RR("connectivitycheck.gstatic.com", A, "198.19.4.30")])
    http_get(
        cap,
        android,
        "198.19.4.30",
        "Host: connectivitycheck.gstatic.com",
        "connectivitycheck.gstatic.com",
        path="/generate_204",
        ua="Dalvik/2.1.0 (Linux; U; Android 14)",
    )
    dns_udp(cap, android, "api16-normal-c-useast1a.tiktokv.com", tiktok_api)
    tls_connect(
        cap,
        android,
        TIKTOK_API,
        "api16-normal-c-useast1a.tiktokv.com",
        client_hello("api16-normal-c-useast1a.tiktokv.com", "s-api", pq=False, alpn=("h2",)),
    )
    dns_udp(cap, android, "v16m.tiktokcdn.com", tiktok_cdn)
    http_get(
        cap,
        android,
        TIKTOK_CDN,
        "Host: p16-sign-va.tiktokcdn.com",
        "p16-sign-va.tiktokcdn.com",
        path="/tos-maliva-p-0068/cover.jpeg",
        ua="com.zhiliaoapp.musically/2023405020 (Linux; U; Android 14)",
    )
    # The visitor iPad: captive portal, then government sites.
    cap.step(4)
    dns_udp(cap, ipad, "captive.apple.com", [RR("captive.apple.com", A, "198.19.4.40")])
    http_get(
        cap,
        ipad,
        "198.19.4.40",
        "Host: captive.apple.com",
        "captive.apple.com",
        path="/hotspot-detect.html",
        ua="CaptiveNetworkSupport-491.1 wispr",
    )
    dns_udp(cap, ipad, "www.usa.gov", [RR("www.usa.gov", A, "198.19.6.1")])
    tls_connect(cap, ipad, "198.19.6.1", "www.usa.gov", client_hello("www.usa.gov", "s-usa", pq=False))
    # The comms office Mac manages the agency's TikTok account.
    cap.step(5)
    dns_udp(cap, comms, "www.tiktok.com", tiktok)
    tls_connect(
        cap, comms, "198.19.3.2", "www.tiktok.com", client_hello("www.tiktok.com", "s-comms", pq=True, ticket=352)
    )
    dns_udp(
        cap, comms, "teams.microsoft.com", a_chain("teams.microsoft.com", "teams.office.com", addrs=["198.19.4.21"])
    )
    # Laptop reads Wikipedia.
    cap.step(6)
    dns_udp(cap, laptop, "en.wikipedia.org", wiki)
    tls_connect(cap, laptop, "198.19.2.10", "en.wikipedia.org", client_hello("en.wikipedia.org", "s-wiki", pq=True))
    # The phone again and again: what alert dedup is for.
    for i in range(3):
        cap.step(40 + 20 * i)
        dns_udp(cap, phone, "www.tiktok.com", tiktok)
        if i == 1:
            dns_udp(cap, phone, "v16m.tiktokcdn.com", tiktok_cdn)
            tls_connect(
                cap,
                phone,
                "198.19.3.1",
                "www.tiktok.com",
                client_hello("www.tiktok.com", f"s-tt-{i + 2}", pq=True, ticket=352),
            )
    cap.step(3)
    dns_udp(cap, ipad, "www.irs.gov", [RR("www.irs.gov", A, "198.19.6.2")])
    dns_udp(cap, laptop, "login.microsoftonline.com", [RR("login.microsoftonline.com", A, "198.19.4.22")])
    return cap


# --------------------------------------------------------------------------- output


def builders() -> list[Callable[[], list[Capture] | Capture]]:
    return [build_link_layers, build_network_layer, build_dns, build_devices, build_tls_http, build_sample,
            build_tunnels, build_one_way, build_proxy_and_bare_requests]


def all_captures() -> list[Capture]:
    caps: list[Capture] = []
    for build in builders():
        result = build()
        caps.extend(result if isinstance(result, list) else [result])
    return caps


def file_bytes(cap: Capture) -> bytes:
    if cap.filename == "garbage.pcap":
        data = random.Random("garbage").randbytes(4096)
        assert data[:4] not in (
            b"\xd4\xc3\xb2\xa1",
            b"\xa1\xb2\xc3\xd4",
            b"\x4d\x3c\xb2\xa1",
            b"\xa1\xb2\x3c\x4d",
            b"\n\r\r\n",
        )
        return data
    data = pcapng_bytes(cap) if cap.fmt == "pcapng" else pcap_bytes(cap)
    if cap.filename == "truncated.pcap":
        data = data[: len(data) - len(cap.frames[-1].data) // 2]
    if cap.filename.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    return data


LINK_NAMES = {
    LT_NULL: "NULL",
    LT_ETHERNET: "EN10MB",
    LT_RAW: "RAW",
    LT_LOOP: "LOOP",
    LT_SLL: "LINUX_SLL",
    LT_USER0: "USER0",
    LT_IPV4: "IPV4",
    LT_IPV6: "IPV6",
    LT_SLL2: "LINUX_SLL2",
}


def readme(caps: list[Capture]) -> str:
    rows = []
    for cap in caps:
        if cap.filename == "garbage.pcap":
            link, packets, names = "-", "-", "no expected file"
        else:
            types = [lt for lt, _, _ in cap.interfaces] or [cap.linktype]
            link = "+".join(f"{LINK_NAMES[t]} ({t})" for t in types)
            packets = str(len(cap.frames))
            names = str(len(cap.events))
        rows.append(f"| `{cap.filename}` | {link} | {packets} | {names} | {cap.about} |")
    return (
        """# Fixture captures

Generated by `make_fixtures.py` (`.venv/bin/python pcaps/make_fixtures.py`); do not edit by hand.
The script is deterministic: rerunning it rewrites byte-identical files. `--verify` checks each
expected file against tshark's dissectors (`-o tcp.desegment_tcp_streams:TRUE`, out-of-order
reassembly on, plus per-capture decode-as / defragment settings).

Expected names live in `expected/<stem>.json`, stem = the file name up to its first dot
(`eth-gzip.pcap.gz` -> `eth-gzip.json`). Each is a JSON list of
`{"proto", "name", "client_ip", "frame"}`: every name the extractors must report (TikTok or not),
`frame` = 1-based packet number of the packet that completed it (for TCP: the segment after which
the stream is contiguous up to the end of the ClientHello / request head / DNS message, as the
segments arrive), sorted by frame, then by order in the message or stream. Names are lowercased
without a trailing dot; `dns-answer` names are owner names, CNAME/DNAME targets and SVCB/HTTPS
TargetNames (not "."), deduplicated per message, client = destination of the response; questions of
responses are reported only when their query was not captured (a one-way tap), once per transaction,
as `dns-query` with `"seen": "response-only"`. An empty list means the capture must yield no names.

Addresses: clients 198.18.10.0/24 (staff, VLAN 10) and 198.18.20.0/24 (guest, VLAN 20), servers and
resolvers 198.19.0.0/16, IPv6 fd00::/8, MACs 02:00:<IPv4 of the client> and the router 02:00:00:00:00:01;
DHCP also uses 0.0.0.0 and 255.255.255.255. Time starts at 2026-03-02T09:00:00Z.

Notes on cases whose expectation is a choice:
- Fragments (`ipv4-fragments`, `ipv6-fragments`): no reassembly; the first fragment carries the UDP
  header and the whole question and yields the name at its own frame, even when it arrives last.
- `truncated.pcap`: the last record (a query for vm.tiktok.com) is cut in half: not reported.
- `tls-retransmit.pcap`: duplicates never add an event; `tls-midstream.pcap`: a ClientHello at the
  start of a segment is reported although the SYN was not captured.
- `tls-ech.pcap`: the reported name is the outer (public) SNI; the observation should have `ech` set.
- `dns-one-way.pcap`: the answer for api16-normal-c-useast1a.tiktokv.com comes twice with no query;
  its question is reported once (one transaction), where tshark, linking neither to a query, shows both.
- `sample-office.pcapng`: DHCP hostnames alice-laptop, bob-iphone (REQUEST/ACK only),
  comms-office-mac, Galaxy-S23, visitor-ipad (REQUEST/ACK only).

| Capture | Link type | Packets | Expected names | What it covers |
|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )


def write_all() -> None:
    EXPECTED.mkdir(exist_ok=True)
    caps = all_captures()
    stems = [c.stem for c in caps]
    assert len(set(stems)) == len(stems), "two captures share a stem"
    for cap in caps:
        (HERE / cap.filename).write_bytes(file_bytes(cap))
        if cap.expected_file:
            events = sorted(cap.events, key=lambda e: e["frame"])  # stable: keeps message order
            (EXPECTED / f"{cap.stem}.json").write_text(json.dumps(events, indent=2) + "\n")
    (HERE / "README.md").write_text(readme(caps))
    print(f"wrote {len(caps)} captures to {HERE}")


# --------------------------------------------------------------------------- tshark cross-check


def _walk(node, keys: set[str], out: list[tuple[str, str]]) -> None:
    """Collect (key, value) for the given field names in document order."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in keys:
                for value in v if isinstance(v, list) else [v]:
                    out.append((k, value))
            else:
                _walk(v, keys, out)
    elif isinstance(node, list):
        for item in node:
            _walk(item, keys, out)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _http_name(host: str) -> str:
    if host.startswith("["):
        return norm(host[1 : host.find("]")])
    return norm(host.rsplit(":", 1)[0] if host.count(":") == 1 else host)


def tshark_events(path: Path, extra: tuple[str, ...]) -> list[dict]:
    """The names tshark's dissectors see, in the expected-file format."""
    cmd = [
        "tshark",
        "-r",
        str(path),
        "-T",
        "json",
        "--no-duplicate-keys",
        "-o",
        "tcp.desegment_tcp_streams:TRUE",
        "-o",
        "tcp.reassemble_out_of_order:TRUE",
        "-o",
        "tls.desegment_ssl_records:TRUE",
        *extra,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    packets = json.loads(run.stdout or "[]")
    events = []
    for pkt in packets:
        layers = pkt["_source"]["layers"]
        frame = int(layers["frame"]["frame.number"])
        # The innermost IP header (IPv6 inside an IPv4 tunnel, too): the device's.
        ip_keys = [key for key in layers if key in ("ip", "ipv6")]
        ip = layers[ip_keys[-1]] if ip_keys else None
        ip = ip[-1] if isinstance(ip, list) else ip
        src = ip and (ip.get("ip.src") or ip.get("ipv6.src"))
        dst = ip and (ip.get("ip.dst") or ip.get("ipv6.dst"))
        for dns in _as_list(layers.get("dns")):
            response = _walk_one(dns, "dns.flags.response") == "1"
            # A response linked to no query and not a repeat: its questions, seen in it only.
            if response and _walk_one(dns, "dns.response_to") is None and _walk_one(dns, "dns.retransmission") != "1":
                found = []
                _walk(dns.get("Queries", {}), {"dns.qry.name"}, found)
                events += [{"proto": "dns-query", "name": norm(v), "client_ip": dst, "frame": frame,
                            "seen": "response-only"} for _, v in found]
            if not response:
                found: list[tuple[str, str]] = []
                _walk(dns.get("Queries", {}), {"dns.qry.name"}, found)
                events += [{"proto": "dns-query", "name": norm(v), "client_ip": src, "frame": frame} for _, v in found]
            else:
                found = []
                _walk(dns.get("Answers", {}), {"dns.resp.name", "dns.cname", "dns.dname", "dns.svcb.targetname"}, found)
                seen: list[str] = []
                for _, v in found:
                    n = "" if v in ("<Root>", "") else norm(v)
                    if n and n not in seen:
                        seen.append(n)
                events += [{"proto": "dns-answer", "name": n, "client_ip": dst, "frame": frame} for n in seen]
        found = []
        _walk(layers.get("tls", {}), {"tls.handshake.extensions_server_name"}, found)
        events += [{"proto": "tls-sni", "name": norm(v), "client_ip": src, "frame": frame} for _, v in found]
        found = []
        _walk(layers.get("http", {}), {"http.host"}, found)
        events += [{"proto": "http-host", "name": _http_name(v), "client_ip": src, "frame": frame} for _, v in found]
    return events


def _walk_one(node, key: str):
    found: list[tuple[str, str]] = []
    _walk(node, {key}, found)
    return found[0][1] if found else None


def verify() -> int:
    if not shutil.which("tshark"):
        print("tshark not found", file=sys.stderr)
        return 2
    failures = 0
    for cap in all_captures():
        path = HERE / cap.filename
        if not cap.expected_file:
            continue
        expected = json.loads((EXPECTED / f"{cap.stem}.json").read_text())
        seen = tshark_events(path, cap.tshark_args)
        ok = seen == expected
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {cap.filename}: {len(expected)} names")
        if not ok:
            for e in expected:
                if e not in seen:
                    print("   only expected:", e)
            for e in seen:
                if e not in expected:
                    print("   only tshark:  ", e)
            if all(e in seen for e in expected) and all(e in expected for e in seen):
                print("   (same names, different order)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--verify", action="store_true", help="compare the expected files with tshark instead of writing"
    )
    args = parser.parse_args(argv)
    if args.verify:
        return verify()
    write_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
