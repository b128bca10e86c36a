#!/usr/bin/env python3
"""Write a deterministic tap corpus for the replay benchmark, and its ground truth beside it.

    .venv/bin/python benchmarks/generate.py                 # benchmarks/corpus/tap-1m.pcap
    .venv/bin/python benchmarks/generate.py --scale 10      # tap-10m.pcap, for the memory target
    .venv/bin/python benchmarks/generate.py --packets 20000 --out /tmp/smoke.pcap

What the capture looks like (a tap on the uplink of a busy Wi-Fi segment):

- 2000 clients in 198.18.1.0-198.18.8.255; a quarter are dual-stack (fd00:18::/64) and the
  ones in 198.18.7.0/24 and 198.18.8.0/24 sit on VLANs 20 and 30, so their frames carry an
  802.1Q tag. Every remote address is behind one gateway MAC, as on a real uplink.
- Sessions arrive as a Poisson process (220 a second). A session is a DNS lookup
  (A, AAAA and HTTPS questions as browsers send them; CNAME chains, NODATA with SOA) and
  then one connection: TLS over TCP (handshake, a ClientHello of one segment or, for the
  ~1.9 kB post-quantum ones, of two segments cut at the MSS, the server's flight, then
  request/response exchanges of heavy-tailed size with delayed ACKs, uploads too, and
  think time, so a few thousand flows are open at once), QUIC (a real client Initial,
  the server's Initial/Handshake packets, then short-header traffic both ways) or plain
  HTTP. Flows already running when the capture starts appear mid-stream, without a
  handshake. ARP, ICMP echo and NTP are sprinkled in.
- About 5 % of the names are TikTok's. Which names are TikTok is decided by the project's
  own signature set (what ``tiktok-detector signatures match`` says); this checks it and
  stops if the catalogue below no longer agrees with the signatures.

Speed: frames are written as bytes with ``struct`` from per-flow header state and slices
of one random pool; nothing builds a packet object per frame. Checksums (IPv4, TCP, UDP,
ICMP) are real, so tools that verify them (Zeek, Suricata) read the corpus too. TLS
ClientHellos and DNS messages come from pcaps/make_fixtures.py, QUIC Initials from
aioquic acting as a client (pcaps/make_quic_fixtures.py): a QUIC Initial is encrypted
with keys derived from its DCID, so each one is used as aioquic wrote it and only the
UDP/IP fields around it vary. Up to ``QUIC_TEMPLATES_PER_NAME`` distinct Initials per
name are made lazily, so memory stays flat however large the corpus.

Determinism: everything is drawn from ``random.Random`` seeded by ``--seed`` (aioquic's
randomness and key generation included), so the same arguments give byte-identical files.

Ground truth (``<stem>.truth.json``), written while the capture is, and atomically with it:
``names`` lists every name a correct extractor reports, one entry per frame that completes
it (``frame`` is 1-based, ``proto`` is dns-query, dns-answer, tls-sni, quic-sni or
http-host, ``client_ip`` as the detector prints it, ``category`` the signature category or
null, ``tiktok`` whether the default policy calls it a violation); ``tiktok_pairs`` is the
sorted set of (client_ip, name) the runner requires in the detector's events; ``summary``
gives the counts per kind of frame.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import ipaddress
import itertools
import json
import os
import random
import struct
import sys
import time
from bisect import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO, TextIO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "pcaps")]

import make_fixtures as fx  # noqa: E402  (pcaps/ is a directory of scripts, not a package)
import make_quic_fixtures as qfx  # noqa: E402
from detector.match import load_signatures  # noqa: E402
from detector.policy import DEFAULT_VIOLATIONS  # noqa: E402

DEFAULT_PACKETS = 1_000_000
DEFAULT_SEED = 1
EPOCH = fx.T0_NS / 1e9  # 2026-03-02T09:00:00Z, as the fixture captures
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1

# -- the population ---------------------------------------------------------------------------
CLIENTS = 2000
CLIENTS_PER_BLOCK = 250  # 198.18.<block+1>.<1..250>
VLAN_OF_BLOCK = {6: 20, 7: 30}  # 198.18.7.0/24 on VLAN 20, 198.18.8.0/24 on VLAN 30
DUAL_STACK_EVERY = 4  # every 4th client also has an fd00:18::/64 address
GATEWAY_IP = bytes([198, 18, 0, 1])
GATEWAY_MAC = bytes.fromhex("020000000001")
BROADCAST_MAC = b"\xff" * 6
RESOLVER4 = ipaddress.IPv4Address(fx.RESOLVER).packed
RESOLVER6 = ipaddress.IPv6Address(fx.RESOLVER6).packed
NTP_SERVER = bytes([198, 19, 0, 123])

# -- the traffic mix (as tuned: TCP ~78 % of frames, QUIC ~20 %, DNS ~2.5 %, 4-5k flows open) -----
SESSIONS_PER_SECOND = 220.0
MIDSTREAM_FLOWS = 1200  # flows already open when the capture starts
TIKTOK_SHARE = 0.05  # of sessions, hence of names
QUIC_SHARE_OF_H3 = 0.8  # sessions to a name that speaks HTTP/3 use QUIC this often
HTTP_SHARE = 0.03  # plain HTTP sessions (port 80)
DNS_LOOKUP_SHARE = 0.7  # sessions that start with a lookup (the rest hit a cache)
PQ_HELLO_SHARE = 0.45  # TLS ClientHellos with an ML-KEM key share (two segments)
QUIC_LARGE_SHARE = 0.25  # QUIC ClientHellos spanning two Initial datagrams
QUIC_V2_SHARE = 0.05
V6_PREFERENCE = 0.6  # a dual-stack client uses IPv6 when the name has an AAAA record
UPLOAD_SHARE = 0.1  # exchanges where the client sends the bulk
THINK_MEAN = 5.0  # seconds between exchanges on a kept-alive connection
EXCHANGES_MEAN = 4.0
OTHER_KINDS = (("arp", 0.03), ("icmp", 0.01), ("ntp", 0.01))  # per arrival, besides sessions
QUIC_TEMPLATES_PER_NAME = 256
POOL_BYTES = 1 << 22  # random bytes every payload is sliced from

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MASK32 = 0xFFFFFFFF

#: Frame kinds, counted in the ground truth's summary.
KINDS = ("tcp-handshake", "tls-hello", "http-request", "tcp-data", "tcp-ack", "tcp-close",
         "quic-initial", "quic-long", "quic-short", "dns", "arp", "icmp", "ntp")
(K_HANDSHAKE, K_HELLO, K_HTTP, K_DATA, K_ACK, K_CLOSE, K_QUIC_INITIAL, K_QUIC_LONG,
 K_QUIC_SHORT, K_DNS, K_ARP, K_ICMP, K_NTP) = range(len(KINDS))

# -- the names ---------------------------------------------------------------------------------
#: (name, speaks HTTP/3). Every one must be a violation under the default policy.
TIKTOK_NAMES = (
    ("www.tiktok.com", True), ("m.tiktok.com", True), ("vm.tiktok.com", False),
    ("webcast.tiktok.com", False), ("im-ws.tiktok.com", False), ("v16-webapp-prime.tiktok.com", True),
    ("analytics.tiktok.com", False), ("mcs.tiktok.com", False), ("mssdk-va.tiktok.com", False),
    ("api16-normal-c-useast1a.tiktokv.com", True), ("api19-normal-c-useast1a.tiktokv.com", True),
    ("api22-normal-c-useast2a.tiktokv.com", False), ("api16-core-c-useast1a.tiktokv.com", False),
    ("log16-normal-c-useast1a.tiktokv.com", False), ("mon.tiktokv.com", False), ("mon-va.tiktokv.com", False),
    ("webcast16-normal-c-useast1a.tiktokv.com", False), ("search16-normal-c-useast1a.tiktokv.com", False),
    ("im-api-va.tiktokv.com", False), ("api16-normal-useast5.tiktokv.us", True), ("log22-normal-useast5.tiktokv.us", False),
    ("v16m.tiktokcdn.com", True), ("v19.tiktokcdn.com", True), ("p16-sign-va.tiktokcdn.com", False),
    ("p16-sign-useast2a.tiktokcdn.com", False), ("p77-sign-va.tiktokcdn.com", False), ("pull-flv-l11.tiktokcdn.com", False),
    ("v16m.tiktokcdn-us.com", True), ("v19.tiktokcdn-us.com", True), ("p19-sign.tiktokcdn-us.com", False),
    ("lf16-cdn-tos.tiktokcdn-us.com", False), ("lf16-tiktok-web.ttwstatic.com", False),
    ("sf16-website-login.neutral.ttwstatic.com", False), ("p16-tiktokcdn-com.akamaized.net", False),
    ("p16-tiktok-va.ibyteimg.com", False), ("mon.tiktokv-us.com", False),
)
#: Where TikTok names point (the sub-zones the signatures list on Akamai).
TIKTOK_CNAME_ZONES = (
    (".tiktokv.com", "edgesuite.net"), (".tiktokcdn.com", "edgesuite.net"),
    (".tiktokcdn-us.com", "edgesuite.net"), (".tiktok.com", "edgekey.net"),
)
#: (domain, sub-domain labels, speaks HTTP/3). "" is the apex.
INNOCENT_DOMAINS = (
    ("google.com", ("www", "accounts", "mail", "apis", "play", "clients4", "ogs", "ssl", "id", "lens"), True),
    ("googleapis.com", ("www", "fonts", "storage", "firebaseinstallations", "oauth2", "safebrowsing", "update"), True),
    ("gstatic.com", ("www", "fonts", "ssl", "encrypted-tbn0", "connectivitycheck"), True),
    ("youtube.com", ("www", "m", "music", "i"), True),
    ("googlevideo.com", ("rr1---sn-4g5e6nzz", "rr2---sn-4g5lne7s", "rr3---sn-n4v7sn7z", "rr4---sn-5hne6nz6",
                         "rr5---sn-hp57kn6e", "rr1---sn-q4fl6nsr"), True),
    ("ytimg.com", ("i", "s", "yt3"), True),
    ("facebook.com", ("www", "m", "graph", "web", "edge-mqtt", "star"), True),
    ("fbcdn.net", ("static.xx", "scontent.xx", "video.xx", "scontent-iad3-1"), True),
    ("instagram.com", ("www", "i", "graph", "b.i"), True),
    ("cdninstagram.com", ("scontent", "static"), True),
    ("whatsapp.net", ("g", "mmg", "pps", "media-iad3-1"), True),
    ("whatsapp.com", ("web", "www", "static"), False),
    ("cloudflare.com", ("www", "dash", "api"), True),
    ("cloudflare-dns.com", ("", "mozilla"), True),
    ("microsoft.com", ("www", "login", "go", "learn", "support", "update"), False),
    ("microsoftonline.com", ("login", "aadcdn.msftauth", "autologon"), False),
    ("office.com", ("www", "outlook", "login", "portal"), False),
    ("office365.com", ("outlook", "substrate", "attachments"), False),
    ("live.com", ("login", "outlook", "onedrive"), False),
    ("windowsupdate.com", ("ctldl", "download", "au"), False),
    ("windows.net", ("blob.core", "servicebus", "database"), False),
    ("azureedge.net", ("ajax", "cdn", "az764295"), False),
    ("teams.microsoft.com", ("", "statics"), False),
    ("apple.com", ("www", "gsp-ssl", "gateway.icloud", "mesu", "configuration", "init"), False),
    ("icloud.com", ("www", "p71-caldav", "gateway", "keyvalueservice"), False),
    ("mzstatic.com", ("is1-ssl", "is2-ssl", "s"), False),
    ("amazon.com", ("www", "images-na.ssl-images", "fls-na", "unagi"), False),
    ("amazonaws.com", ("s3", "s3.us-east-1", "dynamodb.us-east-1", "sqs.us-east-1", "ec2.us-east-1"), False),
    ("cloudfront.net", ("d1a2b3c4d5e6f7", "d2x9y8z7w6v5u4", "d3k4j5h6g7f8e9"), False),
    ("akamaihd.net", ("a248.e", "fpdownload"), False),
    ("netflix.com", ("www", "api-global", "assets", "ichnaea"), False),
    ("nflxvideo.net", ("ipv4-c001-iad001-ix", "ipv4-c017-bos001-ix"), False),
    ("spotify.com", ("open", "api", "apresolve", "spclient.wg"), False),
    ("scdn.co", ("i", "audio-ak-spotify-com.akamaized"), False),
    ("twitter.com", ("", "api", "mobile"), False),
    ("x.com", ("", "api", "abs.twimg"), False),
    ("twimg.com", ("pbs", "abs", "video"), False),
    ("linkedin.com", ("www", "static", "media"), False),
    ("reddit.com", ("www", "gql", "oauth"), True),
    ("redditmedia.com", ("styles", "preview"), True),
    ("wikipedia.org", ("en", "upload", "de", "fr"), True),
    ("wikimedia.org", ("upload", "meta", "commons"), True),
    ("github.com", ("", "api", "codeload", "objects"), False),
    ("githubusercontent.com", ("raw", "avatars", "objects"), False),
    ("slack.com", ("app", "wss-primary", "edgeapi"), False),
    ("zoom.us", ("", "us02web", "log"), False),
    ("dropbox.com", ("www", "client", "bolt", "d"), False),
    ("mozilla.org", ("www", "incoming.telemetry", "location.services", "firefox.settings.services"), False),
    ("mozilla.net", ("tracking-protection.cdn", "content-signature-2.cdn"), False),
    ("digicert.com", ("ocsp", "crl3", "cacerts"), False),
    ("letsencrypt.org", ("r3.o.lencr", "acme-v02.api"), False),
    ("bbc.co.uk", ("www", "static", "ichef"), False),
    ("nytimes.com", ("www", "static01", "a1"), False),
    ("cnn.com", ("www", "edition", "media"), False),
    ("weather.gov", ("www", "api", "forecast"), False),
    ("usa.gov", ("www", "search"), False),
    ("irs.gov", ("www", "sa"), False),
    ("ssa.gov", ("www", "secure"), False),
    ("login.gov", ("secure", "www"), False),
    ("gov.uk", ("www", "assets.publishing.service"), False),
    ("europa.eu", ("ec", "eur-lex", "op"), False),
    ("duckduckgo.com", ("", "improving", "links"), False),
    ("bing.com", ("www", "th", "r"), False),
    ("yahoo.com", ("www", "mail", "login", "finance"), False),
    ("adobe.com", ("www", "use.typekit", "assets"), False),
    ("salesforce.com", ("login", "na1"), False),
    ("office.net", ("res.cdn", "officeclient"), False),
    ("docker.com", ("hub", "registry-1", "auth"), False),
    ("ubuntu.com", ("archive", "security", "changelogs", "api.snapcraft"), False),
    ("debian.org", ("deb", "security", "www"), False),
    ("python.org", ("www", "pypi", "files.pythonhosted"), False),
    ("npmjs.org", ("registry", "www"), False),
    ("discord.com", ("", "gateway", "cdn"), True),
    ("discordapp.net", ("media", "images-ext-1"), True),
    ("twitch.tv", ("www", "gql", "usher"), False),
    ("jtvnw.net", ("static-cdn", "video-edge-c2a5d8"), False),
    ("snapchat.com", ("app", "us-east1-aws.api", "cf-st.sc-cdn"), True),
    ("pinterest.com", ("www", "i", "api"), False),
    ("paypal.com", ("www", "t"), False),
    ("ebay.com", ("www", "i", "pulsar"), False),
    ("doubleclick.net", ("googleads.g", "stats.g", "securepubads.g"), True),
    ("google-analytics.com", ("www", "region1"), True),
    ("googletagmanager.com", ("www",), True),
    ("googlesyndication.com", ("pagead2", "tpc"), True),
    ("gvt1.com", ("redirector", "r1---sn-4g5ednsl"), True),
    ("gvt2.com", ("beacons", "beacons4"), True),
    ("crashlytics.com", ("settings", "reports"), False),
    ("app-measurement.com", ("",), True),
    ("appsflyersdk.com", ("inapps", "launches", "conversions"), False),
    ("capcut.com", ("www", "api"), False),
    ("ibytedtos.com", ("sf16-scmcdn-sg", "lf16-ad-sg"), False),
    ("byteoversea.com", ("mon", "log"), False),
)
#: CDN zones innocent names point into (a CNAME of name -> label of zone).
INNOCENT_CNAME_ZONES = ("edgekey.net", "cdn.cloudflare.net", "map.fastly.net", "trafficmanager.net",
                        "akamaiedge.net", "cloudfront.net")


# -- checksums and frames ---------------------------------------------------------------------


def _sum16(data: bytes) -> int:
    """The one's-complement sum of RFC 1071, reduced mod 65535.

    2**16 is 1 mod 65535, so a big-endian integer is congruent to the sum of its 16-bit
    words: ``int.from_bytes`` does the summing in C. The result differs from the folded
    sum only in writing 0xFFFF as 0, which one's-complement arithmetic cannot tell apart.
    """
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


_IP4 = struct.Struct("!BBHHHBBH")
_IP6 = struct.Struct("!IHBB")
_TCP = struct.Struct("!HHIIBBH")
_UDP = struct.Struct("!HHH")
_TS_OPTION = struct.Struct("!BBBBII")
_PSEUDO_TAIL = struct.Struct("!HH")
_RECORD = struct.Struct("<IIII")


class Way:
    """One direction between two addresses: the header bytes that never change, and the
    IPv4 identification counter. Building a frame is then a few ``struct.pack`` calls."""

    __slots__ = ("eth", "src", "dst", "v6", "ttl", "ip_id", "addr_sum", "label")

    def __init__(self, src_mac: bytes, dst_mac: bytes, vlan: int | None, src: bytes, dst: bytes,
                 ttl: int, rng: random.Random) -> None:
        self.v6 = len(src) == 16
        tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
        self.eth = dst_mac + src_mac + tag + (b"\x86\xdd" if self.v6 else b"\x08\x00")
        self.src, self.dst, self.ttl = src, dst, ttl
        self.ip_id = rng.randrange(0x10000)
        self.label = 0x60000000 | rng.randrange(1 << 20)
        self.addr_sum = _sum16(src + dst)

    def ip(self, proto: int, l4: bytes) -> bytes:
        if self.v6:
            return self.eth + _IP6.pack(self.label, len(l4), proto, self.ttl) + self.src + self.dst + l4
        self.ip_id = ip_id = (self.ip_id + 1) & 0xFFFF
        total = 20 + len(l4)
        csum = 0xFFFF - (0x8500 + total + ip_id + (self.ttl << 8 | proto) + self.addr_sum) % 0xFFFF
        return self.eth + _IP4.pack(0x45, 0, total, ip_id, 0x4000, self.ttl, proto, csum) + self.src + self.dst + l4

    def tcp(self, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
            options: bytes, payload: bytes) -> bytes:
        head = _TCP.pack(sport, dport, seq, ack, (20 + len(options)) << 2, flags, window)
        length = 20 + len(options) + len(payload)
        csum = 0xFFFF - _sum16(self.src + self.dst + _PSEUDO_TAIL.pack(6, length) + head
                               + b"\0\0\0\0" + options + payload)
        return self.ip(6, head + csum.to_bytes(2, "big") + b"\0\0" + options + payload)

    def udp(self, sport: int, dport: int, payload: bytes) -> bytes:
        length = 8 + len(payload)
        csum = 0xFFFF - _sum16(self.src + self.dst + _PSEUDO_TAIL.pack(17, length)
                               + _UDP.pack(sport, dport, length) + b"\0\0" + payload)
        return self.ip(17, _UDP.pack(sport, dport, length) + csum.to_bytes(2, "big") + payload)

    def icmp_echo(self, reply: bool, ident: int, seq: int, payload: bytes) -> bytes:
        if self.v6:  # ICMPv6 covers a pseudo-header (RFC 4443 2.3)
            kind, proto = (129 if reply else 128), 58
            pseudo = self.src + self.dst + _PSEUDO_TAIL.pack(58, 8 + len(payload))
        else:
            kind, proto, pseudo = (0 if reply else 8), 1, b""
        body = struct.pack("!HH", ident, seq) + payload
        csum = 0xFFFF - _sum16(pseudo + bytes([kind, 0, 0, 0]) + body)
        return self.ip(proto, bytes([kind, 0]) + csum.to_bytes(2, "big") + body)


# -- hosts and names --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Client:
    index: int
    v4: bytes
    v6: bytes | None
    mac: bytes
    vlan: int | None
    text4: str
    text6: str | None


def make_clients() -> list[Client]:
    clients = []
    for i in range(CLIENTS):
        block, host = divmod(i, CLIENTS_PER_BLOCK)
        v4 = bytes([198, 18, block + 1, host + 1])
        v6 = ipaddress.IPv6Address(f"fd00:18::{block + 1:x}:{host + 1:x}") if i % DUAL_STACK_EVERY == 0 else None
        clients.append(Client(i, v4, v6.packed if v6 else None, b"\x02\x00" + v4, VLAN_OF_BLOCK.get(block),
                              ipaddress.IPv4Address(v4).compressed, v6.compressed if v6 else None))
    return clients


def _digest(*parts: object) -> int:
    """A stable 64-bit number for any tuple (Python's ``hash`` of a str is salted per run)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Name:
    """A name clients ask for, with everything the resolver and the server say about it."""

    name: str
    h3: bool
    chain: tuple[str, ...]  # CNAME targets, in order
    v4: bytes
    v6: bytes | None
    https: tuple[int, str] | None  # (SvcPriority, TargetName) of its HTTPS record, if any
    rtt: float  # base round-trip time to its servers


def _name(name: str, h3: bool, chain: tuple[str, ...]) -> Name:
    h = _digest("addr", chain[-1] if chain else name)
    v4 = bytes([198, 19, 16 + h % 224, 1 + (h >> 8) % 254])
    v6 = ipaddress.IPv6Address((0xFD00_0019 << 96) | (h >> 16)).packed if h % 10 < 6 else None
    https = None
    if h3:
        https = (1, ".")
    elif h % 5 == 0:
        https = (1, "svc." + ".".join(name.split(".")[-2:])) if h % 3 == 0 else (1, ".")
    return Name(name, h3, chain, v4, v6, https, 0.008 + (h >> 40) % 140 / 1000)


class Catalogue:
    """The TikTok and the other names, their popularity (Zipf-like), and what each is."""

    def __init__(self, signatures_path: Path) -> None:
        self.signatures = load_signatures(signatures_path)
        self._verdicts: dict[str, tuple[str | None, bool]] = {}
        self.tiktok = [_name(n, h3, self._tiktok_chain(n)) for n, h3 in TIKTOK_NAMES]
        others = []
        for domain, labels, h3 in INNOCENT_DOMAINS:
            for label in labels:
                name = f"{label}.{domain}" if label else domain
                h = _digest("cname", name)
                chain: tuple[str, ...] = ()
                if h % 10 < 4:
                    zone = INNOCENT_CNAME_ZONES[h % len(INNOCENT_CNAME_ZONES)]
                    chain = (f"{name}.{zone}",) if h % 3 else (f"{name}.{zone}", f"e{h % 9973}.a.akamaiedge.net")
                others.append(_name(name, h3, chain))
        random.Random("catalogue").shuffle(others)
        self.others = others
        self._check()
        self.tiktok_cum = list(accumulate(1.0 / (i + 1) for i in range(len(self.tiktok))))
        self.others_cum = list(accumulate(1.0 / (i + 1) ** 0.8 for i in range(len(self.others))))

    def _tiktok_chain(self, name: str) -> tuple[str, ...]:
        for suffix, zone in TIKTOK_CNAME_ZONES:
            if name.endswith(suffix) and _digest("cname", name) % 2:
                return (f"{name}.{zone}", f"a{_digest('a', name) % 1999}.dscb.akamai.net")
        return ()

    def verdict(self, name: str) -> tuple[str | None, bool]:
        """(signature category or None, whether the default policy reports it)."""
        found = self._verdicts.get(name)
        if found is None:
            sig = self.signatures.match(name)
            category = sig.category if sig is not None else None
            found = self._verdicts[name] = (category, category in DEFAULT_VIOLATIONS)
        return found

    def _check(self) -> None:
        wrong = [n.name for n in self.tiktok if not self.verdict(n.name)[1]]
        wrong += [n.name for n in self.others if self.verdict(n.name)[1]]
        wrong += [t for n in self.others for t in n.chain if self.verdict(t)[1]]
        if wrong:
            raise SystemExit(f"generate.py: the name catalogue disagrees with the signatures: {', '.join(wrong)}")

    def pick(self, rng: random.Random) -> Name:
        if rng.random() < TIKTOK_SHARE:
            return self.tiktok[bisect(self.tiktok_cum, rng.random() * self.tiktok_cum[-1])]
        return self.others[bisect(self.others_cum, rng.random() * self.others_cum[-1])]


# -- message templates (bounded caches: one entry per name and variant) -----------------------


class Templates:
    """TLS ClientHellos, DNS messages and QUIC client Initials, made once per name and variant."""

    def __init__(self, catalogue: Catalogue, seed: int) -> None:
        self.catalogue = catalogue
        self.seed = seed
        self._hellos: dict[tuple[str, int], bytes] = {}
        self._dns: dict[tuple[str, int], tuple[bytes, bytes, tuple[str, ...]]] = {}
        self._quic: dict[tuple[str, int], tuple[tuple[bytes, ...], bytes]] = {}

    def hello(self, name: str, rng: random.Random) -> bytes:
        """A browser-like ClientHello for ``name`` with a fresh random and session id.

        Variants 0-1 are classic (283 or 443 bytes, one segment); 2-3 carry an X25519MLKEM768
        key share and an ECH extension (1790 or 1934 bytes, two segments at any Ethernet MSS).
        """
        variant = (2 if rng.random() < PQ_HELLO_SHARE else 0) + rng.randrange(2)
        template = self._hellos.get((name, variant))
        if template is None:
            pq = variant >= 2
            template = fx.client_hello(name, f"{self.seed}/{name}/{variant}", pq=pq, ech=pq,
                                       ticket=(0, 160, 0, 144)[variant] if variant % 2 else 0)
            self._hellos[(name, variant)] = template
        # Record(5) handshake header(4) version(2): random at 11, session id length at 43.
        return template[:11] + rng.randbytes(32) + template[43:44] + rng.randbytes(32) + template[76:]

    def dns(self, name: Name, qtype: int) -> tuple[bytes, bytes, tuple[str, ...]]:
        """Query and response (ID 0) and the names the response reports."""
        key = (name.name, qtype)
        found = self._dns.get(key)
        if found is None:
            found = self._dns[key] = self._make_dns(name, qtype)
        return found

    @staticmethod
    def _make_dns(name: Name, qtype: int) -> tuple[bytes, bytes, tuple[str, ...]]:
        question = [(name.name, qtype)]
        answers: list[fx.RR] = []
        owner = name.name
        for target in name.chain:
            answers.append(fx.RR(owner, fx.CNAME, target, 300))
            owner = target
        if qtype == fx.A:
            answers += [fx.RR(owner, fx.A, str(ipaddress.IPv4Address(name.v4)), 60)]
        elif qtype == fx.AAAA and name.v6 is not None:
            answers += [fx.RR(owner, fx.AAAA, str(ipaddress.IPv6Address(name.v6)), 60)]
        elif qtype == fx.HTTPS and name.https is not None:
            alpn = fx.alpn_param("h3", "h2") if name.h3 else fx.alpn_param("h2")
            answers += [fx.RR(owner, fx.HTTPS, (*name.https, [alpn]), 300)]
        authority = []
        if not answers or answers[-1].rtype == fx.CNAME:  # NODATA: the zone's SOA
            zone = ".".join(owner.split(".")[-2:])
            authority = [fx.RR(zone, fx.SOA, (f"ns1.{zone}", f"hostmaster.{zone}", 2026030201, 3600, 600, 604800, 300))]
        query = fx.dns_message(0, question, additional=[fx.edns()], qr=False)
        response = fx.dns_message(0, question, answers, authority, [fx.edns()], qr=True)
        return query, response, tuple(fx.answer_names(answers))

    def quic(self, name: str, rng: random.Random) -> tuple[tuple[bytes, ...], bytes]:
        """The client Initial datagram(s) of one of this name's templates, and their SCID."""
        k = rng.randrange(QUIC_TEMPLATES_PER_NAME)
        found = self._quic.get((name, k))
        if found is None:
            h = _digest(self.seed, "quic", name, k)
            version = qfx.V2 if h % 1000 < QUIC_V2_SHARE * 1000 else qfx.V1
            large = (h >> 10) % 1000 < QUIC_LARGE_SHARE * 1000
            datagrams = tuple(qfx.client_datagrams(name, version, seed=h, large=large))
            first = datagrams[0]
            dcid_len = first[5]
            scid_len = first[6 + dcid_len]
            found = self._quic[(name, k)] = (datagrams, first[7 + dcid_len: 7 + dcid_len + scid_len])
        return found


# -- the simulation ---------------------------------------------------------------------------

#: What a session generator yields: (time, frame, kind, truth), where truth is None or
#: (client_ip, proto, names) for the frame that completes those names.
Event = tuple[float, bytes, int, tuple[str, str, tuple[str, ...]] | None]


class World:
    """Everything sessions share: the population, the names, the templates and a random pool."""

    def __init__(self, seed: int, signatures: Path) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.clients = make_clients()
        self.catalogue = Catalogue(signatures)
        self.templates = Templates(self.catalogue, seed)
        self.pool = random.Random(f"{seed}/pool").randbytes(POOL_BYTES)
        self._ports = [32768 + _digest("port", i) % 28000 for i in range(CLIENTS)]
        self._resolver_ways: dict[tuple[int, bool], tuple[Way, Way]] = {}

    def payload(self, rng: random.Random, size: int) -> bytes:
        start = rng.randrange(POOL_BYTES - size)
        return self.pool[start:start + size]

    def port(self, client: Client, rng: random.Random) -> int:
        """The client's next ephemeral port: never the port of one of its recent flows."""
        port = self._ports[client.index] + rng.randrange(1, 64)
        if port > 60999:
            port -= 28232
        self._ports[client.index] = port
        return port

    def resolver_ways(self, client: Client, v6: bool) -> tuple[Way, Way]:
        key = (client.index, v6)
        ways = self._resolver_ways.get(key)
        if ways is None:
            mine, resolver = (client.v6, RESOLVER6) if v6 else (client.v4, RESOLVER4)
            ways = self._resolver_ways[key] = (
                Way(client.mac, GATEWAY_MAC, client.vlan, mine, resolver, 64, self.rng),
                Way(GATEWAY_MAC, client.mac, client.vlan, resolver, mine, 63, self.rng),
            )
        return ways

    def ways(self, client: Client, v6: bool, server: bytes, rng: random.Random) -> tuple[Way, Way]:
        mine = client.v6 if v6 else client.v4
        return (Way(client.mac, GATEWAY_MAC, client.vlan, mine, server, 64, rng),
                Way(GATEWAY_MAC, client.mac, client.vlan, server, mine, rng.choice((52, 56, 57, 58, 116, 119)), rng))

    # -- arrivals ---------------------------------------------------------------------------

    def session(self, t: float) -> Iterator[Event]:
        """The generator of one new arrival at ``t``."""
        rng = random.Random(self.rng.getrandbits(64))
        client = self.clients[rng.randrange(CLIENTS)]
        draw = rng.random()
        for kind, share in OTHER_KINDS:
            if draw < share:
                return {"arp": arp, "icmp": ping, "ntp": ntp}[kind](self, rng, t, client)
            draw -= share
        name = self.catalogue.pick(rng)
        if name.h3 and rng.random() < QUIC_SHARE_OF_H3:
            return quic_session(self, rng, t, client, name)
        return tcp_session(self, rng, t, client, name, http=rng.random() < HTTP_SHARE)

    def midstream(self, t: float) -> Iterator[Event]:
        rng = random.Random(self.rng.getrandbits(64))
        client = self.clients[rng.randrange(CLIENTS)]
        name = self.catalogue.pick(rng)
        if name.h3 and rng.random() < QUIC_SHARE_OF_H3:
            return quic_midstream(self, rng, t, client, name)
        return tcp_midstream(self, rng, t, client, name)


def _client_ip(client: Client, v6: bool) -> str:
    return client.text6 if v6 else client.text4  # type: ignore[return-value]


def _uses_v6(client: Client, name: Name, rng: random.Random) -> bool:
    return client.v6 is not None and name.v6 is not None and rng.random() < V6_PREFERENCE


def _rate(rng: random.Random) -> float:
    """A flow's bottleneck rate in bytes/s (median 20 Mbit/s, 1-400 Mbit/s)."""
    return min(5e7, max(1.25e5, rng.lognormvariate(14.7, 1.0)))


def _segments(rng: random.Random, mu: float, sigma: float, cap: int) -> int:
    """A heavy-tailed count of full-size segments (web objects to video chunks)."""
    return min(cap, 1 + int(rng.lognormvariate(mu, sigma)))


def dns_lookup(w: World, rng: random.Random, t: float, client: Client, name: Name, v6: bool) -> Iterator[Event]:
    """A browser's lookup: A, often AAAA, sometimes HTTPS, each from its own socket.

    Returns the time the last answer arrived."""
    qtypes = [fx.A]
    if client.v6 is not None or rng.random() < 0.3:
        qtypes.append(fx.AAAA)
    if rng.random() < 0.35:
        qtypes.append(fx.HTTPS)
    up, down = w.resolver_ways(client, v6)
    ip = _client_ip(client, v6)
    cached = rng.random() < 0.6
    events: list[Event] = []
    for qtype in qtypes:
        query, response, answers = w.templates.dns(name, qtype)
        qid = rng.getrandbits(16).to_bytes(2, "big")
        sport = rng.randrange(1024, 65536)
        events.append((t, up.udp(sport, 53, qid + query[2:]), K_DNS, (ip, "dns-query", (name.name,))))
        delay = rng.uniform(0.0004, 0.002) if cached else rng.lognormvariate(-3.9, 0.8)
        events.append((t + delay, down.udp(53, sport, qid + response[2:]), K_DNS,
                       (ip, "dns-answer", answers) if answers else None))
        t += rng.uniform(0.00003, 0.0004)
    events.sort(key=lambda event: event[0])
    yield from events
    return events[-1][0]


class TcpConn:
    """Both directions of one TCP connection: ports, next sequence numbers, timestamps."""

    __slots__ = ("ways", "ports", "nxt", "ts_base", "t0", "window", "mss")

    def __init__(self, w: World, rng: random.Random, t: float, client: Client, server: bytes,
                 v6: bool, dport: int) -> None:
        self.ways = w.ways(client, v6, server, rng)
        sport = w.port(client, rng)
        self.ports = ((sport, dport), (dport, sport))
        self.nxt = [rng.getrandbits(32), rng.getrandbits(32)]
        self.ts_base = [rng.getrandbits(32), rng.getrandbits(32)]
        self.t0 = t
        self.window = (rng.choice((501, 502, 2052, 4096)), rng.choice((83, 235, 501, 1024)))
        self.mss = 1428 if v6 else 1448  # 1440/1460 less 12 bytes of timestamps option

    def syn(self, d: int, t: float) -> bytes:
        """SYN (d=0) or SYN-ACK (d=1), with the options of a Linux or Android stack."""
        seq = self.nxt[d]
        ms = int((t - self.t0) * 1000)
        tsecr = (self.ts_base[0] + ms) & MASK32 if d else 0
        options = (struct.pack("!BBH", 2, 4, self.mss + 12) + b"\x04\x02"
                   + struct.pack("!BBII", 8, 10, (self.ts_base[d] + ms) & MASK32, tsecr) + b"\x01\x03\x03\x07")
        frame = self.ways[d].tcp(*self.ports[d], seq, self.nxt[0] if d else 0,
                                 TCP_SYN | (TCP_ACK if d else 0), 64240 if d == 0 else 65160, options, b"")
        self.nxt[d] = (seq + 1) & MASK32
        return frame

    def seg(self, d: int, flags: int, payload: bytes, t: float, ack: int | None = None) -> bytes:
        seq = self.nxt[d]
        ms = int((t - self.t0) * 1000)
        options = _TS_OPTION.pack(1, 1, 8, 10, (self.ts_base[d] + ms) & MASK32, (self.ts_base[1 - d] + ms) & MASK32)
        frame = self.ways[d].tcp(*self.ports[d], seq, self.nxt[1 - d] if ack is None else ack,
                                 flags, self.window[d], options, payload)
        self.nxt[d] = (seq + len(payload) + (1 if flags & TCP_FIN else 0)) & MASK32
        return frame


TLS_RECORD = 5 + (1 << 14) + 17  # a full TLS 1.3 application-data record: header, 16 KiB, type and tag


class Stream:
    """What one side sends in one transfer: ``prefix``, then random bytes that are either
    framed as TLS application-data records (so a dissector follows the records as it would
    on real TLS) or left as they are (an HTTP body whose length the prefix announces)."""

    __slots__ = ("prefix", "size", "tls")

    def __init__(self, prefix: bytes, size: int, tls: bool) -> None:
        if tls and 0 < (size - len(prefix)) % TLS_RECORD <= 5:
            size += 6  # no record too short to hold its own header
        self.prefix, self.size, self.tls = prefix, max(size, len(prefix)), tls

    def chunk(self, w: World, rng: random.Random, off: int, n: int) -> bytes:
        end = off + n
        prefix = self.prefix
        if off < len(prefix):
            head = prefix[off:end]
            data = head + w.payload(rng, n - len(head))
        else:
            data = w.payload(rng, n)
        if not self.tls:
            return data
        base = len(prefix)
        patched = None
        k = max(0, (off - base - 4) // TLS_RECORD)
        while True:
            at = base + k * TLS_RECORD
            length = min(TLS_RECORD, self.size - at) - 5
            if at >= end or length <= 0:
                break
            header = b"\x17\x03\x03" + length.to_bytes(2, "big")
            lo, hi = max(at, off), min(at + 5, end)
            if lo < hi:
                patched = bytearray(data) if patched is None else patched
                patched[lo - off:hi - off] = header[lo - at:hi - at]
            k += 1
        return data if patched is None else bytes(patched)


def transfer(w: World, rng: random.Random, c: TcpConn, d: int, t: float, stream: Stream, rate: float,
             ack_delay: float) -> Iterator[Event]:
    """``d`` sends ``stream`` cut at the MSS, paced at ``rate``; the other side ACKs every
    second segment and the last one, ``ack_delay`` later as the tap sees it. Returns the
    time of the last frame."""
    mss = c.mss
    gap = mss / rate
    pending: deque[tuple[float, int]] = deque()
    sent = 0
    size = stream.size
    while sent < size:
        n = min(mss, size - sent)
        payload = stream.chunk(w, rng, sent, n)
        while pending and pending[0][0] <= t:
            t_ack, ack = pending.popleft()
            yield t_ack, c.seg(1 - d, TCP_ACK, b"", t_ack, ack), K_ACK, None
        sent += n
        last = sent >= size
        yield t, c.seg(d, TCP_ACK | (TCP_PSH if last else 0), payload, t), K_DATA, None
        if last or not (sent // mss) % 2:
            pending.append((t + ack_delay, c.nxt[d]))
        t += gap * rng.uniform(0.8, 1.2)
    for t_ack, ack in pending:
        yield t_ack, c.seg(1 - d, TCP_ACK, b"", t_ack, ack), K_ACK, None
        t = t_ack
    return t


def http_request(name: str, rng: random.Random) -> bytes:
    return (f"GET /{rng.getrandbits(40):x} HTTP/1.1\r\nHost: {name}\r\n"
            "User-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n").encode()


def exchanges(w: World, rng: random.Random, c: TcpConn, t: float, rtt: float, count: int,
              http: tuple[str, str] | None = None) -> Iterator[Event]:
    """Request/response rounds with think time in between; a tenth of TLS rounds are uploads.

    ``http`` is (client ip, name) on a plain-HTTP keep-alive connection, whose every
    request names its host again (and is in the ground truth)."""
    rate = _rate(rng)
    near = rng.uniform(0.00003, 0.0003)  # the tap is next to the clients
    for i in range(count):
        if i:
            t += rng.expovariate(1 / THINK_MEAN)
        if http is None and rng.random() < UPLOAD_SHARE:
            size = _segments(rng, 1.0, 1.3, 400) * c.mss - rng.randrange(c.mss)
            t = yield from transfer(w, rng, c, 0, t, Stream(b"", size, True), rate / 4, rtt)
            continue
        if http is None:
            size = rng.randrange(80, 900)
            request = b"\x17\x03\x03" + struct.pack("!H", size - 5) + w.payload(rng, size - 5)
            yield t, c.seg(0, TCP_ACK | TCP_PSH, request, t), K_DATA, None
        else:
            request = http_request(http[1], rng)
            yield t, c.seg(0, TCP_ACK | TCP_PSH, request, t), K_HTTP, (http[0], "http-host", (http[1],))
        t += rtt
        size = _segments(rng, 1.3, 1.7, 4000) * c.mss - rng.randrange(c.mss)
        if http is None:
            stream = Stream(b"", size, True)
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
            stream = Stream(head.encode(), len(head) + size, False)
        t = yield from transfer(w, rng, c, 1, t, stream, rate, near)
    return t


def server_flight(rng: random.Random) -> bytes:
    """ServerHello and ChangeCipherSpec; the encrypted handshake records follow as a Stream."""
    hello = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\x13\x01\x00"
             + struct.pack("!H", 46) + b"\x00\x2b\x00\x02\x03\x04" + b"\x00\x33\x00\x24\x00\x1d\x00\x20"
             + rng.randbytes(32))
    handshake = b"\x02" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x03" + struct.pack("!H", len(handshake)) + handshake + b"\x14\x03\x03\x00\x01\x01"


def tcp_session(w: World, rng: random.Random, t: float, client: Client, name: Name, http: bool) -> Iterator[Event]:
    """Lookup, handshake, ClientHello (or HTTP request), exchanges, close."""
    v6 = _uses_v6(client, name, rng)
    ip = _client_ip(client, v6)
    if rng.random() < DNS_LOOKUP_SHARE:
        t = yield from dns_lookup(w, rng, t, client, name, v6)
    t += rng.uniform(0.0002, 0.003)
    rtt = name.rtt * rng.uniform(0.9, 1.3)
    near = rng.uniform(0.00003, 0.0003)
    c = TcpConn(w, rng, t, client, name.v6 if v6 else name.v4, v6, 80 if http else 443)
    yield t, c.syn(0, t), K_HANDSHAKE, None
    t += rtt
    yield t, c.syn(1, t), K_HANDSHAKE, None
    t += near
    yield t, c.seg(0, TCP_ACK, b"", t), K_HANDSHAKE, None
    t += 0.00002
    if http:
        t = yield from exchanges(w, rng, c, t, rtt, 1 + int(rng.expovariate(1 / EXCHANGES_MEAN)), (ip, name.name))
    else:
        hello = w.templates.hello(name.name, rng)
        pieces = [hello[i:i + c.mss] for i in range(0, len(hello), c.mss)]
        for i, piece in enumerate(pieces):
            done = i == len(pieces) - 1
            yield (t, c.seg(0, TCP_ACK | (TCP_PSH if done else 0), piece, t), K_HELLO,
                   (ip, "tls-sni", (name.name,)) if done else None)
            t += rng.uniform(0.00001, 0.0001)
        t += rtt
        t = yield from transfer(w, rng, c, 1, t, Stream(server_flight(rng), rng.randrange(2800, 6500), True),
                                _rate(rng), near)
        t += 0.0005
        yield t, c.seg(0, TCP_ACK | TCP_PSH, b"\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x35" + w.payload(rng, 53), t), K_DATA, None
        t = yield from exchanges(w, rng, c, t, rtt, 1 + int(rng.expovariate(1 / EXCHANGES_MEAN)))
    yield from close(rng, c, t, rtt, near)


def close(rng: random.Random, c: TcpConn, t: float, rtt: float, near: float) -> Iterator[Event]:
    """FIN from the client and the server's FIN (most flows), a reset, or nothing (left open)."""
    draw = rng.random()
    t += rng.uniform(0.5, 15.0)
    if draw < 0.7:
        yield t, c.seg(0, TCP_FIN | TCP_ACK, b"", t), K_CLOSE, None
        t += rtt
        yield t, c.seg(1, TCP_FIN | TCP_ACK, b"", t), K_CLOSE, None
        t += near
        yield t, c.seg(0, TCP_ACK, b"", t), K_CLOSE, None
    elif draw < 0.78:
        yield t, c.seg(0, TCP_RST | TCP_ACK, b"", t), K_CLOSE, None


def tcp_midstream(w: World, rng: random.Random, t: float, client: Client, name: Name) -> Iterator[Event]:
    """A connection opened before the capture started: bulk and ACKs only."""
    v6 = _uses_v6(client, name, rng)
    c = TcpConn(w, rng, t, client, name.v6 if v6 else name.v4, v6, 443)
    rtt = name.rtt * rng.uniform(0.9, 1.3)
    t = yield from exchanges(w, rng, c, t + rng.uniform(0.0, 2.0), rtt, 1 + int(rng.expovariate(1 / EXCHANGES_MEAN)))
    yield from close(rng, c, t, rtt, 0.0001)


# -- QUIC -------------------------------------------------------------------------------------


def _long_header(version: int, kind: str, dcid: bytes, scid: bytes, size: int, rng: random.Random) -> bytes:
    """A server's protected long-header packet of ``size`` bytes: its keys are the
    handshake's, which no observer has, so random bytes look exactly like the real thing."""
    head = (bytes([0xC0 | qfx.TYPE_BITS[version][kind] << 4 | 3]) + version.to_bytes(4, "big")
            + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid + (b"\x00" if kind == "initial" else b""))
    length = size - len(head) - 2
    return head + (0x4000 | length).to_bytes(2, "big") + rng.randbytes(length)


def quic_session(w: World, rng: random.Random, t: float, client: Client, name: Name) -> Iterator[Event]:
    """Lookup, the client's Initial datagram(s), the server's handshake, short-header traffic."""
    v6 = _uses_v6(client, name, rng)
    ip = _client_ip(client, v6)
    if rng.random() < DNS_LOOKUP_SHARE:
        t = yield from dns_lookup(w, rng, t, client, name, v6)
    t += rng.uniform(0.0002, 0.003)
    datagrams, client_cid = w.templates.quic(name.name, rng)
    version = int.from_bytes(datagrams[0][1:5], "big")
    server_cid = rng.randbytes(8)
    up, down = w.ways(client, v6, name.v6 if v6 else name.v4, rng)
    sport = w.port(client, rng)
    rtt = name.rtt * rng.uniform(0.9, 1.3)
    for i, datagram in enumerate(datagrams):
        done = i == len(datagrams) - 1
        yield t, up.udp(sport, 443, datagram), K_QUIC_INITIAL, (ip, "quic-sni", (name.name,)) if done else None
        t += rng.uniform(0.00001, 0.0001)
    t += rtt
    size = rng.choice((1200, 1232, 1252, 1350))
    initial = _long_header(version, "initial", client_cid, server_cid, 160, rng)
    yield t, down.udp(443, sport, initial + _long_header(version, "handshake", client_cid, server_cid, size - 160, rng)), K_QUIC_LONG, None
    for _ in range(rng.randrange(1, 4)):
        t += rng.uniform(0.0001, 0.001)
        yield t, down.udp(443, sport, _long_header(version, "handshake", client_cid, server_cid, size, rng)), K_QUIC_LONG, None
    t += rng.uniform(0.001, 0.01)
    finished = _long_header(version, "handshake", server_cid, client_cid, 90, rng)
    yield t, up.udp(sport, 443, finished + short_header(server_cid, rng) + w.payload(rng, 60)), K_QUIC_LONG, None
    yield from quic_exchanges(w, rng, up, down, sport, client_cid, server_cid, t, rtt, size,
                              1 + int(rng.expovariate(1 / EXCHANGES_MEAN)))


def short_header(dcid: bytes, rng: random.Random) -> bytes:
    """Flags (fixed bit set, spin/key-phase/protected bits random), DCID, one byte of PN."""
    return bytes([0x40 | rng.randrange(64)]) + dcid + bytes([rng.randrange(256)])


def quic_exchanges(w: World, rng: random.Random, up: Way, down: Way, sport: int, client_cid: bytes,
                   server_cid: bytes, t: float, rtt: float, size: int, count: int) -> Iterator[Event]:
    """Request/response rounds over 1-RTT packets; the client ACKs every ``ack_every``."""
    rate = _rate(rng)
    ack_every = rng.choice((2, 2, 4, 10))
    body = size - 10
    for i in range(count):
        t += rng.expovariate(1 / THINK_MEAN) if i else rng.uniform(0.0001, 0.002)
        yield t, up.udp(sport, 443, short_header(server_cid, rng) + w.payload(rng, rng.randrange(40, 400))), K_QUIC_SHORT, None
        t += rtt
        n = _segments(rng, 1.3, 1.7, 4000)
        gap = size / rate
        for j in range(1, n + 1):
            yield t, down.udp(443, sport, short_header(client_cid, rng) + w.payload(rng, body)), K_QUIC_SHORT, None
            if j % ack_every == 0 or j == n:
                t_ack = t + gap * rng.uniform(0.1, 0.7)  # before the next datagram (0.8 gap at least)
                yield t_ack, up.udp(sport, 443, short_header(server_cid, rng) + w.payload(rng, rng.randrange(25, 45))), K_QUIC_SHORT, None
            t += gap * rng.uniform(0.8, 1.2)


def quic_midstream(w: World, rng: random.Random, t: float, client: Client, name: Name) -> Iterator[Event]:
    """A QUIC connection opened before the capture started: short headers only."""
    v6 = _uses_v6(client, name, rng)
    up, down = w.ways(client, v6, name.v6 if v6 else name.v4, rng)
    yield from quic_exchanges(w, rng, up, down, w.port(client, rng), rng.randbytes(8), rng.randbytes(8),
                              t + rng.uniform(0.0, 2.0), name.rtt, rng.choice((1232, 1252, 1350)),
                              1 + int(rng.expovariate(1 / EXCHANGES_MEAN)))


# -- the rest of a segment's chatter ----------------------------------------------------------


def _pad(frame: bytes) -> bytes:
    """Ethernet's 60-byte minimum (without FCS), as a capture on the wire shows it."""
    return frame + bytes(60 - len(frame)) if len(frame) < 60 else frame


def arp(w: World, rng: random.Random, t: float, client: Client) -> Iterator[Event]:
    """Who-has the gateway, and the gateway's reply."""
    tag = struct.pack("!HH", 0x8100, client.vlan) if client.vlan is not None else b""
    request = b"\x00\x01\x08\x00\x06\x04\x00\x01" + client.mac + client.v4 + bytes(6) + GATEWAY_IP
    reply = b"\x00\x01\x08\x00\x06\x04\x00\x02" + GATEWAY_MAC + GATEWAY_IP + client.mac + client.v4
    yield t, _pad(BROADCAST_MAC + client.mac + tag + b"\x08\x06" + request), K_ARP, None
    t += rng.uniform(0.0001, 0.002)
    yield t, _pad(client.mac + GATEWAY_MAC + tag + b"\x08\x06" + reply), K_ARP, None


def ping(w: World, rng: random.Random, t: float, client: Client) -> Iterator[Event]:
    """Four echo requests a second apart to a server, and their replies (ICMPv6 if dual-stack)."""
    name = w.catalogue.pick(rng)
    v6 = _uses_v6(client, name, rng)
    up, down = w.ways(client, v6, name.v6 if v6 else name.v4, rng)
    ident = rng.getrandbits(16)
    payload = w.payload(rng, 56)
    for seq in range(1, 5):
        yield t, up.icmp_echo(False, ident, seq, payload), K_ICMP, None
        yield t + name.rtt, down.icmp_echo(True, ident, seq, payload), K_ICMP, None
        t += 1.0 + rng.uniform(0.0, 0.001)


def ntp(w: World, rng: random.Random, t: float, client: Client) -> Iterator[Event]:
    """An SNTP client request and the server's answer."""
    up = Way(client.mac, GATEWAY_MAC, client.vlan, client.v4, NTP_SERVER, 64, rng)
    down = Way(GATEWAY_MAC, client.mac, client.vlan, NTP_SERVER, client.v4, 57, rng)
    sport = w.port(client, rng)
    yield t, up.udp(sport, 123, b"\x23" + bytes(39) + w.payload(rng, 8)), K_NTP, None
    yield t + 0.02, down.udp(123, sport, b"\x24\x02\x00\xe7" + w.payload(rng, 44)), K_NTP, None


# -- writing ----------------------------------------------------------------------------------


def label(packets: int) -> str:
    """1000000 -> '1m', 20000 -> '20k': the stem of the default file name."""
    if packets % 1_000_000 == 0:
        return f"{packets // 1_000_000}m"
    if packets % 1000 == 0:
        return f"{packets // 1000}k"
    return str(packets)


def truth_path(pcap: Path) -> Path:
    return pcap.with_name(pcap.name.removesuffix(".pcap") + ".truth.json")


class Schedule:
    """Open flows by the time of their next frame: a heap, ties broken in the order the
    flows were added (so the output never depends on comparing generators)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Event, Iterator[Event]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self.heap)

    def add(self, flow: Iterator[Event]) -> None:
        event = next(flow, None)
        if event is not None:
            heapq.heappush(self.heap, (event[0], next(self._order), event, flow))

    def pop(self) -> Event:
        """The earliest frame of any flow; its flow goes back in with its next frame."""
        _, _, event, flow = heapq.heappop(self.heap)
        self.add(flow)
        return event

    def next_time(self) -> float:
        return self.heap[0][0] if self.heap else float("inf")


def generate(out: Path, packets: int, seed: int, signatures: Path, progress: bool) -> dict:
    """Write ``packets`` frames to ``out`` and the ground truth beside it; returns the summary.

    Both files are written under a ``.part`` name and renamed when complete, so an
    interrupted run never leaves a corpus that looks finished."""
    started = time.perf_counter()
    world = World(seed, signatures)
    out.parent.mkdir(parents=True, exist_ok=True)
    truth = truth_path(out)
    tmp_pcap, tmp_truth = out.with_name(out.name + ".part"), truth.with_name(truth.name + ".part")
    try:
        with open(tmp_pcap, "wb") as pcap, open(tmp_truth, "w", encoding="utf-8") as tf:
            summary = write_frames(world, packets, pcap, tf, out.name, progress)
    except BaseException:
        tmp_pcap.unlink(missing_ok=True)
        tmp_truth.unlink(missing_ok=True)
        raise
    os.replace(tmp_truth, truth)
    os.replace(tmp_pcap, out)
    summary["generate_seconds"] = round(time.perf_counter() - started, 1)
    return summary


def write_frames(world: World, packets: int, pcap: BinaryIO, tf: TextIO, name: str, progress: bool) -> dict:
    """The simulation: new sessions arrive, the earliest frame of any flow is written next,
    and the names it completes go to the ground truth. Returns the summary."""
    started = time.perf_counter()
    catalogue = world.catalogue
    schedule = Schedule()
    for _ in range(MIDSTREAM_FLOWS):
        schedule.add(world.midstream(EPOCH))
    arrival = EPOCH
    kinds = [0] * len(KINDS)
    names = 0
    tiktok_pairs: set[tuple[str, str]] = set()
    last = EPOCH
    pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
    tf.write('{"names": [\n')
    buf = bytearray()
    sep = ""
    for frame_no in range(1, packets + 1):
        while arrival <= schedule.next_time():
            schedule.add(world.session(arrival))
            arrival += world.rng.expovariate(SESSIONS_PER_SECOND)
        ts, frame, kind, found = schedule.pop()
        if ts < last:
            raise RuntimeError(f"frame {frame_no}: a session went back in time ({ts} < {last})")
        last = ts
        usec = round(ts * 1e6)
        buf += _RECORD.pack(usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        buf += frame
        kinds[kind] += 1
        if found is not None:
            ip, proto, found_names = found
            for found_name in found_names:
                category, tiktok = catalogue.verdict(found_name)
                tf.write(sep + json.dumps({"frame": frame_no, "proto": proto, "name": found_name, "client_ip": ip,
                                           "category": category, "tiktok": tiktok}, separators=(",", ":")))
                sep = ",\n"
                names += 1
                if tiktok:
                    tiktok_pairs.add((ip, found_name))
        if len(buf) >= 1 << 22:
            pcap.write(buf)
            buf.clear()
        if progress and not frame_no % 100_000:
            print(f"  {frame_no:>10,} frames  {time.perf_counter() - started:6.1f} s  "
                  f"{len(schedule):,} open flows", file=sys.stderr)
    pcap.write(buf)
    summary = {
        "file": name,
        "generator": "benchmarks/generate.py",
        "generator_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "seed": world.seed,
        "packets": packets,
        "bytes": pcap.tell(),
        "capture_seconds": round(last - EPOCH, 3),
        "names": names,
        "tiktok_pairs": len(tiktok_pairs),
        "open_flows_at_end": len(schedule),
        "frames_by_kind": dict(zip(KINDS, kinds)),
    }
    tf.write('\n],\n"tiktok_pairs": ' + json.dumps(sorted(tiktok_pairs)).replace("], [", "],\n["))
    tf.write(',\n"summary": ' + json.dumps(summary, indent=1) + "\n}\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="frames at scale 1 (default %(default)s)")
    parser.add_argument("--scale", type=int, default=1, help="multiply --packets (10 for the memory target)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, help="pcap to write (default benchmarks/corpus/tap-<size>.pcap)")
    parser.add_argument("--signatures", type=Path, default=REPO / "signatures",
                        help="signature set that decides which names are TikTok")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    packets = args.packets * args.scale
    if packets < 1 or args.scale < 1:
        parser.error("--packets and --scale must be positive")
    out = args.out or HERE / "corpus" / f"tap-{label(packets)}.pcap"
    summary = generate(out, packets, args.seed, args.signatures, not args.quiet)
    if not args.quiet:
        mix = ", ".join(f"{k} {v / packets:.1%}" for k, v in summary["frames_by_kind"].items() if v)
        print(f"{out}: {packets:,} frames, {summary['bytes'] / 1e6:,.0f} MB, {summary['capture_seconds']:.0f} s of "
              f"traffic, {summary['names']:,} names ({summary['tiktok_pairs']:,} TikTok client/name pairs), "
              f"{summary['open_flows_at_end']:,} flows open at the end; {summary['generate_seconds']} s\n  {mix}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("generate.py: interrupted; no corpus written", file=sys.stderr)
        sys.exit(130)
