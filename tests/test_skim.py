"""The skim (detector/_skim.c): dropping bulk frames in C must change nothing but the speed.

Why: the C walker drops most frames of a capture before Python sees them, on a few byte
checks that restate what detector/pipeline.py would do with each frame. One frame dropped
too many is a name silently lost (a TikTok connection never reported) and nothing else
would show it; a counter bumped differently makes the summary and the metrics lie. The
contract (header comment of _skim.c) is checked the one way that catches such a drift:
a capture read with the skim and read with ``Settings(skim=False)`` (every frame decoded
in Python, the reference) must give exactly the same observations (with frame numbers),
bindings, clock ticks and counters. That is checked

- on every capture of ``pcaps/`` and, when present, of ``../shared/corpus``;
- on random frames built from valid templates and then damaged (hypothesis), as pcap and
  as pcapng with two interfaces of different link types;
- on the pcapng blocks the C walker leaves to Python.

The C API is also tested on its own: spans, the record limit, the ``until`` clock stop,
batches of at most 4096 kept frames, and the flow set Python keeps in step with ``track``.
"""

from __future__ import annotations

import io
import random
import struct
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.cli import main
from detector.decode import decode
from detector.extract.binding import Binding
from detector.extract.clienthello import client_hello_from_records
from detector.match import load_signatures
from detector.pipeline import Extractor, Settings, Wanted
from detector.records import Observation, Signature
from detector.replay import read_captures
from detector.skim import (
    CORRUPT,
    DROP_KEYS,
    END,
    FRAME,
    FULL,
    HINT_UNWANTED_HELLO,
    KEPT,
    MAX_RECORD,
    REQUEST_STARTS,
    TICK,
    Skimmer,
    new_skimmer,
)
from detector.sources.pcapfile import CaptureError, CaptureFile
from test_pipeline import client_hello

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
CORPUS = ROOT.parent / "shared" / "corpus"
SIGNATURES = load_signatures(ROOT / "signatures")
CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap")) if CORPUS.is_dir() else []
SAMPLE = ROOT / "pcaps" / "sample-office.pcapng"
#: Fixtures with bulk (ACKs, TLS records after the ClientHello, HTTP bodies) the skim must drop.
BULKY = ["sample-office.pcapng", "http-host.pcap", "http-nonstandard-port.pcap", "tls-one-segment.pcap",
         "dns-tcp.pcap"]

UDP_SKIM, TCP_SKIM = DROP_KEYS.index("skim.udp"), DROP_KEYS.index("skim.tcp")
SYN, PSH, ACK = 0x02, 0x08, 0x10
T0 = 1_772_442_000  # 2026-03-02T09:00:00Z, as the fixtures


# -- running a capture both ways ------------------------------------------------------------


@dataclass
class Run:
    """Everything a replay of some captures gave."""

    observations: list[Observation]
    bindings: list[tuple[int | None, Binding]]  # (frame it came from, binding)
    ticks: list[float]
    counters: dict[str, float]  # Extractor.snapshot() but its timings: the stats read_captures filled, and the tables'
    errors: int
    kept: int  # frames the Python pipeline decoded


def replay(paths: list[Path | str], skim: bool, base: Settings | None = None, wanted: Wanted | None = SIGNATURES) -> Run:
    """``replay``'s loop (detector.replay.read_captures) over ``paths``: with ``wanted``
    (the signatures) the skim triages DNS by name too; None is ``names`` (every name)."""
    observations: list[Observation] = []
    bindings: list[tuple[int | None, Binding]] = []
    ticks: list[float] = []
    extractor = Extractor(replace(base or Settings(), skim=skim), observations.append,
                          lambda b: bindings.append((extractor.frame, b)), wanted=wanted)
    kept = 0
    feed = extractor.feed

    def counted(*args) -> None:
        nonlocal kept
        kept += 1
        feed(*args)

    extractor.feed = counted  # read_captures takes extractor.feed once, per call
    errors = read_captures([str(p) for p in paths], extractor, ticks.append, progress=False)
    counters = {k: v for k, v in extractor.snapshot().items() if not k.startswith("processing.")}
    return Run(observations, bindings, ticks, counters, errors, kept)


def assert_same(paths: list[Path | str], base: Settings | None = None, wanted: Wanted | None = SIGNATURES
                ) -> tuple[Run, Run]:
    """Replay with the skim and without; everything must be equal. Returns (skimmed, reference)."""
    skimmed, reference = replay(paths, True, base, wanted), replay(paths, False, base, wanted)
    assert skimmed.observations == reference.observations
    assert skimmed.bindings == reference.bindings
    assert skimmed.ticks == reference.ticks
    assert skimmed.counters == reference.counters
    assert skimmed.errors == reference.errors
    # The reference really decodes every frame, and the skim never decodes more.
    assert reference.kept == reference.counters.get("packets", 0)
    assert skimmed.kept <= reference.kept
    return skimmed, reference


# -- the captures of the repository and of the shared corpus --------------------------------


#: The defaults, and an operator's extra ports (mDNS read as DNS; the QUIC servers'
#: ports of test_differential.py): the skim's port sets must follow the pipeline's.
PORT_SETTINGS = [
    pytest.param(Settings(), id="default-ports"),
    pytest.param(Settings(dns_ports=frozenset({53, 5353}), quic_ports=frozenset({443, 784, 853, 4433, 4443}),
                          tunnel_ports=(("vxlan", 8472), ("capwap", 12380))), id="more-ports"),
]


@pytest.mark.parametrize("wanted", [SIGNATURES, None], ids=["triage", "every-name"])
@pytest.mark.parametrize("base", PORT_SETTINGS)
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_skimmed_equals_every_frame_decoded(path, base, wanted):
    assert_same([path], base, wanted)


def test_all_fixtures_in_one_run_equal_every_frame_decoded():
    """One extractor over every file, as ``names a.pcap b.pcap ...`` reads them: the flow
    set and the clocks carry over from file to file."""
    skimmed, _ = assert_same(FIXTURES)
    assert skimmed.observations and skimmed.bindings and skimmed.errors == 1  # garbage.pcap


@pytest.mark.parametrize("name", BULKY)
def test_skim_drops_the_bulk_of_a_capture(name):
    """So the differential cannot pass by keeping everything: the skim decodes fewer frames
    and counts the rest as read."""
    skimmed, reference = assert_same([ROOT / "pcaps" / name])
    assert skimmed.kept < reference.kept == skimmed.counters["packets"]
    assert skimmed.observations


def test_names_no_skim_prints_the_same_lines(capsys):
    """The command line's ``--no-skim`` (what an operator runs to cross-check the skim)."""
    assert main(["names", "--no-progress", str(SAMPLE)]) == 0
    skimmed = capsys.readouterr().out.splitlines()
    assert main(["names", "--no-progress", "--no-skim", str(SAMPLE)]) == 0
    assert capsys.readouterr().out.splitlines() == skimmed
    assert len(skimmed) >= 20 and all('"frame"' in line for line in skimmed)


@pytest.mark.corpus
@pytest.mark.parametrize(
    "path",
    CORPUS_FILES or [pytest.param(None, marks=pytest.mark.skip(reason=f"{CORPUS} is absent: the shared corpus is not part of a user's clone"))],
    ids=lambda p: f"{p.parent.name}/{p.name}" if p else "corpus",
)
@pytest.mark.parametrize("base", PORT_SETTINGS)
def test_corpus_skimmed_equals_every_frame_decoded(path, base):
    assert_same([path], base)


# -- frames, by hand (scapy is too slow for hypothesis; these are a few struct.packs) -------

CLIENT_MAC, SERVER_MAC = bytes.fromhex("0200c6120a05"), bytes.fromhex("020000000001")


def ether(ethertype: int, payload: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    return (SERVER_MAC + CLIENT_MAC + b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
            + struct.pack("!H", ethertype) + payload)


def sll(ethertype: int, payload: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, CLIENT_MAC, ethertype) + payload


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0, src, dst) + payload


def ipv6(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64, src, dst) + payload


def ip(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    return (ipv4 if len(src) == 4 else ipv6)(src, dst, proto, payload)


def tcp(sport: int, dport: int, seq: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 0x50, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ethertype_of(l3: bytes) -> int:
    return 0x86DD if l3[:1] and l3[0] >> 4 == 6 else 0x0800


def eth_ip(l3: bytes) -> bytes:
    return ether(ethertype_of(l3), l3)


def pcap(records: list[tuple[float, bytes]], linktype: int = 1) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for ts, data in records:
        sec = int(ts)
        out += struct.pack("<IIII", sec, min(999_999, round((ts - sec) * 1e6)), len(data), len(data)) + data
    return out


def block(kind: int, body: bytes, order: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", kind, total) + body + struct.pack(order + "I", total)


def shb(order: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def idb(linktype: int, order: str = "<") -> bytes:
    return block(1, struct.pack(order + "HHI", linktype, 0, 65535), order)


def epb(iface: int, ts: float, data: bytes, order: str = "<", caplen: int | None = None) -> bytes:
    ticks = round(ts * 1e6)
    caplen = len(data) if caplen is None else caplen
    body = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, caplen, len(data)) + data
    return block(6, body, order)


def spb(data: bytes, order: str = "<") -> bytes:
    return block(3, struct.pack(order + "I", len(data)) + data, order)


def obsolete_pb(iface: int, ts: float, data: bytes, order: str = "<") -> bytes:
    ticks = round(ts * 1e6)
    body = struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data
    return block(2, body, order)


def dns_query(name: str, qid: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def dns_response(name: str, qid: int = 0x1234) -> bytes:
    query = dns_query(name, qid)
    answer = struct.pack("!HHHIH4s", 0xC00C, 1, 1, 60, 4, bytes([198, 19, 0, 80]))
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + query[12:] + answer


def dhcp_request(hostname: bytes) -> bytes:
    bootp = struct.pack("!BBBBIHHIIII16s64s128s", 1, 1, 6, 0, 0x1234, 0, 0, 0, 0, 0, 0,
                        CLIENT_MAC, b"", b"")
    options = (b"\x63\x82\x53\x63" + b"\x35\x01\x03" + bytes([12, len(hostname)]) + hostname
               + b"\x32\x04" + bytes([198, 18, 10, 5]) + b"\xff")
    return bootp + options


def arp(sender_ip: bytes) -> bytes:
    return b"\x00\x01\x08\x00\x06\x04\x00\x01" + CLIENT_MAC + sender_ip + bytes(6) + bytes([198, 18, 10, 1])


def _quic_initial() -> bytes:
    """A real QUIC v1 client Initial (it decrypts by itself: the keys come from its DCID)."""
    capture = CaptureFile(str(ROOT / "pcaps" / "quic-v1.pcap"))
    for _, linktype, data, _ in capture:
        packet = decode(linktype, data, Counter())
        if packet is not None and packet.dport == 443 and packet.payload[:1] >= b"\x80":
            capture.close()
            return packet.payload
    raise AssertionError("quic-v1.pcap holds no client Initial")


QUIC_INITIAL = _quic_initial()
CCS = b"\x14\x03\x03\x00\x01\x01"
V4 = [bytes([198, 18, 10, 5]), bytes([198, 18, 20, 7]), bytes([198, 19, 0, 53]), bytes([198, 19, 0, 80])]
V6 = [bytes.fromhex("fd00000000000000000000000000000" + c) for c in "1234"]
PORTS = (53, 443, 80, 67, 68, 4789, 2152, 6081, 5246, 5247, 37008, 4754, 8472, 8080, 40000, 40001)


# -- hypothesis: templates, then damage ------------------------------------------------------

def dns_tcp(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


#: What a TCP client sends, message by message (each split into segments), and its usual port.
#: Later messages on one connection: keep-alive requests, a ClientHello after a
#: HelloRetryRequest (behind a ChangeCipherSpec record) or after STARTTLS.
TCP_STREAMS = {
    "tls": (443, [client_hello(b"www.tiktok.com")]),
    "tls-hrr": (443, [client_hello(b"www.tiktok.com"), CCS + client_hello(b"www.tiktok.com")]),
    "http": (80, [b"GET / HTTP/1.1\r\nHost: www.tiktok.com\r\nAccept: */*\r\n\r\n"]),
    "http-keepalive": (8080, [b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
                              b"POST /x HTTP/1.1\r\nHost: b.example\r\nContent-Length: 0\r\n\r\n"]),
    "dns-tcp": (53, [dns_tcp(dns_query("www.tiktok.com")), dns_tcp(dns_query("m.tiktok.com", 7))]),
    "starttls": (25, [b"EHLO me\r\n", b"STARTTLS\r\n", client_hello(b"mail.example.org")]),
    "ssh": (22, [b"SSH-2.0-OpenSSH_9.6\r\n" + bytes(40)]),
    "tls-appdata": (443, [b"\x17\x03\x03\x00\x40" + bytes(64)]),
    "short-0x16": (443, [b"\x16\x03"]),
    # A load balancer's PROXY header before the client's first bytes (v1 text, v2 binary).
    "proxy-v1-tls": (443, [b"PROXY TCP4 198.18.10.5 198.19.0.80 40000 443\r\n" + client_hello(b"www.tiktok.com")]),
    "proxy-v2-http": (80, [b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([198, 18, 10, 5, 198, 19, 0, 80])
                           + b"\x9c\x40\x00\x50" + b"GET /x\r\nHost: www.tiktok.com\r\n\r\n"]),
    "proxy-v1-broken": (80, [b"PROXY TCP9 a b\r\nGET / HTTP/1.1\r\nHost: www.tiktok.com\r\n\r\n"]),
}
#: One UDP payload, its usual port, and whether the server sends it.
UDP_MESSAGES = {
    "dns-query": (53, False, dns_query("www.tiktok.com")),
    "dns-response": (53, True, dns_response("api.tiktokv.com")),
    "dns-other-query": (53, False, dns_query("www.example.org")),  # no signature: dropped in C
    "dns-other-response": (53, True, dns_response("Mail.Example.ORG")),
    # NXDOMAIN for a TikTok name: the question is all it holds (its query may be unseen).
    "dns-nxdomain": (53, True, bytes.fromhex("12348183") + dns_query("www.tiktok.com")[4:]),
    "dns-other-nxdomain": (53, True, bytes.fromhex("12348183") + dns_query("www.example.org")[4:]),
    "quic-initial": (443, False, QUIC_INITIAL),
    "quic-server-long": (443, True, b"\xc3\x00\x00\x00\x01" + bytes(60)),
    "quic-short": (443, False, b"\x43" + bytes(40)),
    "dhcp": (67, False, dhcp_request(b"alice-laptop")),
    "junk": (40001, False, bytes(range(48))),
    "empty": (40001, False, b""),
}


@st.composite
def addresses(draw) -> tuple[bytes, bytes]:
    pool = draw(st.sampled_from([V4, V6]))
    client = draw(st.sampled_from(pool[:2]))
    server = draw(st.sampled_from(pool[2:] + pool[:1]))  # a client may talk to itself
    return client, server


def port(draw, natural: int) -> int:
    return draw(st.sampled_from((natural, natural, natural) + PORTS))


def flags(draw, natural: int) -> int:
    return draw(st.integers(0, 255)) if draw(st.integers(0, 7)) == 0 else natural


@st.composite
def tcp_flow(draw) -> list[bytes]:
    """One connection: handshake, the client's first flight in segments, ACKs, server bulk."""
    client, server = draw(addresses())
    kind = draw(st.sampled_from(sorted(TCP_STREAMS)))
    cport, sport = draw(st.sampled_from((40000, 40001) + PORTS)), port(draw, TCP_STREAMS[kind][0])
    messages = TCP_STREAMS[kind][1]
    isn = draw(st.sampled_from([0, 1000, 0xFFFFFFF0, 0x7FFFFFFF])) if draw(st.booleans()) else draw(
        st.integers(0, 0xFFFFFFFF))

    def up(seq: int, natural: int, data: bytes = b"") -> bytes:
        return ip(client, server, 6, tcp(cport, sport, seq, flags(draw, natural), data))

    def down(seq: int, natural: int, data: bytes = b"") -> bytes:
        return ip(server, client, 6, tcp(sport, cport, seq, flags(draw, natural), data))

    frames: list[bytes] = []
    if draw(st.booleans()):
        frames.append(up(isn, SYN))
    if draw(st.booleans()):
        frames.append(down(7777, SYN | ACK))
    sent = 0
    for message in messages[: draw(st.integers(1, len(messages)))]:
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(message) - 1)), max_size=2)))
        start = 0
        for cut in [*cuts, len(message)]:
            frames.append(up(isn + 1 + sent + start, PSH | ACK, message[start:cut]))
            if draw(st.booleans()):
                frames.append(down(7778, ACK))
            start = cut
        sent += len(message)
        if draw(st.booleans()):  # the server answers
            frames.append(down(7778, PSH | ACK, b"\x17\x03\x03\x00\x20" + bytes(32)))
            frames.append(up(isn + 1 + sent, ACK))
    if draw(st.booleans()):  # a bulk segment long after the flight: dropped unless the flow is tracked
        frames.append(up(isn + 1 + sent + 5000, PSH | ACK, b"\x17\x03\x03" + bytes(30)))
    if len(frames) > 1 and draw(st.booleans()):  # a retransmission or two segments out of order
        i = draw(st.integers(0, len(frames) - 2))
        if draw(st.booleans()):
            frames.insert(i + 1, frames[i])
        else:
            frames[i], frames[i + 1] = frames[i + 1], frames[i]
    return frames


@st.composite
def udp_flow(draw) -> list[bytes]:
    client, server = draw(addresses())
    kind = draw(st.sampled_from(sorted(UDP_MESSAGES)))
    natural, from_server, payload = UDP_MESSAGES[kind]
    cport, sport = draw(st.sampled_from((40000, 68) + PORTS)), port(draw, natural)
    if kind == "dhcp":
        cport = draw(st.sampled_from((68, 67, 40000)))
    if from_server:
        return [ip(server, client, 17, udp(sport, cport, payload))] * draw(st.integers(1, 2))
    return [ip(client, server, 17, udp(cport, sport, payload))] * draw(st.integers(1, 2))


# -- the tunnels a tap's copy arrives in (decode.py opens them, and so does the C skim) ------

OUTER_A, OUTER_B = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
BSSID, ROUTER_MAC = bytes.fromhex("02a0000000a1"), bytes.fromhex("02a0000000fe")


def dot11(l3: bytes, from_ds: bool = False, swapped: bool = False, qos: bool = False) -> bytes:
    """An 802.11 data frame (LLC/SNAP): to the access point (To DS) or from it (From DS);
    ``swapped``: its frame control bytes in a Cisco access point's order."""
    control = bytes([0x88 if qos else 0x08, 0x02 if from_ds else 0x01])
    addresses = (CLIENT_MAC, BSSID, ROUTER_MAC) if from_ds else (BSSID, CLIENT_MAC, ROUTER_MAC)
    header = (control[::-1] if swapped else control) + b"\x00\x00" + b"".join(addresses) + b"\x10\x00"
    return header + (b"\x00\x00" if qos else b"") + b"\xaa\xaa\x03\x00\x00\x00" + struct.pack("!H", ethertype_of(l3)) + l3


def capwap(frame: bytes, native: bool = True, fragment_offset: int = 0) -> bytes:
    """A CAPWAP data header (RFC 5415) with the wireless-specific field, then ``frame``:
    an 802.11 frame (native, binding 1) or an 802.3 one."""
    flags = 0x20 | (0x80 if fragment_offset else 0)
    return bytes([0, 4 << 3, 1 << 1 | native, flags]) + struct.pack("!HH", 0, fragment_offset << 3) \
        + b"\x04\xbf\x23\x00\x00\x00\x00\x00" + frame


def gre(protocol: int, payload: bytes, seq: bool = True, key: bool = False) -> bytes:
    flags = (0x10 if seq else 0) | (0x20 if key else 0)
    return ipv4(OUTER_A, OUTER_B, 47, struct.pack("!BBH", flags, 0, protocol) + bytes(4 * (seq + key)) + payload)


#: Each wraps one IP packet as a sensor receives it: a UDP or GRE packet between two tunnel ends.
ENCAPSULATIONS = {
    "vxlan": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(50000, 4789, b"\x08\x00\x00\x00\x00\x00\x01\x00" + eth_ip(l3))),
    "gtp": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(2152, 2152, struct.pack("!BBHI", 0x30, 0xFF, len(l3), 1) + l3)),
    "geneve-ethernet": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(50000, 6081, b"\x00\x00\x65\x58\x00\x00\x07\x00"
                                                                + eth_ip(l3))),
    "geneve-ip": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(50000, 6081, struct.pack("!BBH", 1, 0, ethertype_of(l3))
                                                           + b"\x00\x00\x07\x00" + b"\x01\x08\x01\x00" + l3)),
    "tzsp-ethernet": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(40000, 37008, b"\x01\x00\x00\x01\x00\x01" + eth_ip(l3))),
    "tzsp-802.11": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(40000, 37008, b"\x01\x00\x00\x12\x0a\x01\xc4\x01"
                                                             + dot11(l3, qos=True))),
    "capwap-to-controller": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(12380, 5247, capwap(dot11(l3)))),
    "capwap-from-controller": lambda l3: ipv4(OUTER_B, OUTER_A, 17, udp(5247, 12380,
                                                                        capwap(dot11(l3, True, swapped=True)))),
    "capwap-802.3": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(12380, 5247, capwap(eth_ip(l3), native=False))),
    "erspan-i": lambda l3: gre(0x88BE, eth_ip(l3), seq=False),
    "erspan-ii": lambda l3: gre(0x88BE, struct.pack("!HHI", 0x1000 | 20, 0x0001, 0) + eth_ip(l3)),
    "erspan-iii": lambda l3: gre(0x22EB, struct.pack("!HHIHH", 0x2000 | 30, 0x0001, 0, 0, 0x0001) + bytes(8) + eth_ip(l3)),
    "gre-ethernet": lambda l3: gre(0x6558, eth_ip(l3), seq=False, key=True),
    "gre-ip": lambda l3: gre(ethertype_of(l3), l3, seq=False),
    "gre-aruba": lambda l3: gre(0x8200, dot11(l3), seq=False),
    "gre-in-udp": lambda l3: ipv4(OUTER_A, OUTER_B, 17, udp(50000, 4754, struct.pack("!HH", 0, 0x6558) + eth_ip(l3))),
}


@st.composite
def tunnelled_flow(draw) -> list[bytes]:
    """A whole flow inside one of ``ENCAPSULATIONS`` or IP-in-IP, or with IPv6 extension
    headers (the last two: frames the skim keeps for Python unread). Its addresses are its
    own: the same flow started in unread frames and continued in plain ones is a known
    divergence, tested on its own (test_flow_started_where_the_skim_cannot_read)."""
    inner_client, inner_server = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
    stream = TCP_STREAMS[draw(st.sampled_from(["tls", "http"]))][1][0]
    half = len(stream) // 2
    inner = [ipv4(inner_client, inner_server, 6, tcp(40000, 443, 99, SYN)),
             ipv4(inner_client, inner_server, 6, tcp(40000, 443, 100, PSH | ACK, stream[:half])),
             ipv4(inner_client, inner_server, 6, tcp(40000, 443, 100 + half, PSH | ACK, stream[half:])),
             ipv4(inner_server, inner_client, 6, tcp(443, 40000, 7000, PSH | ACK, bytes(40))),
             ipv4(inner_client, inner_server, 17, udp(40000, 53, dns_query("vm.tiktok.com")))]
    how = draw(st.sampled_from([*ENCAPSULATIONS, "ipip", "v6ext", "capwap-control", "capwap-fragment"]))
    if how in ENCAPSULATIONS:
        return [ENCAPSULATIONS[how](p) for p in inner]
    if how == "capwap-control":  # DTLS-protected control messages, both ways
        return [ipv4(OUTER_A, OUTER_B, 17, udp(12380, 5246, b"\x01\x00\x00\x00" + p)) for p in inner[:2]] + [
            ipv4(OUTER_B, OUTER_A, 17, udp(5246, 12380, b"\x01\x00\x00\x00" + inner[3]))]
    if how == "capwap-fragment":  # the first fragment read, the second counted
        return [ipv4(OUTER_A, OUTER_B, 17, udp(12380, 5247, capwap(dot11(inner[1])[:40], fragment_offset=0))),
                ipv4(OUTER_A, OUTER_B, 17, udp(12380, 5247, capwap(dot11(inner[1])[40:], fragment_offset=5)))]
    if how == "ipip":
        return [ipv4(OUTER_A, OUTER_B, 4, p) for p in inner]
    v6a, v6b = bytes.fromhex("fd09" + "00" * 13 + "01"), bytes.fromhex("fd09" + "00" * 13 + "02")
    return [ipv6(v6a, v6b, 60, bytes([p[9], 0]) + bytes(6) + p[20:]) for p in inner]  # destination options


@st.composite
def l3_packets(draw) -> list[bytes]:
    """Several flows, interleaved (each flow's own order kept), and maybe an ARP request."""
    flows = draw(st.lists(st.one_of(tcp_flow(), tcp_flow(), udp_flow(), tunnelled_flow()), min_size=1, max_size=5))
    if draw(st.booleans()):
        flows.append([b"ARP" + arp(bytes([198, 18, 10, 5]))])
    tokens = draw(st.permutations([i for i, flow in enumerate(flows) for _ in flow]))
    positions = [0] * len(flows)
    out = []
    for i in tokens:
        out.append(flows[i][positions[i]])
        positions[i] += 1
    return out


#: 802.1Q tags of an Ethernet frame: none, one, QinQ; and whether it is padded to 60 bytes
#: as a NIC pads short frames (bytes past the IP length: a pure ACK must stay empty).
LINK_VARIANTS = [((), False), ((), True), (((0x8100, 10),), True), (((0x88A8, 100), (0x8100, 20)), False)]


def link(linktype: int, l3: bytes, variant: tuple[tuple[tuple[int, int], ...], bool]) -> bytes:
    tags, padded = variant
    if l3.startswith(b"ARP"):
        ethertype, l3 = 0x0806, l3[3:]
    else:
        ethertype = ethertype_of(l3)
    if linktype == 1:
        frame = ether(ethertype, l3, tags)
        return frame + bytes(60 - len(frame)) if padded and len(frame) < 60 else frame
    if linktype == 113:
        return sll(ethertype, l3)
    return l3


@st.composite
def damaged(draw, frame: bytes) -> bytes:
    """Most frames intact; some with bytes flipped in the headers, or cut short."""
    how = draw(st.sampled_from(["intact"] * 10 + ["flip", "cut"]))
    if how == "flip":
        data = bytearray(frame)
        for _ in range(draw(st.integers(1, 3))):
            if data:
                data[draw(st.integers(0, min(len(data), 80) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "cut":
        return frame[: draw(st.integers(0, len(frame)))]
    return frame


@st.composite
def timed(draw, frames: list) -> list[tuple[float, object]]:
    """Capture times: mostly increasing, across clock seconds and flow timeouts, sometimes back."""
    ts, out = float(T0), []
    for frame in frames:
        ts = max(T0, ts + draw(st.sampled_from([0.0, 0.001, 0.25, 0.9, 1.0, 2.5, 45.0, -3.0])))
        out.append((ts, frame))
    return out


SETTINGS = st.builds(
    Settings,
    max_tcp_flows=st.sampled_from([1, 2, 65536]),  # 1 and 2: flows evicted (the skim must forget them too)
    max_flight_bytes=st.sampled_from([48, 65536, 65536]),  # 48: first flights overflow
    flow_timeout=st.sampled_from([1.0, 30.0]),  # 1.0: flows expire between segments
    tunnel_ports=st.sampled_from([(), (("vxlan", 8472), ("geneve", 40000))]),  # a port a flow may also use
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("skim")


def write_and_compare(scratch: Path, captures: list[bytes], base: Settings, suffix: str,
                      wanted: Wanted | None = SIGNATURES) -> tuple[Run, Run]:
    paths = []
    for i, data in enumerate(captures):
        paths.append(scratch / f"c{i}.{suffix}")
        paths[-1].write_bytes(data)
    return assert_same(paths, base, wanted)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), base=SETTINGS, linktype=st.sampled_from([1, 1, 101, 113]))
def test_damaged_frames_skimmed_equal_every_frame_decoded_pcap(scratch, data, base, linktype):
    packets = data.draw(l3_packets())
    frames = [data.draw(damaged(link(linktype, p, data.draw(st.sampled_from(LINK_VARIANTS))))) for p in packets]
    records = data.draw(timed(frames))
    split = data.draw(st.integers(0, len(records)))  # one capture, or two read in one run
    parts = [records[:split], records[split:]] if split else [records]
    captures = [pcap(part, linktype) for part in parts]
    write_and_compare(scratch, captures, base, "pcap")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), base=SETTINGS, order=st.sampled_from("<>"))
def test_damaged_frames_skimmed_equal_every_frame_decoded_pcapng(scratch, data, base, order):
    """Two interfaces, Ethernet and raw IP (linktype 101), one flow's frames on either."""
    packets = data.draw(l3_packets())
    blocks = [shb(order), idb(1, order), idb(101, order)]
    frames = []
    for p in packets:
        iface = 0 if p.startswith(b"ARP") else data.draw(st.integers(0, 1))
        frame = link((1, 101)[iface], p, data.draw(st.sampled_from(LINK_VARIANTS)))
        frames.append((iface, data.draw(damaged(frame))))
    for ts, (iface, frame) in data.draw(timed(frames)):
        blocks.append(epb(iface, ts, frame, order))
    write_and_compare(scratch, [b"".join(blocks)], base, "pcapng")


# -- known divergence: a flow started where the C walk cannot read it ----------------------


def write(scratch: Path, data: bytes, suffix: str) -> Path:
    path = scratch / f"one.{suffix}"
    path.write_bytes(data)
    return path


CLIENT, SERVER = V4[0], V4[3]
REQUEST = b"GET / HTTP/1.1\r\nHost: www.tiktok.com\r\n\r\n"


def ipip(l3: bytes) -> bytes:
    return ipv4(bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 4, l3)


@pytest.mark.parametrize("case", ["ipip", "null-interface"])
def test_flow_started_where_the_skim_cannot_read(scratch, case):
    """A TCP flow whose first segments arrive in frames the C walker keeps without reading
    (a tunnel, a link type it does not parse) and whose next segment arrives plainly in the
    same walk: Python tracks the flow from the first frames, so it needs that segment.
    Seen when a sensor taps both sides of a tunnel endpoint, or a pcapng holds a loopback
    and an Ethernet interface."""
    syn = ipv4(CLIENT, SERVER, 6, tcp(40000, 80, 99, SYN))
    head = ipv4(CLIENT, SERVER, 6, tcp(40000, 80, 100, PSH | ACK, REQUEST[:20]))
    rest = ipv4(CLIENT, SERVER, 6, tcp(40000, 80, 120, PSH | ACK, REQUEST[20:]))
    # The first walk of a file stops at its first frame (a clock is due); the flow's three
    # frames come in the second walk.
    dns = ipv4(CLIENT, V4[2], 17, udp(40000, 53, dns_query("example.org")))
    if case == "ipip":
        data = pcap([(T0, eth_ip(dns)), (T0, eth_ip(ipip(syn))), (T0, eth_ip(ipip(head))), (T0, eth_ip(rest))])
        suffix = "pcap"
    else:  # a BSD loopback interface (linktype 0) next to an Ethernet one
        null = struct.pack("<I", 2)  # AF_INET, host order
        data = (shb() + idb(0) + idb(1) + epb(1, T0, eth_ip(dns)) + epb(0, T0, null + syn) + epb(0, T0, null + head)
                + epb(1, T0, eth_ip(rest)))
        suffix = "pcapng"
    reference = replay([write(scratch, data, suffix)], False, wanted=None)
    assert [(o.frame, o.name) for o in reference.observations] == [(1, "example.org"), (4, "www.tiktok.com")]
    write_and_compare(scratch, [data], Settings(), suffix)


@pytest.mark.parametrize("how", sorted(ENCAPSULATIONS))
def test_tunnelled_flow_is_skimmed_inside_the_tunnel(scratch, how):
    """Traffic mirrors' and remote SPAN's tunnels (VXLAN, Geneve, ERSPAN, GRE, TZSP), CAPWAP
    and GTP-U are opened in C: a flow inside them is read as a plain one (its bulk dropped,
    its segments kept while Python tracks it), even when its first segments came plainly
    and the rest inside the tunnel."""
    wrap = ENCAPSULATIONS[how]

    syn = ipv4(CLIENT, SERVER, 6, tcp(40000, 80, 99, SYN))
    head = ipv4(CLIENT, SERVER, 6, tcp(40000, 80, 100, PSH | ACK, REQUEST[:20]))
    rest = ipv4(CLIENT, SERVER, 6, tcp(40000, 80, 120, PSH | ACK, REQUEST[20:]))
    bulk = [ipv4(SERVER, CLIENT, 6, tcp(80, 40000, 5000 + 100 * i, PSH | ACK, bytes(100))) for i in range(20)]
    other = ipv4(CLIENT, V4[2], 17, udp(40000, 53, dns_query("www.example.org")))
    frames = [syn, wrap(head), wrap(rest), *map(wrap, bulk), wrap(other), wrap(syn)]
    data = pcap([(T0 + i * 0.001, eth_ip(f)) for i, f in enumerate(frames)])
    skimmed, reference = write_and_compare(scratch, [data], Settings(), "pcap")
    assert [(o.frame, o.name) for o in reference.observations] == [(3, "www.tiktok.com")]
    assert skimmed.kept == 4  # the SYNs and the request's two segments; the bulk and the DNS left in C


# -- DNS triage: names read in C, as dns.py reads them ---------------------------------------

#: Names a DNS message may carry: TikTok's (kept for Python) and others (dropped in C),
#: case-randomised ones, ones with bytes Python escapes, a regex key's zone.
DNS_NAMES = [b"www.tiktok.com", b"WwW.TikTok.CoM", b"example.org", b"tiktok.com.example.net", b"nottiktok.com",
             b"p16-tiktok-va.ibyteimg.com", b"ibyteimg.com", b"a\\x80.example", b"a\x80.example", b"x\x00y.org",
             b"x\x7fy.tiktok.com", b"a.b.c.d.e.f.g.h", b"tiktokcdn.com", b"www.google.com"]


@st.composite
def dns_message(draw) -> bytes:
    """A DNS message built from names, pointers and records of the types dns.py reads into,
    then perhaps damaged: the C reader and dns.py must agree on every one."""
    out = bytearray(struct.pack("!HHHH", draw(st.integers(0, 0xFFFF)), draw(st.sampled_from([0x0100, 0x8180, 0x8183])),
                                0, 0) + bytes(4))
    starts: list[int] = []

    def name() -> bytes:
        if starts and draw(st.integers(0, 3)) == 0:  # all of an earlier name
            return struct.pack("!H", 0xC000 | draw(st.sampled_from(starts)))
        labels = draw(st.sampled_from(DNS_NAMES)).split(b".")
        cut = draw(st.integers(0, len(labels)))  # the rest by a pointer, if there is an earlier name
        if cut < len(labels) and starts:
            tail = struct.pack("!H", 0xC000 | draw(st.sampled_from(starts)))
            labels = labels[:cut]
        else:
            tail = b"\x00"
        return b"".join(bytes([len(label)]) + label for label in labels) + tail

    def put(encoded: bytes) -> None:
        starts.append(len(out))
        out.extend(encoded)

    questions = draw(st.integers(0, 3))
    for _ in range(questions):
        put(name())
        out.extend(struct.pack("!HH", draw(st.sampled_from([1, 28, 65])), 1))
    answers = draw(st.integers(0, 40))
    for _ in range(answers):
        put(name())
        rtype = draw(st.sampled_from([1, 5, 5, 39, 64, 65, 28]))
        if rtype in (5, 39):
            rdata = name()
        elif rtype in (64, 65):
            rdata = b"\x00\x01" + name()
        else:
            rdata = bytes(4 if rtype == 1 else 16)
        out.extend(struct.pack("!HHIH", rtype, 1, 60, len(rdata)))
        starts.append(len(out))
        out.extend(rdata)
    out[4:8] = struct.pack("!HH", questions, answers)
    return draw(damaged(bytes(out)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=st.lists(dns_message(), min_size=1, max_size=8))
def test_dns_triage_equals_python_on_random_messages(scratch, messages):
    """Every message through the C name reader and through dns.py: the same names counted,
    the same faults, the same observations (only TikTok's leave the pipeline)."""
    frames = [eth_ip(ipv4(V4[0], V4[2], 17, udp(40000 + i, 53, m))) for i, m in enumerate(messages)]
    write_and_compare(scratch, [pcap([(T0, f) for f in frames])], Settings(), "pcap")


def test_dns_triage_drops_what_cannot_match():
    """Names that match no signature leave in C, counted; a TikTok name, a name with a
    byte Python escapes and a response of too many names to count in C reach Python."""
    many = b"".join(struct.pack("!HHHIH", 0xC00C, 5, 1, 60, 6) + b"\x04n%03d\x00" % n for n in range(40))
    messages = {
        "other": dns_query("www.example.org"),
        "other-response": dns_response("mail.example.org"),
        "tiktok": dns_query("www.TikTok.com"),
        "escaped": dns_query("a.example.org")[:12] + b"\x04caf\xe9\x07example\x03org\x00\x00\x01\x00\x01",
        "too-many": struct.pack("!HHHHHH", 1, 0x8180, 1, 40, 0, 0) + dns_query("a.example")[12:] + many,
    }
    sk = new_skimmer(frozenset({53}), frozenset({443}), 16, names=SIGNATURES.prefilter_keys())
    data = pcap([(T0, eth_ip(ipv4(V4[0], V4[2], 17, udp(40000, 53, m)))) for m in messages.values()])
    result = walk(sk, data)
    assert kept_serials(result) == [3, 4, 5]
    drops = dict(zip(DROP_KEYS, result[7]))
    assert drops["observations.dns-query"] == 1 and drops["observations.dns-answer"] == 1
    assert drops["packets"] == 2


def test_names_never_triages():
    """``names`` prints every name: nothing is triaged by signature."""
    extractor = Extractor(Settings(), lambda obs: None, lambda binding: None)
    assert not extractor.skimmer.triage
    assert Extractor(Settings(), lambda obs: None, lambda binding: None, wanted=SIGNATURES).skimmer.triage


# -- the C API ------------------------------------------------------------------------------


def skimmer(keep_all: bool = False, max_flows: int = 16) -> Skimmer:
    return new_skimmer(frozenset({53}), frozenset({443}), max_flows, keep_all)


def walk(sk: Skimmer, data: bytes, pos: int = 24, end: int | None = None):
    """walk_pcap over a little-endian microsecond Ethernet capture."""
    return sk.walk_pcap(data, pos, len(data) if end is None else end, False, False, 1)


def kept_serials(result: tuple) -> list[int]:
    """The frame serials a walk kept (unpacked from its ``kept`` records)."""
    return [serial for serial, *_ in KEPT.iter_unpack(result[3])]


def dns_frame(name: str) -> bytes:
    return eth_ip(ipv4(CLIENT, V4[2], 17, udp(40000, 53, dns_query(name))))


DNS = dns_frame("www.tiktok.com")  # always kept
BULK_UDP = eth_ip(ipv4(CLIENT, SERVER, 17, udp(40000, 40001, bytes(100))))  # always dropped


def continuation(src: bytes = CLIENT, dst: bytes = SERVER, sport: int = 40000, dport: int = 443) -> bytes:
    """A segment in the middle of a TLS connection: no SYN, not the start of a message."""
    return eth_ip(ipv4(src, dst, 6, tcp(sport, dport, 5000, PSH | ACK, b"\x17\x03\x03\x00\x10" + bytes(16))))


@pytest.mark.parametrize("pos, end", [(-1, None), (24, 10**6), (40, 30), (0, -1)])
def test_walk_pcap_rejects_a_bad_span(pos, end):
    data = pcap([(T0, DNS)])
    with pytest.raises(ValueError, match="bad span"):
        walk(skimmer(), data, pos, end)


def test_walk_pcapng_rejects_a_bad_interface_table():
    with pytest.raises(ValueError):
        skimmer().walk_pcapng(b"\x00" * 64, 0, 64, False, b"\x00" * 23)


def test_record_longer_than_max_record_is_corrupt():
    ok = pcap([(T0, DNS[:14] + bytes(MAX_RECORD - 14))])
    result = walk(skimmer(), ok)
    # Kept (an IP header of zeros the skim cannot read through), so the walk ends after it.
    assert result[0] == FULL and result[2] == 1 and result[1] == len(ok)
    bad = pcap([(T0, DNS), (T0 + 1, DNS), (T0 + 2, DNS[:14] + bytes(MAX_RECORD + 1 - 14))])
    status, pos, walked, *_ = walk(skimmer(), bad)
    assert (status, walked) == (CORRUPT, 2) and pos == 24 + 2 * (16 + len(DNS))
    capture = CaptureFile("x.pcap", io.BytesIO(bad))
    with pytest.raises(CaptureError) as info:
        list(capture)
    assert str(info.value) == f"x.pcap: corrupt record after frame 2 (length {MAX_RECORD + 1}); stopped reading"


@pytest.mark.parametrize("cut", [1, 20, len(DNS), len(DNS) + 5], ids=["data", "more-data", "all-data", "header"])
def test_truncated_last_record_is_counted(cut):
    """Cut in the record's data or in its header: the whole frames before it are read, the
    rest counted once, with and without the skim."""
    data = pcap([(T0, DNS), (T0 + 1, BULK_UDP), (T0 + 2, DNS)])[:-cut]
    for sk, expected in ((skimmer(), [1]), (skimmer(keep_all=True), [1, 2])):
        capture = CaptureFile("x.pcap", io.BytesIO(data))
        frames = [n for batch, _, _ in capture.batches(sk) for *_, n, _ in batch]
        assert frames == expected and capture.frames == 2 and capture.skipped == {"truncated_record": 1}


def test_truncated_pcapng_block_is_counted():
    data = shb() + idb(1) + epb(0, T0, DNS) + epb(0, T0 + 1, DNS)
    capture = CaptureFile("x.pcapng", io.BytesIO(data[:-7]))
    assert [n for *_, n in capture] == [1] and capture.skipped == {"truncated_record": 1}


def test_walk_stops_right_after_the_first_frame_at_or_past_until():
    data = pcap([(T0 + 1, BULK_UDP), (T0 + 2, BULK_UDP), (T0 + 3, DNS), (T0 + 5, BULK_UDP)])
    sk = skimmer()
    sk.until = T0 + 2  # "at": the second frame, dropped, still ends the walk
    result = walk(sk, data)
    status, pos, walked, _, last_ts, ts_min, ts_max, drops = result
    assert (status, walked, kept_serials(result), last_ts) == (TICK, 2, [], T0 + 2)
    assert (ts_min, ts_max) == (T0 + 1, T0 + 2) and pos == 24 + 2 * (16 + len(BULK_UDP))
    assert drops[0] == 2 and drops[UDP_SKIM] == 2  # the counts of what it dropped come with it
    sk.until = T0 + 2.5  # "past": the third frame, kept
    result = walk(sk, data, pos)
    status, pos, walked, _, last_ts, *_ = result
    assert (status, walked, kept_serials(result), last_ts) == (TICK, 1, [3], T0 + 3)
    sk.until = float("inf")
    status, _, walked, _, last_ts, _, _, drops = walk(sk, data, pos)
    assert (status, walked, last_ts, drops[0]) == (END, 1, T0 + 5, 1)
    assert sk.serial == 4


def test_until_must_be_a_number():
    sk = skimmer()
    with pytest.raises(ValueError):
        sk.until = float("nan")
    with pytest.raises((TypeError, ValueError)):
        sk.until = "soon"


@pytest.mark.parametrize("bulk", [0.0, 0.1], ids=["all-kept", "some-dropped"])
def test_more_than_4096_kept_frames_come_in_several_batches(bulk):
    """Every frame kept or dropped in order, none lost at the batch boundaries."""
    rng = random.Random(4096)
    frames = [BULK_UDP if rng.random() < bulk else DNS for _ in range(10_000)]
    data = pcap([(T0 + i * 1e-4, f) for i, f in enumerate(frames)])
    expected = [i for i, f in enumerate(frames, 1) if f is DNS]
    assert 2 * 4096 < len(expected) <= 10_000
    sk, pos, got, statuses = skimmer(), 24, [], []
    while True:
        result = walk(sk, data, pos)
        statuses.append(result[0])
        pos = result[1]
        got += kept_serials(result)
        if result[0] == END:
            break
    assert statuses == [FULL, FULL, END]
    assert got == expected
    capture = CaptureFile("x.pcap", io.BytesIO(data))
    batches = list(capture.batches(skimmer()))
    assert [len(frames) for frames, _, _ in batches] == [4096, 4096, len(expected) - 8192]
    assert [n for frames, _, _ in batches for *_, n, _ in frames] == expected
    assert sum(drops[0] for _, _, drops in batches) == len(frames) - len(expected)
    assert capture.frames == len(frames)


def test_keep_all_keeps_everything_and_counts_nothing():
    data = pcap([(T0, BULK_UDP), (T0, continuation()), (T0, DNS)])
    result = walk(skimmer(keep_all=True), data)
    assert kept_serials(result) == [1, 2, 3] and result[7] == (0,) * len(DROP_KEYS)
    assert skimmer(keep_all=True).keep_all and not skimmer().keep_all


@pytest.mark.parametrize("args", [
    (b"\x01" * 4, 1, b"\x02" * 16, 2),
    (b"\x01" * 5, 1, b"\x02" * 5, 2),
    (b"", 1, b"", 2),
    (b"\x01" * 4, 70000, b"\x02" * 4, 2),
])
def test_flow_hash_rejects_bad_addresses_and_ports(args):
    with pytest.raises(ValueError):
        skimmer().flow_hash(*args)


def test_flow_hash_is_per_direction_and_per_skimmer():
    sk = skimmer()
    h = sk.flow_hash(CLIENT, 40000, SERVER, 443)
    assert h == sk.flow_hash(CLIENT, 40000, SERVER, 443) != sk.flow_hash(SERVER, 443, CLIENT, 40000)
    assert h != skimmer().flow_hash(CLIENT, 40000, SERVER, 443)  # seeded: nobody outside can aim a collision


def test_track_decides_whether_a_continuation_is_kept():
    data = pcap([(T0, continuation())])
    sk = skimmer()
    h = sk.flow_hash(CLIENT, 40000, SERVER, 443)
    result = walk(sk, data)
    assert kept_serials(result) == [] and result[7][:4] == (1, len(continuation()), 0, 1)  # counted as skim.tcp
    sk.track(h, True)
    assert len(sk) == 1
    assert kept_serials(walk(sk, data)) == [2]
    # The other direction is another flow.
    assert kept_serials(walk(sk, pcap([(T0, continuation(SERVER, CLIENT, 443, 40000))]))) == []
    sk.track(h, True)  # twice is once
    assert len(sk) == 1
    sk.track(h, False)
    assert len(sk) == 0
    result = walk(sk, data)
    assert kept_serials(result) == [] and result[7][TCP_SKIM] == 1
    sk.track(h, False)  # forgetting an unknown flow is harmless
    sk.track(0, True)  # 0 is no flow
    assert len(sk) == 0


def test_a_walk_tracks_the_flows_it_sees_start():
    """A SYN, a ClientHello or a request starts a flow within the walk: its next segment is
    kept although Python has not read the start yet. A SYN-ACK or pure ACK starts nothing;
    the SYN-ACK answering a tracked flow is kept (Python learns the tap sees the server),
    one answering no tracked flow is not."""
    sk = skimmer()
    syn = eth_ip(ipv4(CLIENT, SERVER, 6, tcp(40000, 443, 1, SYN)))
    hello = eth_ip(ipv4(V4[1], SERVER, 6, tcp(40001, 443, 1, PSH | ACK, client_hello(b"a.example")[:30])))
    get = eth_ip(ipv4(V4[1], SERVER, 6, tcp(40002, 80, 1, PSH | ACK, b"PROPFIND / HTTP/1.1\r\n")))
    synack = eth_ip(ipv4(SERVER, CLIENT, 6, tcp(443, 40000, 1, SYN | ACK)))
    stray_synack = eth_ip(ipv4(SERVER, CLIENT, 6, tcp(443, 40009, 1, SYN | ACK)))
    ack = eth_ip(ipv4(CLIENT, SERVER, 6, tcp(40000, 443, 2, ACK)))
    later = [continuation(), continuation(V4[1], SERVER, 40001, 443), continuation(V4[1], SERVER, 40002, 80),
             continuation(SERVER, CLIENT, 443, 40000)]
    result = walk(sk, pcap([(T0, f) for f in [syn, hello, get, synack, stray_synack, ack, *later]]))
    assert kept_serials(result) == [1, 2, 3, 4, 7, 8, 9]
    assert len(sk) == 3 and result[7][0] == 3 and result[7][TCP_SKIM] == 1


def test_dns_server_syn_ack_is_kept_and_tracked():
    """The one SYN-ACK Python reads: from a DNS server (DNS over TCP, both directions read)."""
    sk = skimmer()
    synack = eth_ip(ipv4(V4[2], CLIENT, 6, tcp(53, 40000, 1, SYN | ACK)))
    result = walk(sk, pcap([(T0, synack)]))
    assert kept_serials(result) == [1] and len(sk) == 1


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 23), st.booleans()), max_size=80))
def test_flow_set_follows_track_as_a_python_set_would(ops):
    """Adds and removals in any order (linear probing with backward-shift deletion):
    exactly the tracked flows' continuations are kept. The flows are chosen so their keys
    crowd around one slot and the table's wrap-around, where deletion is hardest."""
    sk = Skimmer(frozenset({53}), frozenset({443}), REQUEST_STARTS, 1, 0x5EED, False)
    flows = crowded_flows(sk)
    model: set[int] = set()
    for index, tracked in ops:
        sk.track(sk.flow_hash(CLIENT, flows[index], SERVER, 443), tracked)
        (model.add if tracked else model.discard)(index)
        assert len(sk) == len(model)
    data = pcap([(T0, continuation(CLIENT, SERVER, p, 443)) for p in flows])
    assert kept_serials(walk(sk, data)) == [i + 1 for i in sorted(model)]


_CROWDED: list[int] = []


def crowded_flows(sk: Skimmer) -> list[int]:
    """24 client ports whose flow keys (seed 0x5EED) have their low 15 bits within 12 of 0,
    i.e. home slots around the start and end of a 32768-slot table."""
    if not _CROWDED:
        for p in range(1024, 65536):
            low = sk.flow_hash(CLIENT, p, SERVER, 443) & 0x7FFF
            if low < 12 or low >= 0x8000 - 12:
                _CROWDED.append(p)
                if len(_CROWDED) == 24:
                    break
    assert len(_CROWDED) == 24
    return _CROWDED


def test_a_full_flow_set_keeps_every_segment_and_says_so():
    """Never reached while Python reports (the table has room for four times its flows),
    but if it were, the skim keeps rather than loses, and counts skim.table_full."""
    sk = skimmer(max_flows=1)
    for key in range(1, 20_000):
        sk.track(key * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF or 1, True)
        if len(sk) < key:
            break
    full = len(sk)
    result = walk(sk, pcap([(T0, continuation()), (T0, BULK_UDP)]))
    assert kept_serials(result) == [1] and result[7][DROP_KEYS.index("skim.table_full")] == 1
    assert full < 20_000 - 1 and len(sk) == full


# -- pcapng blocks the C walker leaves to Python --------------------------------------------


def pcapng_both_ways(scratch: Path, data: bytes) -> tuple[Run, list[int], Counter]:
    """Frame numbers the skim keeps, skipped records, and the differential over the file."""
    capture = CaptureFile("x.pcapng", io.BytesIO(data))
    frames = [n for batch, _, _ in capture.batches(skimmer()) for *_, n, _ in batch]
    skimmed, _ = write_and_compare(scratch, [data], Settings(), "pcapng", wanted=None)
    return skimmed, frames, capture.skipped


def test_simple_and_obsolete_packet_blocks_are_read_and_numbered(scratch):
    """Python reads them (the walk stops there): in order with the EPBs the skim walks,
    never skimmed, an SPB on interface 0 with time 0, an obsolete PB with its own time."""
    data = (shb() + idb(1) + epb(0, T0, BULK_UDP) + spb(dns_frame("spb.example")) + epb(0, T0 + 1, continuation())
            + obsolete_pb(0, T0 + 2, dns_frame("pb.example")) + spb(continuation())
            + epb(0, T0 + 3, dns_frame("epb.example")))
    skimmed, frames, skipped = pcapng_both_ways(scratch, data)
    assert frames == [2, 4, 5, 6] and not skipped  # the SPB's bulk segment too: Python counts it
    assert [(o.frame, o.name) for o in skimmed.observations] == [
        (2, "spb.example"), (4, "pb.example"), (6, "epb.example")]
    assert [o.ts for o in skimmed.observations] == [0.0, pytest.approx(T0 + 2), pytest.approx(T0 + 3)]
    assert skimmed.counters["packets"] == 6 and skimmed.counters["skim.tcp"] == 2


def test_simple_packet_block_before_any_interface_is_counted(scratch):
    data = shb() + spb(DNS) + idb(1) + epb(0, T0, DNS)
    _, frames, skipped = pcapng_both_ways(scratch, data)
    assert frames == [2] and skipped == {"unknown_interface": 1}


def test_epbs_the_walk_cannot_take_keep_their_numbers(scratch):
    """An EPB on an undeclared interface, and one whose caplen overruns the block, among
    EPBs the skim walks and drops: counted, and the frames after keep their numbers."""
    data = (shb() + idb(1) + epb(0, T0, BULK_UDP) + epb(5, T0, DNS) + epb(0, T0, BULK_UDP)
            + epb(0, T0, DNS, caplen=len(DNS) + 4) + epb(0, T0, DNS))
    skimmed, frames, skipped = pcapng_both_ways(scratch, data)
    assert frames == [5] and skipped == {"unknown_interface": 1, "bad_block": 1}
    assert skimmed.counters["file.unknown_interface"] == 1 and skimmed.counters["file.bad_block"] == 1
    assert skimmed.counters["packets"] == 3  # the two walked bulk frames and the DNS query


def test_second_section_of_the_other_byte_order_is_skimmed_too(scratch):
    """The walker is told the new section's byte order and interfaces: bulk in the
    big-endian section is dropped in C, its DNS kept, on its own link type."""
    second = (shb(">") + idb(101, ">") + epb(0, T0 + 1, ipv4(CLIENT, SERVER, 17, udp(1, 2, bytes(10))), ">")
              + epb(0, T0 + 2, ipv4(CLIENT, V4[2], 17, udp(40000, 53, dns_query("be.example"))), ">"))
    data = shb() + idb(1) + epb(0, T0, BULK_UDP) + epb(0, T0, DNS) + second
    skimmed, frames, skipped = pcapng_both_ways(scratch, data)
    assert frames == [2, 4] and not skipped
    assert [(o.frame, o.name) for o in skimmed.observations] == [(2, "www.tiktok.com"), (4, "be.example")]
    assert skimmed.kept == 2 and skimmed.counters["skim.udp"] == 2


def test_more_interfaces_than_the_walker_takes(scratch):
    """The walker is given at most 64 interfaces; packets of the others are Python's."""
    data = shb() + b"".join(idb(1) for _ in range(64)) + idb(101)
    data += epb(64, T0, ipv4(CLIENT, V4[2], 17, udp(40000, 53, dns_query("if64.example"))))
    data += epb(3, T0, BULK_UDP) + epb(63, T0, DNS) + epb(64, T0, ipv4(CLIENT, SERVER, 17, udp(1, 2, b"x")))
    skimmed, frames, skipped = pcapng_both_ways(scratch, data)
    assert frames == [1, 3, 4] and not skipped
    assert [(o.frame, o.name) for o in skimmed.observations] == [(1, "if64.example"), (3, "www.tiktok.com")]


@pytest.mark.parametrize("bad, message", [
    (struct.pack("<II", 6, 30) + bytes(22), "corrupt pcapng block after frame 1"),  # EPB, not a multiple of 4
    (struct.pack("<II", 6, 8) + bytes(8), "corrupt pcapng block after frame 1"),  # EPB shorter than a block
    (struct.pack("<II", 5, 10) + bytes(8), "corrupt pcapng block after frame 1"),  # another block, too short
    (struct.pack("<II", 6, (16 << 20) + 4), "corrupt pcapng block after frame 1"),  # EPB over MAX_BLOCK
    (struct.pack("<II", 0x0A0D0D0A, 24) + b"\x4d\x3c\x2b\x1a" + bytes(12), "corrupt pcapng section header"),
    (struct.pack("<II", 0x0A0D0D0A, 28) + b"ABCD" + bytes(16), "bad byte-order magic"),
])
def test_pcapng_block_with_a_bad_length_is_one_line(bad, message):
    data = shb() + idb(1) + epb(0, T0, DNS) + bad
    for sk in (skimmer(), skimmer(keep_all=True)):
        capture = CaptureFile("x.pcapng", io.BytesIO(data))
        frames: list[int] = []
        with pytest.raises(CaptureError, match=message) as info:
            for batch, _, _ in capture.batches(sk):
                frames += [n for *_, n, _ in batch]
        assert frames == [1] and "\n" not in str(info.value) and str(info.value).startswith("x.pcapng: ")


# -- found in review --------------------------------------------------------------------------


def test_a_block_larger_than_the_read_buffer_is_read_whole(tmp_path):
    """A 5 MB block (a Decryption Secrets Block, say) between packets: the buffer grows to
    hold it, with no hang and no frame lost (a file, so read as users read it)."""
    path = tmp_path / "big.pcapng"
    path.write_bytes(shb() + idb(1) + epb(0, T0, DNS) + block(0x0000000A, bytes(5 << 20))
                     + epb(0, T0 + 1, dns_frame("after.example")))
    capture = CaptureFile(str(path))
    frames = [(n, data) for batch, _, _ in capture.batches(skimmer()) for _, _, data, n, _ in batch]
    assert [n for n, _ in frames] == [1, 2] and not capture.skipped


@pytest.mark.parametrize("total", [12, 16, 20, 24, 28])
def test_an_epb_too_short_for_its_fields_is_counted_not_read_past(total):
    """The walk reads an EPB's fields only once its length says they are there (ASan
    found the caplen read past the buffer for these lengths)."""
    short = struct.pack("<II", 6, total) + bytes(total - 12) + struct.pack("<I", total)
    data = shb() + idb(1) + epb(0, T0, DNS) + short
    capture = CaptureFile("x.pcapng", io.BytesIO(data))
    frames = [n for batch, _, _ in capture.batches(skimmer()) for *_, n, _ in batch]
    assert frames == [1] and capture.skipped["bad_block"] == 1


def test_a_skimmer_not_initialised_refuses_instead_of_crashing():
    bare = Skimmer.__new__(Skimmer)
    for call in (lambda: bare.track(5, True), lambda: bare.walk_pcap(b"", 0, 0, False, False, 1),
                 lambda: bare.walk_pcapng(b"", 0, 0, False, b"")):
        with pytest.raises(RuntimeError, match="__init__"):
            call()


# -- a live capture's batches, and name triage set and reset -----------------------------------


def batch(frames: list[tuple[float, bytes]]) -> tuple[bytes, bytes]:
    """(buffer, metadata) as pcapy's next_batch gives them, with a gap between frames."""
    data, meta = bytearray(), bytearray()
    for ts, frame in frames:
        data += b"\xee" * 3
        meta += FRAME.pack(int(ts), round((ts - int(ts)) * 1e6), len(data), len(frame))
        data += frame
    return bytes(data), bytes(meta)


def test_walk_frames_judges_a_live_batch_as_walk_pcap_judges_a_file():
    frames = [(T0 + i * 0.25, f) for i, f in enumerate([BULK_UDP, DNS, dns_frame("www.example.org"), BULK_UDP,
                                                          continuation(), DNS])]
    keys = SIGNATURES.prefilter_keys()
    from_file = walk(new_skimmer(frozenset({53}), frozenset({443}), 16, names=keys), pcap(frames))
    data, meta = batch(frames)
    live = new_skimmer(frozenset({53}), frozenset({443}), 16, names=keys)
    status, pos, walked, kept, last_ts, *_, drops = live.walk_frames(data, meta, 0, 1)
    assert (status, pos, walked) == (END, 6, 6) and drops == from_file[7]
    records = list(KEPT.iter_unpack(kept))
    assert [r[0] for r in records] == kept_serials(from_file) == [2, 6]
    assert [data[r[2]:r[2] + r[3]] for r in records] == [DNS, DNS]
    assert last_ts == pytest.approx(T0 + 1.25)
    # A walk resumes at the frame it is given; one stopped by a clock returns where it stopped.
    live.until = T0 + 0.5
    assert live.walk_frames(data, meta, 1, 1)[:3] == (TICK, 3, 2)


@pytest.mark.parametrize("bad", ["outside", "ragged"])
def test_walk_frames_refuses_frames_outside_its_buffer(bad):
    data, meta = batch([(T0, DNS)])
    sk = skimmer()
    if bad == "outside":
        assert sk.walk_frames(data[:-1], meta, 0, 1)[:3] == (CORRUPT, 0, 0)
    else:
        with pytest.raises(ValueError):
            sk.walk_frames(data, meta + b"\0", 0, 1)


@pytest.mark.parametrize("keys", [b"Tiktok.com", b"tiktok.com\0\0x.com", b"a" * 254, b"tik tok.com"])
def test_set_names_refuses_what_is_not_a_key_and_keeps_the_index(keys):
    sk = new_skimmer(frozenset({53}), frozenset({443}), 16, names=["example.org"])
    with pytest.raises(ValueError):
        sk.set_names(keys)
    assert sk.triage and kept_serials(walk(sk, pcap([(T0, dns_frame("www.example.org"))]))) == [1]


def test_reloaded_signatures_reach_the_skim():
    """live's SIGHUP: a name only the new set holds must reach Python from then on, and a
    set the index cannot take turns triage off rather than dropping its names."""
    observed: list[str] = []
    extractor = Extractor(Settings(), lambda obs: observed.append(obs.name), lambda b: None, wanted=SIGNATURES)
    sk = extractor.skimmer
    frame = pcap([(T0, dns_frame("www.example.org"))])
    assert kept_serials(walk(sk, frame)) == []
    extractor.want(replace(SIGNATURES, entries=(*SIGNATURES.entries, Signature("example.org", "suffix", "web", "t", 1))))
    assert kept_serials(walk(sk, frame)) == [2]
    extractor.want(replace(SIGNATURES, entries=(Signature("Example.org", "suffix", "web", "t", 1),)))
    assert not sk.triage and kept_serials(walk(sk, frame)) == [3]


# -- ClientHello triage: a whole hello in one segment, read in C as clienthello.py reads it ---

HELLO_NAMES = [b"www.tiktok.com", b"WWW.TIKTOK.COM.", b"www.example.org", b"Mail.Example.ORG..", b"", b".",
               b"caf\xc3\xa9.example", b"a\x00b.example", b"x" * 254, b"x" * 253, b"tiktokv.com.example.net",
               b"p16-tiktok-va.ibyteimg.com"]


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


@st.composite
def hello_extension(draw) -> bytes:
    kind = draw(st.sampled_from(["sni"] * 4 + ["alpn", "versions", "ech", "other", "other"] * 2 + ["bad-length"]))
    if kind == "sni":
        entries = b"".join(bytes([t]) + struct.pack("!H", len(n)) + n
                           for t, n in draw(st.lists(st.tuples(st.sampled_from([0, 0, 0, 1]), st.sampled_from(HELLO_NAMES)),
                                                     min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=2)))
        declared = len(entries) + draw(st.sampled_from([0] * 8 + [1, -1]))
        return _ext(0, struct.pack("!H", max(declared, 0)) + entries)
    if kind == "alpn":
        names = b"".join(bytes([len(p)]) + p for p in draw(st.lists(st.sampled_from([b"h2", b"http/1.1", b"", b"\x0a\x0a"]),
                                                                    max_size=3)))
        return _ext(16, struct.pack("!H", len(names) + draw(st.sampled_from([0] * 5 + [1]))) + names)
    if kind == "versions":
        versions = b"".join(struct.pack("!H", v) for v in draw(st.lists(st.sampled_from([0x0304, 0x0303, 0x0A0A]),
                                                                         max_size=3)))
        return _ext(43, bytes([len(versions) + draw(st.sampled_from([0] * 5 + [1]))]) + versions)
    if kind == "ech":
        return _ext(0xFE0D, bytes(draw(st.integers(0, 40))))
    if kind == "other":
        return _ext(draw(st.sampled_from([10, 13, 21, 51])), bytes(draw(st.integers(0, 30))))
    return struct.pack("!HH", 0, 200) + b"\x00\x10"  # a length past the block


@st.composite
def client_hello_record(draw) -> bytes:
    """A TLS record holding a ClientHello built from drawn parts (some malformed), then
    perhaps damaged: the C reader must never claim an unwanted name Python would not."""
    sid = bytes(draw(st.sampled_from([0, 32, 32, 33])))
    suites = bytes(draw(st.sampled_from([2, 4, 4, 34, 3, 0])))
    compression = draw(st.sampled_from([b"\x01\x00"] * 5 + [b"\x00"]))
    extensions = b"".join(draw(st.lists(hello_extension(), max_size=5)))
    ext_block = b"" if draw(st.integers(0, 19)) == 0 else struct.pack("!H", max(0, len(extensions) + draw(
        st.sampled_from([0] * 8 + [2, -2])))) + extensions
    body = b"\x03\x03" + bytes(32) + bytes([len(sid)]) + sid + struct.pack("!H", len(suites)) + suites + compression + ext_block
    handshake = b"\x01" + max(0, len(body) + draw(st.sampled_from([0] * 8 + [1, -1]))).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + struct.pack("!H", len(handshake) + draw(st.sampled_from([0] * 8 + [5, -1]))) + handshake
    return draw(damaged(record + bytes(draw(st.sampled_from([0, 0, 3])))))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hellos=st.lists(client_hello_record(), min_size=1, max_size=6))
def test_hello_triage_equals_python_on_random_hellos(scratch, hellos):
    """Each hello in one segment after a SYN: the skim's hint must change nothing (the
    same observations, parse errors and flight-table counts as parsing every hello), and
    a hinted segment must be one Python reads as a well-formed hello naming no TikTok host."""
    frames = []
    for i, hello in enumerate(hellos):
        frames.append(eth_ip(ipv4(CLIENT, SERVER, 6, tcp(41000 + i, 443, 999, SYN))))
        frames.append(eth_ip(ipv4(CLIENT, SERVER, 6, tcp(41000 + i, 443, 1000, PSH | ACK, hello))))
    data = pcap([(T0, f) for f in frames])
    write_and_compare(scratch, [data], Settings(), "pcap")
    sk = new_skimmer(frozenset({53}), frozenset({443}), 64, names=SIGNATURES.prefilter_keys())
    hinted = {serial for serial, *_, hint in KEPT.iter_unpack(walk(sk, data)[3]) if hint == HINT_UNWANTED_HELLO}
    for i, hello in enumerate(hellos):
        status, parsed = client_hello_from_records(hello)
        unwanted = status == "done" and parsed is not None and parsed.sni and SIGNATURES.match(parsed.sni) is None
        # Each hello is one record here, which the C reader takes whole: both ways, but
        # for a name Python writes with U+FFFD and for ECH (whose real name Python may
        # infer from a DNS answer), both of which C leaves to Python.
        readable = unwanted and parsed.sni.isascii() and parsed.sni.isprintable() and not parsed.ech
        assert (2 * i + 2 in hinted) == bool(readable), hello


def test_hello_triage_hints_only_unwanted_whole_hellos():
    sk = new_skimmer(frozenset({53}), frozenset({443}), 64, names=SIGNATURES.prefilter_keys())
    split = client_hello(b"www.example.org")
    segments = [client_hello(b"www.example.org"), client_hello(b"www.tiktok.com"), split[:40],
                b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n"]
    frames = [eth_ip(ipv4(CLIENT, SERVER, 6, tcp(42000 + i, 443, 1000, PSH | ACK, s))) for i, s in enumerate(segments)]
    kept = {serial: hint for serial, *_, hint in KEPT.iter_unpack(walk(sk, pcap([(T0, f) for f in frames]))[3])}
    assert kept == {1: HINT_UNWANTED_HELLO, 2: 0, 3: 0, 4: 0}
    # Without signature keys (`names`, every name wanted) nothing is hinted.
    assert {h for *_, h in KEPT.iter_unpack(walk(skimmer(), pcap([(T0, frames[0])]))[3])} == {0}
