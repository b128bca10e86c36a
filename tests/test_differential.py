"""Differential test: the names we extract equal what Wireshark's dissectors extract.

For every capture in ``pcaps/`` and, when present, ``../shared/corpus/`` (nDPI's, Zeek's
and Suricata's test captures), tshark is run for real (TCP reassembly on, QUIC Initials
decrypted by itself) and its names are compared with ours per frame:

- ``dns-query``: question names of DNS queries on port 53;
- ``dns-answer``: owner names, CNAME/DNAME targets and HTTPS/SVCB TargetNames of the
  answer section of responses on port 53;
- ``dns-query/response-only``: the question names of a response whose query is not in the
  capture (tshark links no request to it);
- ``tls-sni``, ``quic-sni``: the SNI of ClientHellos over TCP and QUIC;
- ``http-host``: the Host of HTTP requests (port stripped: our events carry the bare name).

Names are compared lowercased, as our extractors emit them. Every intended difference is
listed in ``INTENDED`` with its reason; anything else fails the test. No capture may make
the detector raise or hang (the extractor runs under a time limit per capture).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from detector.records import NAME_PROTOS
from detector.pipeline import Extractor, Settings
from detector.sources.pcapfile import CaptureError, CaptureFile

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))
CORPUS = ROOT.parent / "shared" / "corpus"
CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap")) if CORPUS.is_dir() else []
TSHARK = shutil.which("tshark")
TSHARK_TIMEOUT = 180
#: tshark finds QUIC on any UDP port; these are the ports the corpus's QUIC servers use
#: (HTTP/3 on 443, test servers on 4433/4443, DNS over QUIC on 853 and its draft port 784),
#: set as an operator would.
QUIC_PORTS = frozenset({443, 784, 853, 4433, 4443})

Name = tuple[int, str, str]  # (frame, proto, name)


@dataclass(frozen=True)
class Intended:
    """A difference we mean to have. ``theirs``/``ours`` are the names only tshark/only we
    extract: a set of (frame, proto, name) and protocol names, or one protocol name; a
    protocol name means every name of it.
    ``other_frames``: the same names, attributed to other frames."""

    reason: str
    theirs: frozenset | str = frozenset()
    ours: frozenset | str = frozenset()
    other_frames: bool = False


FRAGMENTS = Intended(
    "IP fragments are not reassembled: we read the first fragment at its own frame, tshark the "
    "reassembled datagram at the last fragment's (README, 'What is decoded')", other_frames=True)
OLD_QUIC = Intended(
    "QUIC versions no current client sends (drafts before 29, mvfst's, gQUIC T50/T51, or a reserved "
    "version that forces version negotiation): not decrypted, the client's next Initial in a real "
    "version is", theirs="quic-sni")
RETRY = "after a Retry the client sends its ClientHello again under the server's new DCID: we report " \
        "each sending, tshark one per connection"

INTENDED: dict[str, Intended] = {
    "ipv4-fragments.pcap": FRAGMENTS,
    "ipv6-fragments.pcap": FRAGMENTS,
    "dns_fragmented.pcap": FRAGMENTS,
    "dns-edns-ecs.pcap": FRAGMENTS,
    "ipv6-fragmented-dns.pcap": FRAGMENTS,
    **{name: OLD_QUIC for name in (
        "quic-23.pcap", "quic-24.pcap", "quic-27.pcap", "quic-28.pcap", "quic-mvfst-22.pcap",
        "quic-mvfst-27.pcapng", "quic-mvfst-exp.pcap", "quic_0RTT.pcap", "quic_t50.pcap", "quic_t51.pcap",
        "quic_interop_V.pcapng")},
    "quic-29.pcap": Intended(RETRY, theirs=frozenset({(5, "quic-sni", "localhost")}),
                             ours=frozenset({(3, "quic-sni", "localhost")})),
    "retry.pcap": Intended(RETRY, ours=frozenset({(7, "quic-sni", "server4:443")})),
    "quic-retry__input.pcap": Intended(RETRY, ours=frozenset({(6, "quic-sni", "www.gravatar.com")})),
    "doq_adguard.pcapng": Intended(RETRY, ours=frozenset({(3, "quic-sni", "dns.adguard.com")})),
    "fuzz-2006-06-26-2594.pcap": Intended(
        "fuzzed DNS messages tshark calls malformed and shows no name for; we keep the names read "
        "before the fault", ours=frozenset({
            (208, "dns-query", "_sip._udp.sip.cybercity.dk"), (409, "dns-answer", "1.0.0.127.in-addr.aspa"),
            (600, "dns-query", "<odd bytes>"), (642, "dns-query", "_sip.]udp.sip.cybercity.dk"),
            # The query before it is one tshark reads no name from, nor we: we keep no transaction for it.
            (312, "dns-query/response-only", "1.0.0.127.in-addr.arpa")}),
        # Responses tshark links to no query where we read the fuzzed query before them, or
        # whose question we cannot read.
        theirs=frozenset({(577, "dns-query/response-only", "1.0.0.127.in-addr.arpa"),
                          (684, "dns-query/response-only", "sip.cybercity.dk")})),
    "malformed_dns.pcap": Intended(
        "a name longer than 255 octets ends our parse of the message; tshark skips it and reads on",
        theirs="dns-answer"),
    "dns-one-way.pcap": Intended(
        "an answer repeated with no query in the capture: we report its question once per transaction, "
        "tshark (which links neither answer to a query) at each",
        theirs=frozenset({(4, "dns-query/response-only", "api16-normal-c-useast1a.tiktokv.com")})),
    "badpackets.pcap": Intended("frames shorter than their IPv4 total length: tshark drops the DNS "
                                "message, we read the names the bytes hold",
                                ours=frozenset({"dns-answer", "dns-query/response-only"})),
    "http_on_sip_port.pcap": Intended("an HTTP request on port 5060, which tshark dissects as SIP",
                                      ours=frozenset({(3, "http-host", "45.58.148.2")})),
    "ndpi_match_string_subprotocol__error.pcapng": Intended(
        "a request after a segment the capture lost: tshark stops dissecting the stream, we read it",
        ours=frozenset({(10, "http-host", "10.68.137.118")})),
    "rdp.pcap": Intended("the TLS ClientHello that follows RDP's X.224 negotiation, which tshark leaves undissected",
                         ours=frozenset({(7, "tls-sni", "192.168.2.142")})),
    "ookla.pcap": Intended("a ClientHello on port 8080, which tshark takes for HTTP",
                           ours=frozenset({(88, "tls-sni", "spd-pub-mi-01-01.fastwebnet.it")})),
    "1kxun.pcap": Intended(
        "POST requests whose bodies the capture never completes: tshark waits for the body, we report "
        "the complete header block", ours=frozenset({(534, "http-host", "vv.video.qq.com"),
                                                     (541, "http-host", "42.120.51.152")})),
    "fuzz-2006-09-29-28586.pcap": Intended(
        "a fuzzed request whose Host value holds a NUL: tshark cuts the value there, we keep the bytes",
        theirs=frozenset({(19, "http-host", "%s"), (107, "http-host", "172.20.3.5")}), ours="http-host"),
}
#: tshark's text for names it could not read ("<Root>", "<Name too long>", "<Unknown extended label>").
TSHARK_PLACEHOLDER = re.compile(r"^<[a-z ]+>$")


def _printable(name: str) -> str:
    """Label bytes outside printable ASCII are written differently (ours ``\\xNN``, tshark
    ``\\NNN`` or U+FFFD): such names compare as one token, so a frame must still have one."""
    return name if name.isascii() and name.isprintable() and "\\" not in name else "<odd bytes>"


def ours(path: Path) -> tuple[set[Name], Counter]:
    found: set[Name] = set()
    stats: Counter = Counter()
    extractor = Extractor(
        Settings(quic_ports=QUIC_PORTS),
        lambda obs: found.add((obs.frame, obs.proto + ("/response-only" if obs.seen else ""), obs.name))
        if obs.proto in NAME_PROTOS else None,
        lambda binding: None,
        stats,
    )
    capture = CaptureFile(str(path))
    try:
        for ts, linktype, data, frame in capture:
            extractor.feed(ts, linktype, data, capture.name, frame)
    except CaptureError:
        pass  # tshark stops at the same damage; what was read before it is compared
    finally:
        capture.close()
    return found, stats


def _values(node: object, key: str) -> list[str]:
    """Every value of ``key`` anywhere under a tshark JSON node, in document order."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                out.extend(v if isinstance(v, list) else [v])
            else:
                out.extend(_values(v, key))
    elif isinstance(node, list):
        for item in node:
            out.extend(_values(item, key))
    return out


def _layers(layers: dict, name: str) -> list[dict]:
    value = layers.get(name, [])
    return value if isinstance(value, list) else [value]


def theirs(path: Path) -> set[Name]:
    result = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "json", "--no-duplicate-keys",
         "-J", "frame udp tcp dns tls quic http",
         "-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE",
         "-o", "tls.desegment_ssl_records:TRUE", "-o", "http.desegment_body:FALSE",
         "-Y", "dns || tls.handshake.type == 1 || http.request"],
        capture_output=True, timeout=TSHARK_TIMEOUT, check=False,
    )
    try:
        packets = json.loads(result.stdout or b"[]")
    except json.JSONDecodeError:
        # tshark writes invalid JSON for a few damaged captures (unescaped bytes); fall back to nothing.
        packets = []
    found: set[Name] = set()
    for packet in packets:
        layers = packet["_source"]["layers"]
        frame = int(layers["frame"]["frame.number"])
        ports = {int(p) for p in _values(layers.get("udp", {}), "udp.srcport") + _values(layers.get("udp", {}), "udp.dstport")
                 + _values(layers.get("tcp", {}), "tcp.srcport") + _values(layers.get("tcp", {}), "tcp.dstport")}
        if 53 in ports:
            for dns in _layers(layers, "dns"):
                if not isinstance(dns, dict):
                    continue
                response = _values(dns.get("dns.flags_tree", {}), "dns.flags.response")
                if response == ["0"]:
                    found |= {(frame, "dns-query", n.lower()) for n in _values(dns.get("Queries", {}), "dns.qry.name")}
                elif response == ["1"]:
                    # tshark saw no query for it, and it is not a repeat of an answer already seen.
                    if not _values(dns, "dns.response_to") and _values(dns, "dns.retransmission") != ["1"]:
                        found |= {(frame, "dns-query/response-only", n.lower())
                                  for n in _values(dns.get("Queries", {}), "dns.qry.name")}
                    answers = dns.get("Answers", {})
                    for key in ("dns.resp.name", "dns.cname", "dns.dname", "dns.svcb.targetname"):
                        found |= {(frame, "dns-answer", n.lower()) for n in _values(answers, key)
                                  if n not in ("<Root>", "")}
        for tls in _layers(layers, "tls"):
            found |= {(frame, "tls-sni", n.lower()) for n in _values(tls, "tls.handshake.extensions_server_name")}
        for quic in _layers(layers, "quic"):
            found |= {(frame, "quic-sni", n.lower()) for n in _values(quic, "tls.handshake.extensions_server_name")}
        for http in _layers(layers, "http"):
            for host in _values(http, "http.host"):
                found.add((frame, "http-host", _strip_port(host.lower())))
    return found


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def compare(path: Path) -> None:
    mine = {(f, p, _printable(n)) for f, p, n in ours(path)[0]}
    wireshark = {(f, p, _printable(n)) for f, p, n in theirs(path) if not TSHARK_PLACEHOLDER.match(n)}
    intended = INTENDED.get(path.name, Intended(""))
    if intended.other_frames:
        mine = {(0, p, n) for _, p, n in mine}
        wireshark = {(0, p, n) for _, p, n in wireshark}
    only_theirs = _unexplained(wireshark - mine, intended.theirs)
    only_ours = _unexplained(mine - wireshark, intended.ours)
    assert not only_theirs and not only_ours, (
        f"{path.name}: only tshark: {sorted(only_theirs)[:20]}; only ours: {sorted(only_ours)[:20]}"
    )


def _unexplained(names: set[Name], allowed: frozenset | str) -> set[Name]:
    if isinstance(allowed, str):
        return {n for n in names if n[1] != allowed}
    return {n for n in names if n not in allowed and n[1] not in allowed}  # a set may hold protocols too


def test_every_intended_difference_names_a_capture_that_exists():
    known = {p.name for p in FIXTURES + CORPUS_FILES}
    if not CORPUS_FILES:
        pytest.skip(f"{CORPUS} is absent: most intended differences are about its captures")
    assert set(INTENDED) <= known


needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (make test installs it as root)")


@needs_tshark
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_names_equal_tshark(path):
    compare(path)


@needs_tshark
@pytest.mark.corpus
@pytest.mark.parametrize(
    "path",
    CORPUS_FILES or [pytest.param(None, marks=pytest.mark.skip(reason=f"{CORPUS} is absent: the shared corpus is not part of a user's clone"))],
    ids=lambda p: f"{p.parent.name}/{p.name}" if p else "corpus",
)
def test_corpus_names_equal_tshark(path):
    compare(path)
